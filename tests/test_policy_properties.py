"""Random sequences of requests through the flow keep its invariants, whatever the mix
of explicit models, loops, large pastes, failures, fallbacks and clock advances."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from hypothesis import given, settings

from llm_sessions import (
    BudgetExceeded,
    Config,
    Pricing,
    SessionPolicy,
    SessionStore,
    Tier,
    tier_rank,
)

from conftest import TIERS
from helpers import FakeClock

PRICES = {m: Pricing(1, 2) for t in TIERS.values() for m in [t["primary"], *t.get("fallback", [])]}
TEXTS = ["hi", "explain the design", "prove it terminates", "```code```", "x " * 5000]

steps = st.lists(
    st.fixed_dictionaries(
        {
            "text": st.sampled_from(TEXTS),
            "model": st.sampled_from(["auto", "auto", "auto", "own/model"]),
            "outcome": st.sampled_from(["primary", "fallback", "failed", "abandoned"]),
            "advance": st.sampled_from([0, 1_000, 120_000, 400_000]),
            "max_tokens": st.integers(1, 300),
        }
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(
    steps=steps,
    cap=st.sampled_from([None, "0.002", "0.01"]),
    mode=st.sampled_from(["strict", "downgrade"]),
)
def test_flow_invariants(steps: list[dict[str, Any]], cap: str | None, mode: str) -> None:
    clock = FakeClock()
    store = SessionStore(Config(cleanup_interval_ms=0, timeout_ms=10**10), clock=clock)
    policy = SessionPolicy(
        store, TIERS, pricing=PRICES, max_session_cost_usd=cap, budget_mode=mode,
        reservation_ttl_ms=10**9, fallback_pin_ms=300_000,
    )  # fmt: skip
    headers = {"x-session-id": "s"}
    charged = 0
    explicit_seen = False
    last_rank = -1
    for step in steps:
        clock.advance(step["advance"])
        body = {
            "model": step["model"],
            "messages": [{"role": "user", "content": step["text"]}],
            "max_tokens": step["max_tokens"],
        }
        before = store.get_session("s")
        try:
            d = policy.begin(headers, body)
        except BudgetExceeded as exc:
            assert cap is not None
            assert store.get_session("s") == before  # a refusal changes nothing
            assert exc.spent_micros + exc.reserved_micros + exc.requested_micros > exc.cap_micros
            continue
        assert d.model not in d.fallbacks
        explicit_seen = explicit_seen or step["model"] == "own/model"
        if cap is not None:
            e = store.get_session("s")
            assert e.session_cost_micros + e.reserved_micros <= policy.cap_micros
        if step["outcome"] == "abandoned":
            continue  # never finished: its reservation must expire or stay counted
        served = {
            "primary": d.model,
            "fallback": d.fallbacks[0] if d.fallbacks else d.model,
            "failed": None,
        }[step["outcome"]]
        spend = min(d.reserved_micros, 37) if cap is not None else 37
        total = policy.finish(d, served_model=served, cost_micros=spend)
        if served is not None:
            charged += spend
        assert total == charged
        e = store.get_session("s")
        assert e.user_explicit == explicit_seen  # never cleared once set
        if explicit_seen:
            assert e.explicit_model == "own/model"
        if e.tier is not None and not explicit_seen:
            assert tier_rank(e.tier) >= last_rank or d.reason == "new"  # upgrade-only
            last_rank = tier_rank(e.tier)
    e = store.get_session("s")
    if e is not None:
        assert e.session_cost_micros == charged
        if cap is not None:
            assert e.session_cost_micros <= policy.cap_micros
        assert all(r.micros > 0 for r in e.flow.reservations)
    assert Tier.SIMPLE in policy.tiers
