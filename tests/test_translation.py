"""Translation between the APIs, end to end: the official SDKs against a gateway whose
only upstream speaks another API (the stand-in serving that API alone), streamed or not,
with tools, images and errors; and the gateway's own marks (``X-Session-Translated``,
``/v1/models``, the turn's event)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import anthropic
import httpx
import openai
import pytest

from gateway_helpers import Running, settings_for
from llm_sessions.server import Gateway
from llm_sessions.server.run import running
from llm_sessions.server.standin import StandIn

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
TOOL = {
    "name": "read_file",
    "description": "Read a file",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
}


@contextmanager
def gateway_over(apis: tuple[str, ...], **overrides: Any) -> Iterator[Running]:
    """A gateway whose one upstream (the stand-in) serves `apis` only."""
    standin = StandIn()
    with ExitStack() as stack:
        upstream_url = stack.enter_context(running(standin.app(apis)))
        gateway = Gateway(settings_for(upstream_url, upstream={"apis": apis}, **overrides))
        url = stack.enter_context(running(gateway.app()))
        yield Running(url, standin, gateway)


@pytest.fixture
def chat_only() -> Iterator[Running]:
    with gateway_over(("chat",)) as gw:
        yield gw


@pytest.fixture
def messages_only() -> Iterator[Running]:
    with gateway_over(("messages",)) as gw:
        yield gw


def claude(gw: Running) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0)


# -- the Anthropic SDK on a Chat Completions upstream ----------------------------------------


def test_a_messages_request_is_answered_by_a_chat_upstream(chat_only: Running) -> None:
    client = claude(chat_only)
    try:
        raw = client.messages.with_raw_response.create(
            model="auto", max_tokens=64, system="Be brief.",
            messages=[{"role": "user", "content": "Say hello"}],
            extra_headers={"x-session-id": "plain"},
        )  # fmt: skip
        message = raw.parse()
    finally:
        client.close()
    assert raw.headers["x-session-translated"] == "messages->chat"
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from the stand-in."
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 4
    sent = chat_only.standin.received[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_completion_tokens"] == 64 and "max_tokens" not in sent
    session = chat_only.session("plain")
    assert session is not None and float(session["session_cost_usd"]) > 0


def test_a_streamed_messages_request_on_a_chat_upstream(chat_only: Running) -> None:
    client = claude(chat_only)
    try:
        with client.messages.stream(
            model="auto", max_tokens=64, messages=[{"role": "user", "content": "Say hello"}],
            extra_headers={"x-session-id": "streamed"},
        ) as stream:  # fmt: skip
            texts = list(stream.text_stream)
            message = stream.get_final_message()
    finally:
        client.close()
    assert "".join(texts).strip() == "Hello from the stand-in."
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 4
    assert message.usage.input_tokens > 0
    with chat_only.http() as http:
        (event,) = http.get("/v1/sessions/streamed/events").json()["events"]
    assert event["translated"] == "messages->chat" and event["cost_micros"] > 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_loop_of_the_anthropic_sdk_on_a_chat_upstream(
    chat_only: Running, stream: bool
) -> None:
    """The model calls the tool (its arguments streamed as partial JSON), the result goes
    back as a ``tool`` message with the same id, and the model answers."""
    client = claude(chat_only)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Read t"}]
    headers = {"x-session-id": f"tools-{stream}"}
    try:
        for _ in range(2):
            if stream:
                with client.messages.stream(
                    model="auto", max_tokens=64, tools=[TOOL], messages=messages,
                    extra_headers=headers,
                ) as s:  # fmt: skip
                    message = s.get_final_message()
            else:
                message = client.messages.create(
                    model="auto", max_tokens=64, tools=[TOOL], messages=messages,
                    extra_headers=headers,
                )  # fmt: skip
            if message.stop_reason != "tool_use":
                break
            (call,) = [b for b in message.content if b.type == "tool_use"]
            assert call.name == "read_file" and call.input == {"path": "t"}
            messages += [
                {"role": "assistant", "content": [b.model_dump() for b in message.content]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "file contents"}
                ]},
            ]  # fmt: skip
    finally:
        client.close()
    assert message.stop_reason == "end_turn"
    first, second = chat_only.standin.received[-2:]
    assert first["tools"][0]["function"]["name"] == "read_file"
    assert first["tools"][0]["function"]["parameters"] == TOOL["input_schema"]
    assistant, tool = second["messages"][-2:]
    assert assistant["tool_calls"][0]["id"] == tool["tool_call_id"] == call.id
    assert tool == {"role": "tool", "tool_call_id": call.id, "content": "file contents"}


def test_images_and_tool_results_with_images_reach_a_chat_upstream(chat_only: Running) -> None:
    """An image (base64 and by URL) becomes an image_url part; one in a tool result, which
    a tool message can't hold, follows in a user message: nothing is lost."""
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}}  # fmt: skip
    by_url = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image, by_url]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "a"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                {"type": "text", "text": "a screenshot"}, image]}]},
    ]  # fmt: skip
    client = claude(chat_only)
    try:
        client.messages.create(model="auto", max_tokens=64, messages=messages)  # type: ignore[arg-type]
    finally:
        client.close()
    sent = chat_only.standin.received[-1]["messages"]
    assert sent[0]["content"][1] == {"type": "image_url",
                                     "image_url": {"url": f"data:image/png;base64,{PNG}"}}  # fmt: skip
    assert sent[0]["content"][2]["image_url"]["url"] == "https://example.com/a.png"
    assert sent[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "a screenshot"}
    assert sent[3]["role"] == "user" and sent[3]["content"][0]["type"] == "image_url"


def test_what_cant_be_translated_is_a_400_naming_the_field(chat_only: Running) -> None:
    client = claude(chat_only)
    try:
        with pytest.raises(anthropic.BadRequestError) as caught:
            client.messages.create(
                model="auto", max_tokens=64, messages=[{"role": "user", "content": "news?"}],
                tools=[{"type": "web_search_20250305", "name": "web_search"}],  # type: ignore[list-item]
            )  # fmt: skip
    finally:
        client.close()
    assert "tools[0]" in str(caught.value) and "chat" in str(caught.value)
    assert chat_only.standin.received == []


def test_an_upstream_error_comes_back_in_the_clients_shape(chat_only: Running) -> None:
    chat_only.standin.set("openai/s1", status=400, error_type="invalid_request_error",
                          error_message="bad thing")  # fmt: skip
    chat_only.standin.set("groq/s2", status=400, error_type="invalid_request_error",
                          error_message="bad thing")  # fmt: skip
    client = claude(chat_only)
    try:
        with pytest.raises(anthropic.BadRequestError) as caught:
            client.messages.create(model="auto", max_tokens=64,
                                   messages=[{"role": "user", "content": "hi"}])  # fmt: skip
    finally:
        client.close()
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert "bad thing" in body["error"]["message"]


# -- the OpenAI SDK on a Messages upstream --------------------------------------------------


def test_a_chat_request_is_answered_by_a_messages_upstream(messages_only: Running) -> None:
    client = messages_only.client()
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Say hello"}],
        extra_headers={"x-session-id": "chat"},
    )  # fmt: skip
    completion = raw.parse()
    assert raw.headers["x-session-translated"] == "chat->messages"
    assert completion.choices[0].message.content == "Hello from the stand-in."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    sent = messages_only.standin.received[-1]
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["max_tokens"] == messages_only.gateway.settings.default_max_tokens
    assert messages_only.standin.headers[-1]["anthropic-version"] == "2023-06-01"


def test_chat_completions_stream_of_the_openai_sdk_on_a_messages_upstream(
    messages_only: Running,
) -> None:
    client = messages_only.client()
    with client.chat.completions.stream(
        model="auto", messages=[{"role": "user", "content": "Say hello"}],
        stream_options={"include_usage": True},
    ) as stream:  # fmt: skip
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Hello from the stand-in."
    assert final.usage is not None and final.usage.completion_tokens == 4


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_loop_of_the_openai_sdk_on_a_messages_upstream(
    messages_only: Running, stream: bool
) -> None:
    client = messages_only.client()
    tools: Any = [{"type": "function", "function": {
        "name": "read_file", "parameters": TOOL["input_schema"]}}]  # fmt: skip
    messages: list[Any] = [{"role": "user", "content": "Read t"}]
    for _ in range(2):
        if stream:
            with client.chat.completions.stream(model="auto", messages=messages,
                                                tools=tools) as s:  # fmt: skip
                for _event in s:
                    pass
                completion = s.get_final_completion()
        else:
            completion = client.chat.completions.create(
                model="auto", messages=messages, tools=tools
            )
        choice = completion.choices[0]
        if choice.finish_reason != "tool_calls":
            break
        (call,) = choice.message.tool_calls or []
        assert call.function.name == "read_file"
        assert call.function.arguments.replace(" ", "") == '{"path":"t"}'
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "file contents"},
        ]
    assert choice.finish_reason == "stop"
    sent = messages_only.standin.received[-1]["messages"]
    assert sent[-2]["content"][0]["type"] == "tool_use"
    assert sent[-1]["content"][0] == {
        "type": "tool_result", "tool_use_id": sent[-2]["content"][0]["id"],
        "content": [{"type": "text", "text": "file contents"}],
    }  # fmt: skip


def test_n_above_one_cant_go_to_a_messages_upstream(messages_only: Running) -> None:
    client = messages_only.client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="auto", n=2, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.body is not None
    assert "'n'" in str(caught.value) and "messages" in str(caught.value)


def test_models_say_which_apis_are_translated(chat_only: Running) -> None:
    with httpx.Client(base_url=chat_only.url, timeout=30) as http:
        model = http.get("/v1/models/openai/s1", headers={"authorization": "Bearer x"}).json()
    assert model["apis"] == ["chat", "messages", "responses"]
    assert model["translated"] == {"messages": "chat", "responses": "chat"}


# -- every pair, both ways, streamed or not: a tool loop through the official SDKs ----------

PAIRS = [(a, b) for a in ("chat", "messages", "responses")
         for b in ("chat", "messages", "responses") if a != b]  # fmt: skip
SCHEMA = TOOL["input_schema"]


def _chat_turn(gw: Running, stream: bool, history: list[Any], headers: dict[str, str]) -> Any:
    """One Chat Completions turn: (the tool call or None, the text, the new history)."""
    client = gw.client()
    tools: Any = [{"type": "function", "function": {"name": "read_file", "parameters": SCHEMA}}]
    if stream:
        with client.chat.completions.stream(model="auto", messages=history, tools=tools,
                                            extra_headers=headers) as s:  # fmt: skip
            for _ in s:
                pass
            completion = s.get_final_completion()
    else:
        completion = client.chat.completions.create(model="auto", messages=history,
                                                    tools=tools, extra_headers=headers)  # fmt: skip
    message = completion.choices[0].message
    if message.tool_calls:
        call = message.tool_calls[0]
        history = [*history, {"role": "assistant", "content": None,
                              "tool_calls": [call.model_dump()]},
                   {"role": "tool", "tool_call_id": call.id, "content": "file contents"}]  # fmt: skip
        return (call.function.name, call.function.arguments), None, history
    return None, message.content, history


def _messages_turn(gw: Running, stream: bool, history: list[Any], headers: dict[str, str]) -> Any:
    client = claude(gw)
    try:
        if stream:
            with client.messages.stream(model="auto", max_tokens=64, tools=[TOOL],
                                        messages=history, extra_headers=headers) as s:  # fmt: skip
                message = s.get_final_message()
        else:
            message = client.messages.create(model="auto", max_tokens=64, tools=[TOOL],
                                             messages=history, extra_headers=headers)  # fmt: skip
    finally:
        client.close()
    calls = [b for b in message.content if b.type == "tool_use"]
    if calls:
        call = calls[0]
        history = [*history, {"role": "assistant", "content": [b.model_dump() for b in message.content]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                 "content": "file contents"}]}]  # fmt: skip
        return (call.name, json.dumps(call.input)), None, history
    return None, "".join(b.text for b in message.content if b.type == "text"), history


def _responses_turn(gw: Running, stream: bool, history: list[Any], headers: dict[str, str]) -> Any:
    client = gw.client()
    tools: Any = [{"type": "function", "name": "read_file", "parameters": SCHEMA, "strict": False}]
    kw: Any = {"model": "auto", "input": history, "tools": tools, "store": False,
               "extra_headers": headers}  # fmt: skip
    if stream:
        with client.responses.stream(**kw) as s:
            for _ in s:
                pass
            response = s.get_final_response()
    else:
        response = client.responses.create(**kw)
    calls = [item for item in response.output if item.type == "function_call"]
    if calls:
        call = calls[0]
        history = [*history, {"type": "function_call", "call_id": call.call_id,
                              "name": call.name, "arguments": call.arguments},
                   {"type": "function_call_output", "call_id": call.call_id,
                    "output": "file contents"}]  # fmt: skip
        return (call.name, call.arguments), None, history
    return None, response.output_text, history


TURNS = {"chat": _chat_turn, "messages": _messages_turn, "responses": _responses_turn}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(("client_api", "upstream_api"), PAIRS)
def test_every_pair_carries_a_tool_loop(client_api: str, upstream_api: str, stream: bool) -> None:
    """The client's SDK, its API, an upstream of another: the model calls the tool, the
    result goes back, the model answers; one session, translated both times, billed."""
    session = f"loop-{client_api}-{upstream_api}-{stream}"
    headers = {"x-session-id": session}
    history: list[Any] = [{"role": "user", "content": "Read t"}]
    with gateway_over((upstream_api,)) as gw:
        call, text, history = TURNS[client_api](gw, stream, history, headers)
        assert call is not None and call[0] == "read_file"
        assert json.loads(call[1]) == {"path": "t"}
        call, text, history = TURNS[client_api](gw, stream, history, headers)
        assert call is None and text.strip() == "Hello from the stand-in."
        with gw.http() as http:
            events = http.get(f"/v1/sessions/{session}/events").json()["events"]
        sent = gw.standin.received
    assert [e["translated"] for e in events] == [f"{client_api}->{upstream_api}"] * 2
    assert all(e["cost_micros"] > 0 and e["outcome"] == "served" for e in events)
    assert len(sent) == 2  # one upstream request a turn, in the upstream's own API


def test_the_agents_sdks_default_model_runs_on_a_chat_upstream() -> None:
    """The OpenAI Agents SDK (Responses, its default model) with a function tool, on an
    upstream that speaks Chat Completions only: the tool runs, the agent finishes, one
    session billed at each turn's usage."""
    import asyncio

    import agents

    agents.set_tracing_disabled(True)
    read: list[str] = []

    @agents.function_tool
    def read_file(path: str) -> str:
        """Read a file."""
        read.append(path)
        return "the notes say hello"

    with gateway_over(("chat",)) as gw:

        async def run() -> Any:
            async with openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="sk-agent",
                                          max_retries=0) as client:  # fmt: skip
                model = agents.OpenAIResponsesModel(model="auto", openai_client=client)
                agent = agents.Agent(name="reader", instructions="Read files.", model=model,
                                     tools=[read_file])  # fmt: skip
                return await agents.Runner.run(agent, "What is in notes.txt?")

        result = asyncio.run(run())
        assert result.final_output.strip() == "Hello from the stand-in."
        assert read == ["t"]
        first, second = gw.standin.received
        assert first["messages"][0] == {"role": "system", "content": "Read files."}
        assert second["messages"][-1]["role"] == "tool"
        with gw.http("sk-agent") as http:
            (session,) = http.get("/v1/sessions").json()["sessions"]
        assert session["request_count"] == 2 and float(session["session_cost_usd"]) > 0


def test_a_request_no_model_can_take_changes_nothing(chat_only: Running) -> None:
    """Refused before the session is touched: no session, no strike, nothing upstream."""
    client = claude(chat_only)
    try:
        for _ in range(2):
            with pytest.raises(anthropic.BadRequestError):
                client.messages.create(
                    model="auto", max_tokens=64, messages=[{"role": "user", "content": "x"}],
                    tools=[{"type": "web_search_20250305", "name": "web_search"}],  # type: ignore[list-item]
                    extra_headers={"x-session-id": "refused"},
                )  # fmt: skip
    finally:
        client.close()
    assert chat_only.session("refused") is None and chat_only.standin.received == []


def test_tools_an_upstream_cant_run_may_be_left_out_and_said_so() -> None:
    """``[translation] unsupported_tools = "drop"``: OpenAI's hosted tools (Codex offers
    web_search) are left out, named in ``X-Session-Dropped-Tools`` and the turn's event."""
    with gateway_over(("chat",), translation_unsupported_tools="drop") as gw:
        client = gw.client()
        raw = client.responses.with_raw_response.create(
            model="auto", input="hi", store=False,
            tools=[{"type": "web_search"},
                   {"type": "function", "name": "read_file", "parameters": SCHEMA}],
            extra_headers={"x-session-id": "dropped"},
        )  # fmt: skip
        assert raw.headers["x-session-dropped-tools"] == "web_search"
        sent = gw.standin.received[-1]
        assert [t["function"]["name"] for t in sent["tools"]] == ["read_file"]
        with gw.http() as http:
            (event,) = http.get("/v1/sessions/dropped/events").json()["events"]
        assert event["dropped_tools"] == "web_search"


def test_reasoning_goes_only_to_the_models_said_to_take_it() -> None:
    """Messages' thinking (asked for with the Anthropic SDK) becomes reasoning_effort for
    a model of ``[translation] reasoning_models``, and is left out for any other (a model
    without reasoning would refuse the request)."""
    for reasoning, expected in ((frozenset({"openai/s1"}), "medium"), (frozenset(), None)):
        with gateway_over(("chat",), reasoning_models=reasoning) as gw:
            client = claude(gw)
            try:
                message = client.messages.create(
                    model="auto", max_tokens=8192, messages=[{"role": "user", "content": "x"}],
                    thinking={"type": "enabled", "budget_tokens": 4096},
                )  # fmt: skip
            finally:
                client.close()
            assert message.content[0].type == "text"
            assert gw.standin.received[-1].get("reasoning_effort") == expected


ACROSS = """
[upstream]
base_url = "{openai}/v1"
apis = ["chat"]

[upstreams.anthropic]
base_url = "{anthropic}/v1"
auth = "x-api-key"
apis = ["messages"]

[models."anthropic/sonnet"]
upstream = "anthropic"

[routing.tiers.SIMPLE]
primary = "anthropic/sonnet"
fallback = ["openai/gpt"]

[pricing."anthropic/sonnet"]
input_per_mtok = 3
output_per_mtok = 15

[pricing."openai/gpt"]
input_per_mtok = 1
output_per_mtok = 4

[budget]
max_session_cost_usd = 10.0
"""


def test_a_claude_session_falls_back_to_an_openai_model_mid_conversation(
    tmp_path: Any,
) -> None:
    """Streamed, with the Anthropic SDK: the first turn on the Anthropic model natively,
    the second (Anthropic overloaded) on the OpenAI one, translated; one session, pinned
    to the fallback, billed each turn at its model's price from its upstream's usage."""
    from gateway_helpers import gateway_over_standins

    with gateway_over_standins(tmp_path, ACROSS, ("openai", "anthropic")) as (url, ups, _):
        client = anthropic.Anthropic(base_url=url, api_key="sk-test", max_retries=0)
        history: list[Any] = [{"role": "user", "content": "hello"}]
        served, usages = [], []
        try:
            for turn in range(2):
                if turn == 1:
                    ups["anthropic"].set("anthropic/sonnet", status=529)
                with client.messages.with_streaming_response.create(
                    model="auto", max_tokens=64, messages=history, stream=True,
                    extra_headers={"x-session-id": "across"},
                ) as raw:  # fmt: skip
                    served.append((raw.headers["x-session-served-model"],
                                   raw.headers.get("x-session-translated")))  # fmt: skip
                    raw.read()
                usages.append(ups["openai" if turn else "anthropic"].received[-1])
                history += [{"role": "assistant", "content": "Hello from the stand-in."},
                            {"role": "user", "content": "and again"}]  # fmt: skip
            session = httpx.get(f"{url}/v1/sessions/across", timeout=10,
                                headers={"x-api-key": "sk-test"}).json()  # fmt: skip
            events = httpx.get(f"{url}/v1/sessions/across/events", timeout=10,
                               headers={"x-api-key": "sk-test"}).json()["events"]  # fmt: skip
        finally:
            client.close()
    assert served == [("anthropic/sonnet", None), ("openai/gpt", "messages->chat")]
    assert session["model"] == "openai/gpt" and session["request_count"] == 2
    assert [e["reason"] for e in events] == ["new", "fallback"]
    assert events[1]["translated"] == "messages->chat"
    # each turn at its own price: Anthropic's usage (input 3, output 15 per million)...
    first = events[0]["input_tokens"] * 3 + events[0]["output_tokens"] * 15
    # ... then the chat upstream's (1 and 4), as the upstream reported it
    second = events[1]["input_tokens"] * 1 + events[1]["output_tokens"] * 4
    assert [e["cost_micros"] for e in events] == [-(-first // 1), -(-second // 1)]
    assert session["session_cost_micros"] == first + second
    assert usages[1]["messages"][-1] == {"role": "user", "content": "and again"}
