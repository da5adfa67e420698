"""``POST /v1/responses`` end to end, with the official openai SDK against the gateway and
a stand-in Responses upstream: plain and streamed answers, a tool loop chained by
``previous_response_id``, the stored-response endpoints, tenancy, budgets and cost."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway_helpers import PRICES, gateway_over_standins, gateway_with_standin, settings_for
from llm_sessions import Pricing
from llm_sessions.server import Gateway
from llm_sessions.server.run import running
from llm_sessions.server.standin import StandIn

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    }
]


def create(client: openai.OpenAI, **kw: Any) -> tuple[Any, dict[str, str]]:
    """``responses.create`` with the gateway's headers."""
    raw = client.responses.with_raw_response.create(model="auto", **kw)
    return raw.parse(), dict(raw.headers)


def test_a_plain_response_is_routed_pinned_and_billed() -> None:
    with gateway_with_standin() as gw:
        client = gw.client()
        first, headers = create(client, input="Say hello", instructions="Be brief.")
        assert first.output_text == "Hello from the stand-in."
        sent = gw.standin.received[-1]
        assert sent["model"] == headers["x-session-model"] != "auto"  # only model rewritten
        assert {k: v for k, v in sent.items() if k != "model"} == {
            "input": "Say hello",
            "instructions": "Be brief.",
        }
        assert headers["x-session-reason"] == "new"
        session = gw.session(headers["x-session-id"])
        assert session is not None and session["request_count"] == 1
        usage = first.usage
        assert usage is not None
        # 1 USD / Mtok in, 2 out: what the upstream reported, priced
        expected = usage.input_tokens * 1 + usage.output_tokens * 2
        assert session["session_cost_micros"] == expected
        _, headers2 = create(client, input="Say hello", instructions="Be brief.")
        assert headers2["x-session-id"] == headers["x-session-id"]
        assert headers2["x-session-reason"] == "pinned"


def test_a_streamed_response_relays_every_event_and_bills_before_it_ends() -> None:
    with gateway_with_standin() as gw:
        client = gw.client()
        with client.responses.with_streaming_response.create(
            model="auto", input="Stream to me", stream=True
        ) as raw:
            session_id = raw.headers["x-session-id"]
            kinds, costs_at_end = [], []
            for event in raw.parse():
                kinds.append(event.type)
                if event.type == "response.completed":  # held until the cost was recorded
                    costs_at_end.append(gw.session(session_id)["session_cost_micros"])  # type: ignore[index]
                    final = event.response
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert kinds.count("response.output_text.delta") == 4  # the stand-in's words
        assert final.usage is not None
        assert costs_at_end == [final.usage.input_tokens + 2 * final.usage.output_tokens]
        # the streamed response was remembered: it can be retrieved and continued
        assert client.responses.retrieve(final.id).id == final.id
        _, headers = create(client, input="and then?", previous_response_id=final.id)
        assert headers["x-session-id"] == session_id
        assert headers["x-session-source"] == "previous_response_id"


def test_a_tool_loop_chained_by_previous_response_id_is_one_session_that_escalates() -> None:
    with gateway_with_standin() as gw:
        client = gw.client()
        first, headers = create(client, input="What is in notes.txt?", tools=TOOLS)
        call = first.output[0]
        assert call.type == "function_call" and json.loads(call.arguments) == {"path": "t"}
        session_id, ids = headers["x-session-id"], [first.id]
        turns = []
        for _ in range(3):  # the same tool result, three times in a row
            output = {"type": "function_call_output", "call_id": call.call_id, "output": "x"}
            answer, h = create(client, input=[output], tools=TOOLS, previous_response_id=ids[-1])
            turns.append(h)
            ids.append(answer.id)
        assert {h["x-session-id"] for h in turns} == {session_id}
        assert {h["x-session-source"] for h in turns} == {"previous_response_id"}
        assert [h["x-session-reason"] for h in turns] == ["pinned", "pinned", "escalated"]
        assert [h["x-session-strikes"] for h in turns] == ["0", "1", "2"]
        assert turns[2]["x-session-tier"] != headers["x-session-tier"]
        assert gw.standin.received[-1]["model"] == turns[2]["x-session-model"]
        # every turn forwarded its previous_response_id as it came
        assert [r["previous_response_id"] for r in gw.standin.received[1:]] == ids[:-1]
        session = gw.session(session_id)
        assert session is not None and session["request_count"] == 4
        assert session["session_cost_micros"] > 0


def test_stored_responses_are_retrieved_from_the_upstream_for_their_tenant_only() -> None:
    with gateway_with_standin() as gw:
        mine, theirs = gw.client("sk-mine"), gw.client("sk-theirs")
        made, _ = create(mine, input="Remember me")
        assert mine.responses.retrieve(made.id).output_text == made.output_text
        items = mine.responses.input_items.list(made.id)
        assert [i.type for i in items.data] == ["message"]
        with pytest.raises(openai.NotFoundError):
            theirs.responses.retrieve(made.id)
        with pytest.raises(openai.NotFoundError):
            theirs.responses.delete(made.id)
        with pytest.raises(openai.NotFoundError):
            theirs.responses.input_items.list(made.id)
        with pytest.raises(openai.NotFoundError):
            theirs.responses.cancel(made.id)
        assert made.id in gw.standin.stored  # nothing of theirs reached the upstream
        # their previous_response_id of my response: the same 404, and nothing forwarded
        calls = len(gw.standin.received)
        with pytest.raises(openai.NotFoundError) as refused:
            create(theirs, input="Remember me", previous_response_id=made.id)
        assert refused.value.code == "response_not_found"
        assert len(gw.standin.received) == calls
        assert mine.responses.cancel(made.id).status == "cancelled"
        mine.responses.delete(made.id)
        assert made.id not in gw.standin.stored
        with pytest.raises(openai.NotFoundError):
            mine.responses.retrieve(made.id)  # the upstream's 404, passed on
        with pytest.raises(openai.NotFoundError) as info:
            mine.responses.retrieve("resp_never_served")
        assert "resp_never_served" in str(info.value)


def test_a_response_never_served_here_is_refused_when_configured() -> None:
    with gateway_with_standin(unknown_state="refuse") as gw:
        client = gw.client()
        with pytest.raises(openai.NotFoundError) as refused:
            client.responses.create(model="auto", input="hi", previous_response_id="resp_nope")
        assert refused.value.code == "response_not_found"
        assert gw.standin.received == []
        made = client.responses.create(model="auto", input="hi")
        assert client.responses.create(model="auto", input="more", previous_response_id=made.id)


def test_an_unknown_previous_response_id_is_forwarded_as_is() -> None:
    with gateway_with_standin() as gw:
        client = gw.client()
        with pytest.raises(openai.NotFoundError):  # the upstream's answer
            client.responses.create(model="auto", input="hi", previous_response_id="resp_nope")
        assert gw.standin.received[-1]["previous_response_id"] == "resp_nope"
        with gw.http() as http:
            body = {"model": "auto", "input": "hi", "previous_response_id": "resp_nope"}
            reply = http.post("/v1/responses", json=body)
            assert reply.status_code == 404
            assert reply.headers["x-session-source"] == "derived"
            # a lone tool result: one new session per unknown id, not none
            output = [{"type": "function_call_output", "call_id": "c", "output": "x"}]
            body = {"model": "auto", "input": output, "previous_response_id": "resp_gone"}
            a, b = http.post("/v1/responses", json=body), http.post("/v1/responses", json=body)
            assert a.headers["x-session-id"] == b.headers["x-session-id"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": 5}, "input"),
        ({}, "input"),
        ({"input": [5]}, "input[0]"),
        ({"input": [{"role": 3, "content": "x"}]}, "input[0].role"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x", "instructions": 7}, "instructions"),
        ({"input": "x", "tools": {}}, "tools"),
        ({"input": "x", "previous_response_id": 7}, "previous_response_id"),
        ({"input": "x", "conversation": {"id": []}}, "conversation.id"),
        ({"input": "x", "stream": "yes"}, "stream"),
    ],
)
def test_bad_requests_are_400_with_the_field_and_change_nothing(
    body: dict[str, Any], param: str
) -> None:
    with gateway_with_standin() as gw, gw.http() as http:
        reply = http.post("/v1/responses", json={"model": "auto", **body})
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error"
        assert gw.standin.received == []
        assert http.get("/v1/sessions").json()["sessions"] == []


def test_cache_reads_are_priced_as_cache_reads() -> None:
    prices = {m: Pricing(1, 2, cache_read_per_mtok=0.1) for m in PRICES}
    with gateway_with_standin(pricing=prices) as gw:
        gw.standin.default.cached_tokens = 1000
        answer, headers = create(gw.client(), input="Use the cache")
        usage = answer.usage
        assert usage is not None and usage.input_tokens_details.cached_tokens == 1000
        uncached = usage.input_tokens - 1000
        session = gw.session(headers["x-session-id"])
        assert session is not None
        assert session["session_cost_micros"] == uncached + 2 * usage.output_tokens + 100
        assert headers["x-session-cache-read-tokens"] == "1000"


def test_the_budget_caps_responses_sessions() -> None:
    with gateway_with_standin(max_session_cost_usd=0.05, fit_output=False) as gw:
        client = gw.client()
        with pytest.raises(openai.RateLimitError) as info:
            client.responses.create(model="auto", input="x", max_output_tokens=100_000)
        assert info.value.code == "budget_exceeded"
        assert gw.standin.received == []
        answer, headers = create(client, input="x", max_output_tokens=100)
        assert headers["x-session-reason"] == "new" and answer.output_text


# -- chains across two upstreams ------------------------------------------------------------

TWO_UPSTREAMS = """
[upstream]
base_url = "{a}/v1"
api_key_env = "TEST_A_KEY"
apis = ["chat", "responses"]

[upstreams.b]
base_url = "{b}/v1"
api_key_env = "TEST_B_KEY"
apis = ["chat", "responses"]

[models."b/medium"]
upstream = "b"
[models."b/complex"]
upstream = "b"
[models."b/reasoning"]
upstream = "b"
name = "reasoning-on-b"

[routing.tiers.MEDIUM]
primary = "a/medium"
fallback = ["b/medium"]

[routing.tiers.COMPLEX]  # a request that offers tools
primary = "a/complex"
fallback = ["b/complex"]

[routing.tiers.REASONING]
primary = "b/reasoning"
fallback = {reasoning_fallback}
"""


@contextmanager
def two_upstreams(tmp_path: Path, reasoning_fallback: list[str]) -> Iterator[tuple[Any, ...]]:
    fallback = json.dumps(reasoning_fallback)
    with gateway_over_standins(
        tmp_path, TWO_UPSTREAMS, ("a", "b"), reasoning_fallback=fallback
    ) as (url, standins, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test", max_retries=0)
        try:
            yield client, standins["a"], standins["b"]
        finally:
            client.close()


def loop(client: openai.OpenAI, turns: int) -> list[dict[str, str]]:
    """A tool loop chained by previous_response_id: a question, then the same tool result
    `turns` times. The headers of every request."""
    first, headers = create(client, input="What is in notes.txt?", tools=TOOLS)
    seen, previous = [headers], first.id
    for _ in range(turns):
        output = {"type": "function_call_output", "call_id": "call_1", "output": "x"}
        answer, h = create(client, input=[output], tools=TOOLS, previous_response_id=previous)
        seen.append(h)
        previous = answer.id
    return seen


def test_a_chain_escalates_to_its_upstreams_model_of_the_next_tier(tmp_path: Path) -> None:
    with two_upstreams(tmp_path, ["a/reasoning"]) as (client, _, b):
        seen = loop(client, 3)
        assert [h["x-session-model"] for h in seen] == ["a/complex"] * 3 + ["a/reasoning"]
        assert seen[3]["x-session-reason"] == "escalated"
        assert b.received == []  # b/reasoning, REASONING's primary, lives elsewhere
        # outside a chain the same escalation goes to b
        free = client.with_options(default_headers={"x-session-id": "free"})
        loose = [create(free, input="What is in notes.txt?", tools=TOOLS)[1] for _ in range(3)]
        assert loose[2]["x-session-model"] == "b/reasoning"
        assert b.received[-1]["model"] == "reasoning-on-b"


def test_a_chain_keeps_its_pin_when_the_next_tier_has_no_model_on_its_upstream(
    tmp_path: Path,
) -> None:
    with two_upstreams(tmp_path, []) as (client, a, b):
        seen = loop(client, 3)
        assert [h["x-session-model"] for h in seen] == ["a/complex"] * 4
        assert seen[3]["x-session-reason"] == "chain_bound"
        assert b.received == []
        last = a.received[-1]
        assert last["model"] == "a/complex" and last["previous_response_id"] in a.stored


def test_a_chain_never_falls_back_to_another_upstream(tmp_path: Path) -> None:
    with two_upstreams(tmp_path, []) as (client, a, b):
        first, _ = create(client, input="What is in notes.txt?", tools=TOOLS)
        a.set("a/complex", status=503)
        with pytest.raises(openai.APIStatusError) as info:
            create(client, input="go on", tools=TOOLS, previous_response_id=first.id)
        assert info.value.status_code == 502
        assert b.received == []  # b/complex can't continue a's response
        retrieved = client.responses.retrieve(first.id)  # from a, which made it
        assert retrieved.id == first.id and b.received == []
        _, fell_back = create(client, input="a fresh question", tools=TOOLS)  # no chain
        assert fell_back["x-session-served-model"] == "b/complex"


# -- the OpenAI Agents SDK, on its default model (the Responses API) ------------------------


def test_an_agents_sdk_tool_loop_is_one_session_charged_every_turn() -> None:
    import agents  # the OpenAI Agents SDK (a dev dependency)

    agents.set_tracing_disabled(True)
    read: list[str] = []

    @agents.function_tool
    def read_file(path: str) -> str:
        """Read a file."""
        read.append(path)
        return "the notes say hello"

    with gateway_with_standin() as gw:

        async def run() -> Any:
            async with openai.AsyncOpenAI(
                base_url=f"{gw.url}/v1", api_key="sk-agent", max_retries=0
            ) as client:
                model = agents.OpenAIResponsesModel(model="auto", openai_client=client)
                agent = agents.Agent(name="reader", instructions="Read files.", model=model,
                                     tools=[read_file])  # fmt: skip
                return await agents.Runner.run(agent, "What is in notes.txt?")

        result = asyncio.run(run())
        assert result.final_output == "Hello from the stand-in."
        assert read == ["t"]  # the stand-in's call, run by the agent
        assert len(gw.standin.received) == 2
        assert gw.standin.received[1]["input"][-1]["type"] == "function_call_output"
        with gw.http("sk-agent") as http:
            sessions = http.get("/v1/sessions").json()["sessions"]
        assert len(sessions) == 1 and sessions[0]["request_count"] == 2
        usages = [r.usage for r in result.raw_responses]
        expected = sum(u.input_tokens + 2 * u.output_tokens for u in usages)
        assert gw.session(sessions[0]["id"], "sk-agent")["session_cost_micros"] == expected  # type: ignore[index]


def test_without_an_upstream_for_the_responses_api_it_is_a_clear_400() -> None:
    """Without translation (``translate_to = []``); with it, see test_translation."""
    with gateway_with_standin(upstream={"apis": ("chat",), "translate_to": ()}) as gw:
        with pytest.raises(openai.BadRequestError) as info:
            gw.client().responses.create(model="auto", input="hi")
        assert "responses API" in info.value.message
        assert gw.standin.received == []


@pytest.mark.parametrize("kind", ["redis", "redis-cluster", "redis-sentinel"])
def test_replicas_on_redis_follow_each_others_chains(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """The link from a response to its session and upstream lives in the shared store: a
    chain started on one replica continues, and is retrieved, on another; on a Redis
    Cluster too (no script spans two slots) and behind Sentinel, with every turn's cost
    recorded."""
    redis_url = request.getfixturevalue(f"{kind.replace('-', '_')}_url")
    standin = StandIn()
    with ExitStack() as stack:
        upstream = stack.enter_context(running(standin.app()))
        urls = [
            stack.enter_context(running(Gateway(settings_for(upstream, store_url=redis_url)).app()))
            for _ in range(2)
        ]
        one, two = (openai.OpenAI(base_url=f"{u}/v1", api_key="sk-r", max_retries=0) for u in urls)
        stack.callback(one.close)
        stack.callback(two.close)
        first, headers = create(one, input="What is in notes.txt?", tools=TOOLS)
        output = {"type": "function_call_output", "call_id": "c", "output": "x"}
        _, h2 = create(two, input=[output], tools=TOOLS, previous_response_id=first.id)
        assert h2["x-session-id"] == headers["x-session-id"]
        assert h2["x-session-source"] == "previous_response_id"
        assert two.responses.retrieve(first.id).id == first.id
        other = openai.OpenAI(base_url=f"{urls[1]}/v1", api_key="sk-other", max_retries=0)
        stack.callback(other.close)
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(first.id)
        with httpx.Client(base_url=urls[0], headers={"authorization": "Bearer sk-r"}) as http:
            session = http.get(f"/v1/sessions/{headers['x-session-id']}").json()
        assert session["request_count"] == 2 and float(session["session_cost_usd"]) > 0


@pytest.mark.parametrize("api", ["responses", "messages"])
def test_a_stream_without_usage_is_billed_like_the_same_answer_unstreamed(api: str) -> None:
    """Without usage the cost is the estimate from the prompt and the generated text: the
    stream's text deltas (read only then) count as the unstreamed answer's text."""
    with gateway_with_standin() as gw, gw.http() as http:
        gw.standin.default.usage = False
        costs = []
        for stream in (False, True):
            if api == "responses":
                path, body = "/v1/responses", {"model": "auto", "input": "count me"}
            else:
                path = "/v1/messages"
                body = {"model": "auto", "max_tokens": 50,
                        "messages": [{"role": "user", "content": "count me"}]}  # fmt: skip
            headers = {"x-session-id": f"{api}-{stream}"}
            reply = http.post(path, json={**body, "stream": stream}, headers=headers)
            assert reply.status_code == 200
            costs.append(gw.session(f"{api}-{stream}")["session_cost_micros"])  # type: ignore[index]
        assert costs[0] > 0 and costs[0] == costs[1]


def test_a_retrieval_refused_for_the_operators_key_never_shows_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    leak = "Incorrect API key provided: sk-proj-****WXYZ"
    caplog.set_level(logging.WARNING, logger="llm_sessions.gateway")
    with gateway_with_standin() as gw:
        mine = gw.client("sk-mine")
        made, _ = create(mine, input="Remember me")
        gw.standin.refuse_retrieval = (401, leak)
        with gw.http("sk-mine") as http:
            reply = http.get(f"/v1/responses/{made.id}")
    assert reply.status_code == 502
    assert "sk-proj" not in reply.text
    assert leak in caplog.text


def test_background_responses_under_a_cap_are_refused() -> None:
    """Under a cap a background response's output would go unseen (it is fetched later),
    so the cap could not hold: a 400 naming `background`, and nothing changes."""
    with gateway_with_standin(max_session_cost_usd=1.0) as gw:
        client = gw.client()
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model="auto", input="hi", background=True)
        assert refused.value.param == "background"
        assert "background" in refused.value.message
        assert gw.standin.received == []
        with gw.http() as http:
            assert http.get("/v1/sessions").json()["sessions"] == []
        assert client.responses.create(model="auto", input="hi", background=False)


def test_a_background_response_is_billed_once_when_its_completion_is_seen() -> None:
    from llm_sessions import token_usage

    with gateway_with_standin() as gw:
        client = gw.client()
        raw = client.responses.with_raw_response.create(
            model="auto", input="work on it", background=True
        )
        queued, session = raw.parse(), raw.headers["x-session-id"]
        assert queued.status == "queued"
        assert float(gw.session(session)["session_cost_usd"]) == 0  # nothing generated yet
        done = client.responses.retrieve(queued.id)
        assert done.status == "completed" and done.usage is not None
        model = raw.headers["x-session-served-model"]
        expected = PRICES[model].usage_micros(token_usage(done.usage.model_dump()))
        assert expected > 0
        billed = gw.session(session)
        assert round(float(billed["session_cost_usd"]) * 1_000_000) == expected
        client.responses.retrieve(queued.id)  # seen again: billed once
        client.responses.cancel(queued.id)
        assert gw.session(session)["session_cost_usd"] == billed["session_cost_usd"]
