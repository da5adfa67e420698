"""Cost from real usage, cache reads and writes included, exact to the micro-USD, for
every usage format; and what the gateway shows of it."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway_helpers import chat, gateway_with_standin, settings_for
from llm_sessions import Config, Pricing, SessionPolicy, SessionStore, TokenUsage, token_usage

SONNET = Pricing(3, 15, cache_read_per_mtok="0.3", cache_write_per_mtok="3.75",
                 cache_write_1h_per_mtok=6)  # fmt: skip


def exact(usage: TokenUsage, price: Pricing) -> int:
    """The cost by plain fractions: the definition, rounded up once."""
    total = (
        Fraction(price.input_per_mtok) * usage.input
        + Fraction(price.output_per_mtok) * usage.output
        + Fraction(price.cache_read_per_mtok) * usage.cache_read
        + Fraction(price.cache_write_per_mtok) * usage.cache_write
        + Fraction(price.cache_write_1h_per_mtok) * usage.cache_write_1h
    )
    return -(-total.numerator // total.denominator)


counts = st.integers(0, 10**9)
prices = st.decimals(0, 100, places=4, allow_nan=False, allow_infinity=False)


@given(counts, counts, counts, counts, counts, prices, prices, prices, prices, prices)
def test_usage_cost_is_exact(
    a: int, b: int, c: int, d: int, e: int, p1: Decimal, p2: Decimal, p3: Decimal, p4: Decimal,
    p5: Decimal,
) -> None:  # fmt: skip
    price = Pricing(p1, p2, p3, p4, p5)
    usage = TokenUsage(a, b, c, d, e)
    assert price.usage_micros(usage) == exact(usage, price)
    assert price.cost_micros(a, b) == exact(TokenUsage(a, b), price)


def test_unset_cache_prices_are_the_input_price() -> None:
    plain = Pricing(2, 8)
    assert (plain.cache_read_per_mtok, plain.cache_write_per_mtok) == (Decimal(2), Decimal(2))
    assert Pricing(2, 8, cache_write_per_mtok=3).cache_write_1h_per_mtok == Decimal(3)
    assert plain.usage_micros(TokenUsage(100, 10, 50, 20, 5)) == plain.cost_micros(175, 10)
    with pytest.raises(ValueError, match="cache_read_per_mtok"):
        Pricing(1, 1, cache_read_per_mtok=-1)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # chat completions: cached tokens are part of prompt_tokens
        ({"prompt_tokens": 1000, "completion_tokens": 50,
          "prompt_tokens_details": {"cached_tokens": 800}}, TokenUsage(200, 50, 800)),
        ({"prompt_tokens": 10, "completion_tokens": 1}, TokenUsage(10, 1)),
        # Anthropic Messages: input_tokens excludes the cache
        ({"input_tokens": 20, "output_tokens": 30, "cache_read_input_tokens": 5000,
          "cache_creation_input_tokens": 700}, TokenUsage(20, 30, 5000, 700)),
        ({"input_tokens": 20, "output_tokens": 30, "cache_read_input_tokens": 0,
          "cache_creation_input_tokens": 700,
          "cache_creation": {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 400}},
         TokenUsage(20, 30, 0, 300, 400)),
        # Responses: input_tokens includes the cache; reasoning is output
        ({"input_tokens": 900, "output_tokens": 40, "input_tokens_details": {"cached_tokens": 600},
          "output_tokens_details": {"reasoning_tokens": 30}}, TokenUsage(300, 40, 600)),
        # ... and writes to the cache, where the provider reports them (priced as writes)
        ({"input_tokens": 1000, "output_tokens": 10,
          "input_tokens_details": {"cached_tokens": 200, "cache_write_tokens": 300}},
         TokenUsage(500, 10, 200, 300)),
        ({"input_tokens": 100, "output_tokens": 1,
          "input_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 90}},
         TokenUsage(0, 1, 60, 40)),  # never more than the input holds
        # chat completions, the same field (OpenRouter)
        ({"prompt_tokens": 1000, "completion_tokens": 5,
          "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 400}},
         TokenUsage(500, 5, 100, 400)),
    ],
)  # fmt: skip
def test_every_usage_format(usage: dict[str, Any], expected: TokenUsage) -> None:
    assert token_usage(usage) == expected


def test_the_flow_charges_cache_reads_and_writes_exactly() -> None:
    policy = SessionPolicy(
        SessionStore(Config(cleanup_interval_ms=0)),
        {"SIMPLE": {"primary": "claude"}},
        pricing={"claude": SONNET},
    )
    d = policy.begin({"x-session-id": "s"}, {"messages": [{"role": "user", "content": "hi"}]})
    usage = {
        "input_tokens": 20, "output_tokens": 300, "cache_read_input_tokens": 100_000,
        "cache_creation_input_tokens": 2_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1_500, "ephemeral_1h_input_tokens": 500},
    }  # fmt: skip
    # 20 x 3 + 300 x 15 + 100000 x 0.3 + 1500 x 3.75 + 500 x 6 micro-USD
    assert policy.finish(d, served_model="claude", usage=usage) == 60 + 4500 + 30000 + 5625 + 3000
    d = policy.begin({"x-session-id": "c"}, {"messages": [{"role": "user", "content": "hi"}]})
    chat_usage = {"prompt_tokens": 10_000, "completion_tokens": 10,
                  "prompt_tokens_details": {"cached_tokens": 9_000}}  # fmt: skip
    assert policy.finish(d, served_model="claude", usage=chat_usage) == 1000 * 3 + 150 + 9000 * 0.3


def test_the_gateway_shows_cache_reads_and_savings() -> None:
    prices = {"openai/s1": Pricing(1, 2, cache_read_per_mtok="0.25")}
    with gateway_with_standin(pricing=prices) as gw:
        gw.standin.set("openai/s1", cached_tokens=4000)
        with gw.http() as http:
            reply = http.post(
                "/v1/chat/completions", json=chat("hi"), headers={"x-session-id": "k"}
            )
            metrics = http.get("/metrics").text
            session = http.get("/v1/sessions/k").json()
    usage = reply.json()["usage"]
    assert reply.headers["x-session-cache-read-tokens"] == "4000"
    uncached = usage["prompt_tokens"] - 4000
    assert session["session_cost_micros"] == uncached + 2 * usage["completion_tokens"] + 1000
    assert 'llm_sessions_cache_read_tokens_total{provider="openai"} 4000.0' in metrics
    assert "llm_sessions_cache_savings_usd_total 0.003" in metrics  # 4000 x (1 - 0.25) micro-USD


def test_cache_prices_in_the_configuration(tmp_path: Any) -> None:
    from llm_sessions.server.settings import load_settings

    path = tmp_path / "c.toml"
    path.write_text(
        '[pricing."m"]\ninput_per_mtok = 3\noutput_per_mtok = 15\ncache_read_per_mtok = 0.3\n'
        "cache_write_per_mtok = 3.75\ncache_write_1h_per_mtok = 6\n"
    )
    assert load_settings(path).pricing["m"] == SONNET
    assert settings_for("http://x").pricing  # the helper's table still loads
