"""Caps agents can live with (`fit_output`): a request whose worst case does not fit
what is left of its session's cap is sent with a lower output limit, the largest that
fits, down to a floor (`min_output_tokens`); only below the floor is it refused. Agents
ask for large limits (Claude Code: 128,000 tokens), which no small cap would admit."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from gateway_helpers import TIERS, gateway_with_standin
from llm_sessions import BudgetExceeded, Pricing
from llm_sessions.server.standin import Behaviour

PRICE = Pricing(5, 25)  # USD per million input and output tokens (a large model's)
EVERY = {m: PRICE for tier in TIERS.values() for m in tier.chain}
CAP_USD = 0.5


def ask(max_tokens: int, text: str = "fix the failing test") -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens}  # fmt: skip


def test_the_output_limit_is_lowered_to_what_fits(make_policy: Any) -> None:
    policy, _ = make_policy(
        pricing=EVERY, max_session_cost_usd=CAP_USD, fit_output=True, min_output_tokens=1000
    )
    session = {"x-session-id": "agent"}
    d = policy.begin(session, ask(128_000))
    assert d.output_limit is not None and 1000 <= d.output_limit < 128_000
    assert d.reserved_micros <= CAP_USD * 1_000_000
    # the largest that fits: one token more would not
    assert PRICE.cost_micros(d.prompt_tokens, d.output_limit + 1) > CAP_USD * 1_000_000
    assert d.headers["X-Session-Output-Limit"] == str(d.output_limit)
    policy.finish(d, served_model=d.model, cost_micros=400_000)
    later = policy.begin(session, ask(128_000))
    assert later.output_limit is not None and later.output_limit < d.output_limit
    policy.finish(later, served_model=later.model, cost_micros=80_000)
    # 20,000 micro-USD left: 800 output tokens at most, under the floor of 1,000
    with pytest.raises(BudgetExceeded):
        policy.begin(session, ask(128_000))
    small = policy.begin(session, ask(500))  # one that fits as it is keeps its limit
    assert small.output_limit is None and "X-Session-Output-Limit" not in small.headers


def test_without_fit_output_an_oversized_request_is_refused(make_policy: Any) -> None:
    policy, _ = make_policy(pricing=EVERY, max_session_cost_usd=CAP_USD, fit_output=False)
    with pytest.raises(BudgetExceeded):
        policy.begin({"x-session-id": "agent"}, ask(128_000))


def test_fit_output_settings_are_checked(make_policy: Any) -> None:
    with pytest.raises(ValueError, match="min_output_tokens"):
        make_policy(min_output_tokens=0)


# -- through the gateway, with the official SDKs ------------------------------------------

WORDS = " ".join(["word"] * 4000)  # 4,000 output tokens: 0.1 USD a turn at this price
# an agent's turn: long enough that the prompt estimate holds (bytes / 3 is more than the
# stand-in's count, JSON / 4, as it is more than a tokenizer's for prose)
TASK = "Go on with the refactoring of the parser module and run the tests again. " * 5


def test_an_agent_under_a_small_cap_works_until_the_cap_is_spent() -> None:
    """Claude Code's request shape (128,000 max_tokens, a thinking budget) under a 0.5
    USD cap: several turns are served, each sent with the limit that fits (the thinking
    budget below it), the last ones lower; then a final 429; spend within the cap."""
    with gateway_with_standin(max_session_cost_usd=CAP_USD, pricing=EVERY) as gw:
        gw.standin.default = Behaviour(text=WORDS)
        client = anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0)
        limits: list[int] = []
        try:
            for turn in range(12):
                try:
                    raw = client.messages.with_raw_response.create(
                        model="auto", max_tokens=128_000, stream=True,
                        thinking={"type": "enabled", "budget_tokens": 31_999},
                        messages=[{"role": "user", "content": f"turn {turn}: {TASK}"}],
                        extra_headers={"x-session-id": "claude-run"},
                    )  # fmt: skip
                except anthropic.RateLimitError as refused:
                    assert refused.response.json()["error"]["type"] == "rate_limit_error"
                    break
                limits.append(int(raw.headers["x-session-output-limit"]))
                assert [e.type for e in raw.parse()][-1] == "message_stop"
            else:
                pytest.fail("the cap was never reached")
        finally:
            client.close()
        spent = float(gw.session("claude-run")["session_cost_usd"])
    assert len(limits) >= 3
    assert limits == sorted(limits, reverse=True) and limits[-1] < limits[0] < 128_000
    sent = gw.standin.received
    assert [r["max_tokens"] for r in sent] == limits
    assert all(r["thinking"]["budget_tokens"] < r["max_tokens"] for r in sent)
    assert spent <= CAP_USD


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_openai_clients_get_the_limit_that_fits_in_their_own_field(api: str) -> None:
    with gateway_with_standin(max_session_cost_usd=CAP_USD, pricing=EVERY) as gw:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-test", max_retries=0)
        try:
            if api == "chat":
                raw = client.chat.completions.with_raw_response.create(
                    model="auto", max_completion_tokens=128_000,
                    messages=[{"role": "user", "content": "hi"}],
                )  # fmt: skip
                field = "max_completion_tokens"
            else:
                raw = client.responses.with_raw_response.create(
                    model="auto", input="hi", max_output_tokens=128_000
                )
                field = "max_output_tokens"
        finally:
            client.close()
    limit = int(raw.headers["x-session-output-limit"])
    assert limit < 128_000
    assert gw.standin.received[0][field] == limit
