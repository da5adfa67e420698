"""The Anthropic Messages API through the gateway, with the official `anthropic` SDK,
against the stand-in upstream: the same sessions, budgets and billing as chat."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from gateway_helpers import Running, gateway_with_standin
from llm_sessions import Pricing

CC_SESSION = {"X-Claude-Code-Session-Id": "7d1c0a52-8f4e-4b1b-9c1e-0e4f2b7a9d10"}
TOOLS = [{"name": "run_tests", "description": "Run the test suite",
          "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}]  # fmt: skip


@pytest.fixture
def gw() -> Iterator[Running]:
    with gateway_with_standin() as running:
        yield running


KEY = "sk-ant-test"
_opened: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def client(gw: Running, **kw: Any) -> anthropic.Anthropic:
    """An SDK client of the gateway, closed after the test."""
    api = anthropic.Anthropic(base_url=gw.url, api_key=KEY, **{"max_retries": 0, **kw})
    _opened.append(api)
    return api


def cost(usage: Any) -> int:
    """What the gateway's table (1 and 2 USD per million tokens) charges for a usage."""
    return int(usage.input_tokens + usage.cache_read_input_tokens + 2 * usage.output_tokens)


def test_a_message_routes_pins_and_bills(gw: Running) -> None:
    api = client(gw)
    raw = api.messages.with_raw_response.create(
        model="auto", max_tokens=200, messages=[{"role": "user", "content": "hi"}],
        extra_headers=CC_SESSION,
    )  # fmt: skip
    message = raw.parse()
    assert message.content[0].text == "Hello from the stand-in."
    assert raw.headers["x-session-source"] == "x-claude-code-session-id"
    assert raw.headers["x-session-reason"] == "new"
    sent = gw.standin.received[-1]
    assert sent["model"] == raw.headers["x-session-model"] == "openai/s1"  # only model rewritten
    assert sent["max_tokens"] == 200
    assert gw.standin.headers[-1]["anthropic-version"]  # forwarded as the SDK sent it
    api.messages.create(model="auto", max_tokens=5, messages=[{"role": "user", "content": "b"}],
                        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"})  # fmt: skip
    assert gw.standin.headers[-1]["anthropic-beta"] == "prompt-caching-2024-07-31"
    again = api.messages.with_raw_response.create(
        model="auto", max_tokens=200, extra_headers=CC_SESSION,
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"},
                  {"role": "user", "content": "and now?"}],
    )  # fmt: skip
    assert again.headers["x-session-reason"] == "pinned"
    session = gw.session(CC_SESSION["X-Claude-Code-Session-Id"], KEY)
    assert session is not None
    assert session["session_cost_micros"] == cost(message.usage) + cost(again.parse().usage)


def test_streaming_relays_every_event_and_bills_before_the_end(gw: Running) -> None:
    api = client(gw)
    with api.messages.stream(
        model="auto", max_tokens=100, messages=[{"role": "user", "content": "hi"}],
        extra_headers=CC_SESSION,
    ) as stream:  # fmt: skip
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip() == "Hello from the stand-in."
    session = gw.session(CC_SESSION["X-Claude-Code-Session-Id"], KEY)
    assert session is not None
    assert session["session_cost_micros"] == cost(final.usage)
    assert session["reserved_micros"] == 0
    with httpx.stream(
        "POST", f"{gw.url}/v1/messages", timeout=30,
        json={"model": "auto", "max_tokens": 50, "stream": True,
              "messages": [{"role": "user", "content": "hi"}]},
    ) as reply:  # fmt: skip
        kinds = [line[7:] for line in reply.iter_lines() if line.startswith("event: ")]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop", "ping",
            "message_delta"} <= set(kinds)  # fmt: skip


def test_the_async_client(gw: Running) -> None:
    async def main() -> str:
        api = anthropic.AsyncAnthropic(base_url=gw.url, api_key="k", max_retries=0)
        message = await api.messages.create(
            model="auto", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        await api.close()
        return str(message.content[0].text)

    assert asyncio.run(main()) == "Hello from the stand-in."


def test_a_tool_loop_over_several_turns_is_one_session(gw: Running) -> None:
    api = client(gw)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "the tests fail; fix them"}]
    reasons, total = [], 0
    for _ in range(3):
        raw = api.messages.with_raw_response.create(
            model="auto", max_tokens=500, tools=TOOLS, messages=messages, extra_headers=CC_SESSION
        )
        reply = raw.parse()
        reasons.append(raw.headers["x-session-reason"])
        total += cost(reply.usage)
        messages.append({"role": "assistant", "content": [b.model_dump() for b in reply.content]})
        if reply.stop_reason == "tool_use":
            call = reply.content[0]
            assert call.type == "tool_use" and call.name == "run_tests"
            messages.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "1 failed"}]})  # fmt: skip
        else:
            messages.append({"role": "user", "content": "thanks, once more"})
    assert reasons[0] == "new" and set(reasons[1:]) <= {"pinned", "upgraded"}
    assert len({r["model"] for r in gw.standin.received}) == 1  # one model all along
    session = gw.session(CC_SESSION["X-Claude-Code-Session-Id"], KEY)
    assert session is not None
    assert session["request_count"] == 3
    assert session["session_cost_micros"] == total


def test_count_tokens_uses_the_sessions_model_and_changes_nothing(gw: Running) -> None:
    api = client(gw)
    api.messages.create(model="auto", max_tokens=10, extra_headers=CC_SESSION,
                        messages=[{"role": "user", "content": "prove it step by step"}])  # fmt: skip
    pinned = gw.standin.received[-1]["model"]
    before = gw.session(CC_SESSION["X-Claude-Code-Session-Id"], KEY)
    counted = api.messages.count_tokens(
        model="auto", messages=[{"role": "user", "content": "hi"}], extra_headers=CC_SESSION
    )
    assert counted.input_tokens > 0
    assert gw.standin.received[-1]["model"] == pinned  # the session's model, not a new pick
    assert gw.session(CC_SESSION["X-Claude-Code-Session-Id"], KEY) == before  # no session effect
    fresh = api.messages.count_tokens(model="auto", messages=[{"role": "user", "content": "x"}],
                                      extra_headers={"x-session-id": "never-seen"})  # fmt: skip
    assert fresh.input_tokens > 0
    assert gw.session("never-seen", KEY) is None


def test_a_budget_refusal_is_anthropic_shaped_and_not_retried() -> None:
    with gateway_with_standin(max_session_cost_usd=0.0001) as gw:
        api = client(gw, max_retries=3)
        with pytest.raises(anthropic.RateLimitError) as info:
            api.messages.create(model="auto", max_tokens=8000,
                                messages=[{"role": "user", "content": "hi"}])  # fmt: skip
        with gw.http() as http:
            metrics = http.get("/metrics").text
    error = info.value.response
    assert error.headers["x-should-retry"] == "false"
    body = error.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"
    assert body["error"]["code"] == "budget_exceeded"
    assert 'llm_sessions_responses_total{status="429"} 1.0' in metrics  # one try, no retries
    assert gw.standin.received == []


def test_bad_input_is_anthropic_shaped(gw: Running) -> None:
    api = client(gw)
    with pytest.raises(anthropic.BadRequestError) as info:
        api.messages.create(model="auto", max_tokens=0, messages=[{"role": "user", "content": "x"}])
    body = info.value.response.json()
    assert body == {"type": "error", "error": {"type": "invalid_request_error",
                    "message": body["error"]["message"]}}  # fmt: skip
    assert "max_tokens" in body["error"]["message"]
    assert info.value.response.headers["x-should-retry"] == "false"
    assert gw.standin.received == []


def test_an_overloaded_primary_falls_back(gw: Running) -> None:
    gw.standin.set("openai/s1", status=529)
    raw = client(gw).messages.with_raw_response.create(
        model="auto", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-session-served-model"] == "groq/s2"
    assert [r["model"] for r in gw.standin.received] == ["openai/s1", "groq/s2"]


def test_an_upstream_that_does_not_serve_messages_is_a_clear_400() -> None:
    """Without translation (``translate_to = []``); with it, see test_translation."""
    with gateway_with_standin(upstream={"apis": ("chat",), "translate_to": ()}) as gw:
        reply = httpx.post(f"{gw.url}/v1/messages", json={"model": "auto", "max_tokens": 5,
                           "messages": [{"role": "user", "content": "x"}]})  # fmt: skip
    assert reply.status_code == 400
    assert "messages API" in reply.json()["error"]["message"]


def test_the_views_share_one_flow_cache_control_and_media() -> None:
    from llm_sessions.protocols.messages import to_view
    from llm_sessions.routing import IMAGE_TOKENS, estimate_prompt_tokens

    body = {
        "max_tokens": 10,
        "system": [{"type": "text", "text": "rules", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "data": "A" * 100_000}},
            {"type": "text", "text": "what is this"}]}],
    }  # fmt: skip
    view = to_view(body)
    assert view["messages"][0]["content"][0]["cache_control"]["ttl"] == "1h"
    tokens = estimate_prompt_tokens(view["messages"], None)
    assert tokens == IMAGE_TOKENS + -(-len("rules") // 3) + -(-len("what is this") // 3)


def test_cache_reads_are_billed_at_their_price() -> None:
    prices = {"openai/s1": Pricing(1, 2, cache_read_per_mtok="0.1")}
    with gateway_with_standin(pricing=prices) as gw:
        gw.standin.set("openai/s1", cached_tokens=10_000)
        message = client(gw).messages.create(
            model="auto", max_tokens=10, extra_headers={"x-session-id": "c"},
            messages=[{"role": "user", "content": "hi"}],
        )  # fmt: skip
        session = gw.session("c", KEY)
    assert message.usage.cache_read_input_tokens == 10_000
    assert session is not None
    expected = message.usage.input_tokens + 2 * message.usage.output_tokens + 1000
    assert session["session_cost_micros"] == expected


def test_the_fingerprint_sees_tool_inputs_over_messages() -> None:
    from llm_sessions import SessionPolicy, SessionStore
    from llm_sessions.protocols.messages import to_view

    def turn(city: str, call_id: str) -> list[dict[str, Any]]:
        call = {"type": "tool_use", "id": call_id, "name": "get_weather", "input": {"city": city}}
        result = {"type": "tool_result", "tool_use_id": call_id, "content": "sunny, 21C"}
        return [{"role": "assistant", "content": [call]}, {"role": "user", "content": [result]}]

    tiers = {"SIMPLE": {"primary": "s"}, "COMPLEX": {"primary": "c"}, "REASONING": {"primary": "r"}}
    policy = SessionPolicy(SessionStore(), tiers)
    history: list[dict[str, Any]] = [{"role": "user", "content": "weather in four cities?"}]
    reasons = []
    for i, city in enumerate(("Paris", "Berlin", "Rome", "Oslo")):
        history += turn(city, f"toolu_{i}")
        body = {"max_tokens": 10, "messages": history}
        reasons.append(policy.begin({"x-session-id": "four"}, to_view(body)).reason)
    assert "escalated" not in reasons
    same = [{"role": "user", "content": "weather?"}, *turn("Paris", "toolu_x")]
    reasons = [
        policy.begin({"x-session-id": "one"}, to_view({"max_tokens": 10, "messages": same})).reason
        for _ in range(3)
    ]
    assert reasons[-1] == "escalated"


def test_system_messages_among_the_messages_pass(gw: Running) -> None:
    """Claude Code 2.1 sends role "system" messages inside `messages`."""
    reply = client(gw).messages.create(
        model="auto", max_tokens=10,
        messages=[{"role": "user", "content": "hi"},
                  {"role": "system", "content": "Available agent types: ..."}],  # type: ignore[misc,list-item]
    )  # fmt: skip
    assert reply.content[0].text == "Hello from the stand-in."
    assert gw.standin.received[-1]["messages"][1]["role"] == "system"  # passed on as sent
