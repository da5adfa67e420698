"""The routing flow's rules (README, "The routing flow"), each with its edges and its
order, over every store kind; async stores run through abegin/afinish."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from llm_sessions import (
    STRIKE_LIMIT,
    BudgetExceeded,
    Config,
    InvalidRequest,
    InvalidSessionId,
    Pricing,
    SessionPolicy,
    SessionStore,
    Tier,
    derive_session_id,
    turn_fingerprint,
)

from conftest import TIERS
from helpers import FakeClock

MakePolicy = Callable[..., tuple[Any, Any]]
TAGS = {"[S]": Tier.SIMPLE, "[M]": Tier.MEDIUM, "[C]": Tier.COMPLEX, "[R]": Tier.REASONING}


def classify(messages: Sequence[Any], tools: Any) -> Tier:
    """Tests pick the tier with a tag in the latest user message; untagged is SIMPLE."""
    for m in reversed(messages):
        if m["role"] == "user":
            for tag, tier in TAGS.items():
                if tag in str(m["content"]):
                    return tier
            break
    return Tier.SIMPLE


class Chat:
    """A growing conversation: user turns, assistant replies, tool calls and results."""

    def __init__(self, first: str = "[S] fix the login bug", **body: Any) -> None:
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": "you are an agent"}]
        self.body = {"model": "auto", **body}
        self.user(first)

    def user(self, text: str) -> Chat:
        self.messages.append({"role": "user", "content": text})
        return self

    def reply(self, text: str = "ok") -> Chat:
        self.messages.append({"role": "assistant", "content": text})
        return self

    def tool_loop(self, result: str, name: str = "run_tests", call_id: str = "c") -> Chat:
        self.messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": "{}"},
                    }
                ],
            }
        )
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
        return self

    def request(self, **overrides: Any) -> dict[str, Any]:
        return {**self.body, "messages": list(self.messages), **overrides}


def sid_of(chat: Chat, scope: str = "") -> str:
    return derive_session_id(chat.messages[1]["content"], scope=scope)


@pytest.fixture
def policy(make_policy: MakePolicy) -> tuple[Any, Any]:
    return make_policy(classify=classify)


# -- rule 1: the session id -------------------------------------------------------------------


def test_header_id_wins_and_derived_id_is_scoped(policy: tuple[Any, Any]) -> None:
    p, store = policy
    chat = Chat()
    d = p.begin({"X-Session-ID": "agent-7"}, chat.request())
    assert (d.session_id, d.reason) == ("agent-7", "new")
    assert store.get_session("agent-7").model == "openai/s1"
    derived = p.begin({}, chat.request())
    assert derived.session_id == derive_session_id("[S] fix the login bug")
    scoped = p.begin({}, chat.request(), scope="tenant-b")
    assert scoped.session_id == derive_session_id("[S] fix the login bug", scope="tenant-b")
    assert scoped.reason == "new"


def test_scopes_never_share_sessions_even_with_the_same_header(policy: tuple[Any, Any]) -> None:
    p, _ = policy
    chat = Chat()
    assert p.begin({"x-session-id": "main"}, chat.request(), scope="a").reason == "new"
    assert p.begin({"x-session-id": "main"}, chat.request(), scope="a").reason == "pinned"
    assert p.begin({"x-session-id": "main"}, chat.request(), scope="b").reason == "new"
    assert p.begin({}, chat.request(), scope="a").reason == "new"
    assert p.begin({}, chat.request(), scope="b").reason == "new"


def test_invalid_header_raises_and_stores_nothing(policy: tuple[Any, Any]) -> None:
    p, store = policy
    with pytest.raises(InvalidSessionId):
        p.begin({"x-session-id": "bad\nid"}, Chat().request())
    assert store.get_stats().count == 0


def test_no_user_message_means_no_session(policy: tuple[Any, Any]) -> None:
    p, store = policy
    d = p.begin({}, {"model": "auto", "messages": [{"role": "system", "content": "[C] x"}]})
    assert (d.session_id, d.reason, d.model, d.strikes) == (None, "no_session", "openai/s1", 0)
    assert d.fallbacks == ["groq/s2"]
    assert "X-Session-ID" not in d.headers
    assert d.headers["X-Session-Reason"] == "no_session"
    assert p.finish(d, served_model="openai/s1", cost_micros=50) == 0
    assert store.get_stats().count == 0


def test_disabled_store_routes_without_a_session(make_policy: MakePolicy) -> None:
    p, store = make_policy(config=Config(enabled=False, cleanup_interval_ms=0), classify=classify)
    d = p.begin({"x-session-id": "s"}, Chat("[C] big").request())
    assert (d.session_id, d.reason, d.model, d.tier) == (
        None,
        "no_session",
        "anthropic/c1",
        Tier.COMPLEX,
    )
    assert store.get_session("s") is None


@pytest.mark.parametrize("model", [None, "", "auto"])
def test_missing_or_empty_model_is_the_first_profile(policy: tuple[Any, Any], model: Any) -> None:
    p, _ = policy
    body = Chat().request()
    if model is None:
        del body["model"]
    else:
        body["model"] = model
    d = p.begin({}, body)
    assert (d.reason, d.model) == ("new", "openai/s1")


def test_custom_header_name(make_policy: MakePolicy) -> None:
    cfg = Config(cleanup_interval_ms=0, header_name="x-conversation")
    p, _ = make_policy(config=cfg, classify=classify)
    d = p.begin({"X-Conversation": "conv-1", "x-session-id": "other"}, Chat().request())
    assert d.session_id == "conv-1"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({}, "messages"),
        ({"messages": [{"content": "x"}]}, r"messages\[0\]"),
        ({"messages": [{"role": "user", "content": "x"}], "model": 3}, "model"),
        ({"messages": [{"role": "user", "content": "x"}], "tools": {}}, "tools"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": True}, "max_tokens"),
    ],
)
def test_bad_bodies_raise_invalid_request_and_store_nothing(
    policy: tuple[Any, Any], body: Any, field: str
) -> None:
    p, store = policy
    with pytest.raises(InvalidRequest, match=field):
        p.begin({}, body)
    assert store.get_stats().count == 0


# -- rule 2: explicit models ------------------------------------------------------------------


def test_explicit_model_is_pinned_with_the_classified_tiers_fallbacks(
    policy: tuple[Any, Any],
) -> None:
    p, store = policy
    chat = Chat("[C] refactor the parser", model="mistral/large")
    d = p.begin({}, chat.request())
    assert (d.reason, d.model, d.tier) == ("explicit", "mistral/large", Tier.COMPLEX)
    assert d.fallbacks == ["anthropic/c1", "openai/c2", "google/c3"]
    e = store.get_session(d.session_id)
    assert (e.model, e.user_explicit, e.explicit_model) == ("mistral/large", True, "mistral/large")
    chat.reply().user("[R] prove it terminates")
    later = p.begin({}, chat.request(model="auto"))  # a later profile request keeps it
    assert (later.reason, later.model, later.tier) == ("explicit", "mistral/large", Tier.REASONING)
    assert later.fallbacks == ["openai/r1", "anthropic/r2"]


def test_an_explicit_model_in_a_chain_is_not_its_own_fallback(policy: tuple[Any, Any]) -> None:
    p, _ = policy
    d = p.begin({}, Chat("[C] x", model="openai/c2").request())
    assert d.fallbacks == ["anthropic/c1", "google/c3"]


def test_explicit_sessions_are_never_escalated(policy: tuple[Any, Any]) -> None:
    p, store = policy
    chat = Chat(model="mine/model")
    reasons = [
        (d.reason, d.model, d.strikes) for d in (p.begin({}, chat.request()) for _ in range(4))
    ]
    assert reasons == [
        ("explicit", "mine/model", 0),
        ("explicit", "mine/model", 1),
        ("explicit", "mine/model", 2),
        ("explicit", "mine/model", 3),
    ]
    assert store.get_session(sid_of(chat)).escalated is False


def test_a_new_explicit_model_replaces_the_old_one(policy: tuple[Any, Any]) -> None:
    p, store = policy
    chat = Chat(model="a/one")
    p.begin({}, chat.request())
    d = p.begin({}, chat.reply().user("again").request(model="b/two"))
    assert (d.reason, d.model) == ("explicit", "b/two")
    assert store.get_session(d.session_id).explicit_model == "b/two"


# -- rule 3: profile requests on an existing session -----------------------------------------


def test_upgrade_only(policy: tuple[Any, Any]) -> None:
    p, store = policy
    chat = Chat("[M] explain the flow")
    assert p.begin({}, chat.request()).reason == "new"
    d = p.begin({}, chat.reply().user("[S] thanks").request())
    assert (d.reason, d.model, d.tier) == ("pinned", "anthropic/m1", Tier.MEDIUM)  # never down
    d = p.begin({}, chat.reply().user("[C] now rewrite it").request())
    assert (d.reason, d.model, d.tier) == ("upgraded", "anthropic/c1", Tier.COMPLEX)
    assert d.fallbacks == ["openai/c2", "google/c3"]
    e = store.get_session(d.session_id)
    assert (e.model, e.tier, e.request_count) == ("anthropic/c1", Tier.COMPLEX, 3)


def test_cache_sticky_pin_blocks_upgrades_but_not_escalation(
    policy: tuple[Any, Any], clock: FakeClock
) -> None:
    p, store = policy
    chat = Chat("[S] here is the codebase:\n" + "x = 1\n" * 2000)
    first = p.begin({}, chat.request())
    assert first.reason == "new"
    assert store.is_cache_sticky(first.session_id)
    assert store.get_session(first.session_id).provider == "openai"
    d = p.begin({}, chat.reply().user("[R] prove the invariant").request())
    assert (d.reason, d.model) == ("cache_sticky", "openai/s1")
    d = p.begin({}, chat.request())
    assert (d.reason, d.strikes) == ("cache_sticky", 1)
    d = p.begin({}, chat.request())  # the third identical turn: escalation wins
    assert (d.reason, d.model, d.strikes) == ("escalated", "anthropic/m1", 2)
    clock.advance(300_001)  # the sticky window lapses with no turn
    d = p.begin({}, chat.reply().user("[C] next").request())
    assert (d.reason, d.model) == ("upgraded", "anthropic/c1")


def test_fallback_pin_returns_to_the_primary_after_fallback_pin_ms(
    make_policy: MakePolicy, clock: FakeClock
) -> None:
    p, store = make_policy(classify=classify, fallback_pin_ms=60_000)
    chat = Chat("[M] hello")
    d = p.begin({}, chat.request())
    assert p.finish(d, served_model="openai/m2", cost_micros=7) == 7  # the primary failed
    e = store.get_session(d.session_id)
    assert (e.model, e.flow.fallback_from, e.flow.fallback_at) == (
        "openai/m2",
        "anthropic/m1",
        clock.now,
    )
    clock.advance(60_000)
    d = p.begin({}, chat.reply().user("[M] more 1").request())
    assert (d.reason, d.model, d.fallbacks) == ("pinned", "openai/m2", ["anthropic/m1"])
    clock.advance(1)
    d = p.begin({}, chat.reply().user("[M] more 2").request())
    assert (d.reason, d.model, d.fallbacks) == ("primary_retry", "anthropic/m1", ["openai/m2"])
    p.finish(d, served_model="anthropic/m1")
    e = store.get_session(d.session_id)
    assert (e.model, e.flow.fallback_from) == ("anthropic/m1", "")
    d = p.begin({}, chat.reply().user("[M] more 3").request())
    assert d.reason == "pinned"


def test_stale_fallback_beats_cache_sticky_and_an_explicit_pin_keeps_its_safety_net(
    make_policy: MakePolicy, clock: FakeClock
) -> None:
    p, store = make_policy(classify=classify, fallback_pin_ms=1_000)
    chat = Chat("[C] big paste " + "y" * 10_000, model="anthropic/exp")
    d = p.begin({}, chat.request())
    assert (d.reason, d.fallbacks[0]) == ("explicit", "anthropic/c1")
    p.finish(d, served_model="anthropic/c1")  # the explicit model failed over
    e = store.get_session(d.session_id)
    assert (e.model, e.user_explicit, e.explicit_model) == ("anthropic/c1", True, "anthropic/exp")
    assert store.is_cache_sticky(d.session_id)
    d = p.begin({}, chat.reply().user("[C] go on").request(model="auto"))
    assert (d.reason, d.model) == ("explicit", "anthropic/c1")  # fresh fallback pin kept
    clock.advance(1_001)
    d = p.begin({}, chat.reply().user("[C] go on").request(model="auto"))
    assert (d.reason, d.model) == ("primary_retry", "anthropic/exp")
    assert store.get_session(d.session_id).user_explicit is True


def test_an_explicit_request_for_the_same_model_respects_its_fallback_pin(
    make_policy: MakePolicy, clock: FakeClock
) -> None:
    p, _ = make_policy(classify=classify, fallback_pin_ms=1_000)
    chat = Chat("[M] q", model="x/primary")
    d = p.begin({}, chat.request())
    p.finish(d, served_model="anthropic/m1")
    d = p.begin({}, chat.reply().user("[M] q2").request())
    assert (d.reason, d.model) == ("explicit", "anthropic/m1")
    clock.advance(1_001)
    d = p.begin({}, chat.reply().user("[M] q3").request())
    assert (d.reason, d.model) == ("primary_retry", "x/primary")


# -- rules 4-5: new sessions and loops --------------------------------------------------------


def test_the_third_identical_turn_escalates(policy: tuple[Any, Any]) -> None:
    p, store = policy
    chat = Chat("[S] run the tests")
    seen = [(d.reason, d.model, d.strikes) for d in (p.begin({}, chat.request()) for _ in range(3))]
    assert seen == [
        ("new", "openai/s1", 0),
        ("pinned", "openai/s1", 1),
        ("escalated", "anthropic/m1", STRIKE_LIMIT),
    ]
    e = store.get_session(sid_of(chat))
    assert (e.tier, e.escalated, e.strikes, e.recent_hashes) == (Tier.MEDIUM, True, 0, ())


def test_a_tool_loop_escalates_whatever_the_call_ids(policy: tuple[Any, Any]) -> None:
    p, _ = policy
    chat = Chat("[S] make the build green")
    p.begin({}, chat.request())
    reasons = []
    for i in range(3):
        chat.tool_loop("error: build failed at step 3", call_id=f"call-{i}")
        reasons.append(p.begin({}, chat.request()).reason)
    assert reasons == ["pinned", "pinned", "escalated"]


def test_escalation_stops_at_the_top_tier(policy: tuple[Any, Any]) -> None:
    p, _ = policy
    chat = Chat("[R] prove it")
    reasons = [p.begin({}, chat.request()).reason for _ in range(4)]
    assert reasons == ["new", "pinned", "pinned", "pinned"]


def test_escalation_skips_tiers_the_table_lacks(make_policy: MakePolicy) -> None:
    tiers = {"SIMPLE": TIERS["SIMPLE"], "REASONING": TIERS["REASONING"]}
    p, _ = make_policy(tiers=tiers, classify=classify)
    chat = Chat("[S] loop")
    d = [p.begin({}, chat.request()) for _ in range(3)][-1]
    assert (d.reason, d.model, d.tier) == ("escalated", "openai/r1", Tier.REASONING)
    medium = p.begin({}, Chat("[M] resolves up").request())
    assert (medium.tier, medium.model) == (Tier.REASONING, "openai/r1")


def test_a_retry_after_a_failed_attempt_is_not_a_strike(policy: tuple[Any, Any]) -> None:
    p, store = policy
    chat = Chat("[S] flaky")
    d = p.begin({}, chat.request())
    assert p.finish(d, served_model=None) == 0
    retries = []
    for served in (None, None, "openai/s1"):  # two more failures, then a success
        retries.append(p.begin({}, chat.request()))
        p.finish(retries[-1], served_model=served)
    assert [r.strikes for r in retries] == [0, 0, 0]
    assert all(r.reason == "pinned" for r in retries)
    after = p.begin({}, chat.request())  # a success, then the same turn again: a strike
    assert after.strikes == 1
    assert store.get_session(after.session_id).request_count == 5


def test_turn_fingerprint_covers_what_follows_the_last_assistant_message() -> None:
    base = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    log = "line\n" * 2000
    fp = turn_fingerprint([*base, {"role": "user", "content": log + "end A"}])
    assert fp != turn_fingerprint([*base, {"role": "user", "content": log + "end B"}])
    middle = log[:5000] + "CHANGED" + log[5007:]
    assert turn_fingerprint(
        [*base, {"role": "user", "content": log + "end A"}]
    ) == turn_fingerprint([*base, {"role": "user", "content": middle + "end A"}])
    assert turn_fingerprint([*base, {"role": "user", "content": "  x \n y "}]) == turn_fingerprint(
        [{"role": "user", "content": "other history"}, {"role": "assistant", "content": "z"},
         {"role": "user", "content": "x y"}]
    )  # fmt: skip
    called = [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "grep", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "out"}]  # fmt: skip
    renamed = [dict(called[0], tool_calls=[{"id": "2", "type": "function",
               "function": {"name": "cat", "arguments": "{}"}}]), called[1]]  # fmt: skip
    assert turn_fingerprint(called) != turn_fingerprint(renamed)
    assert len(fp) == 32
    assert int(fp, 16) >= 0


# -- rule 6: cache stickiness -------------------------------------------------------------------


def test_declared_cache_breakpoints_make_a_session_sticky_for_their_ttl(
    make_policy: MakePolicy, clock: FakeClock
) -> None:
    p, store = make_policy(
        config=Config(cleanup_interval_ms=0, timeout_ms=7_200_000), classify=classify
    )
    chat = Chat("[M] small")
    chat.messages[0]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    d = p.begin({}, chat.request())
    e = store.get_session(d.session_id)
    assert (e.cache_sticky, e.provider, e.flow.sticky_ttl_ms) == (True, "anthropic", 3_600_000)
    clock.advance(3_000_000)  # 50 minutes: past 5 min, within the declared hour
    assert store.is_cache_sticky(d.session_id)
    d = p.begin({}, chat.reply().user("[C] bigger").request())
    assert d.reason == "cache_sticky"
    chat2 = Chat("[S] parts")
    chat2.messages[1]["content"] = [
        {"type": "text", "text": "[S] q", "cache_control": {"type": "ephemeral"}}
    ]
    d2 = p.begin({}, chat2.request())
    e2 = store.get_session(d2.session_id)
    assert (e2.cache_sticky, e2.flow.sticky_ttl_ms, e2.provider) == (True, 0, "openai")
    clock.advance(300_001)
    assert not store.is_cache_sticky(d2.session_id)  # no declared TTL: the provider's


@pytest.mark.parametrize("ttl", ["99999999999h", "2h", "86400s", "100000m", "9" * 5000 + "h"])
def test_a_declared_ttl_longer_than_providers_keep_a_cache_is_held_to_an_hour(
    make_policy: MakePolicy, clock: FakeClock, ttl: str
) -> None:
    """No provider keeps a prompt cache longer than an hour on request (Anthropic's "1h"):
    a longer declared TTL is not a longer sticky window."""
    p, store = make_policy(
        config=Config(cleanup_interval_ms=0, timeout_ms=7_200_000), classify=classify
    )
    chat = Chat("[M] small")
    chat.messages[0]["cache_control"] = {"type": "ephemeral", "ttl": ttl}
    d = p.begin({}, chat.request())
    assert store.get_session(d.session_id).flow.sticky_ttl_ms == 3_600_000
    clock.advance(3_600_001)
    assert not store.is_cache_sticky(d.session_id)


def test_small_requests_without_breakpoints_are_not_sticky(policy: tuple[Any, Any]) -> None:
    p, store = policy
    d = p.begin({}, Chat("[S] small").request())
    assert store.get_session(d.session_id).cache_sticky is False


# -- rule 7: budgets ----------------------------------------------------------------------------

PRICES = {
    "openai/s1": Pricing(1, 2),  # micro-USD per token
    "groq/s2": Pricing("0.5", 4),
    "anthropic/m1": Pricing(3, 15),
    "openai/m2": Pricing(2, 8),
}


def test_reservation_is_the_worst_case_of_model_and_fallbacks(make_policy: MakePolicy) -> None:
    p, store = make_policy(classify=classify, pricing=PRICES, max_session_cost_usd=1)
    chat = Chat("[S] " + "x" * 296)  # 300 bytes + the system prompt's 16
    d = p.begin({}, chat.request(max_tokens=100))
    tokens = math.ceil((300 + 16) / 3)
    assert d.reserved_micros == max(tokens * 1 + 100 * 2, math.ceil(tokens / 2) + 100 * 4)
    assert store.get_session(d.session_id).reserved_micros == d.reserved_micros
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    d2 = p.begin({}, Chat("[M] t").request(tools=tools, max_completion_tokens=10))
    t2 = math.ceil((len("you are an agent") + len("[M] t") + len(json.dumps(tools))) / 3)
    assert d2.reserved_micros == max(3 * t2 + 15 * 10, 2 * t2 + 8 * 10)
    d3 = p.begin({}, Chat("[S] default max").request())
    assert d3.reserved_micros >= 4 * 4096


def test_finish_replaces_the_reservation_with_the_real_cost(make_policy: MakePolicy) -> None:
    p, store = make_policy(classify=classify, pricing=PRICES, max_session_cost_usd=5)
    d = p.begin({}, Chat("[S] q").request(max_tokens=50))
    assert store.get_session(d.session_id).reserved_micros > 0
    total = p.finish(
        d, served_model="openai/s1", usage={"prompt_tokens": 1000, "completion_tokens": 7}
    )
    assert total == 1000 * 1 + 7 * 2
    e = store.get_session(d.session_id)
    assert (e.reserved_micros, e.session_cost_micros) == (0, 1014)
    d = p.begin({}, Chat("[S] q").request())
    assert d.session_cost_usd == pytest.approx(0.001014)
    assert d.headers["X-Session-Cost-USD"] == "0.001014"
    # an upstream-reported cost (OpenRouter's usage.cost, USD) wins over the table
    assert (
        p.finish(d, served_model="openai/s1", usage={"prompt_tokens": 10**6, "cost": 0.0000015})
        == 1016
    )
    d = p.begin({}, Chat("[S] q").request())
    assert p.finish(d, served_model="openai/s1", cost_micros=4) == 1020


def test_costs_are_exact_and_rounded_up_once(make_policy: MakePolicy) -> None:
    p, _ = make_policy(classify=classify, pricing={"openai/s1": Pricing(0.15, 0.6)})
    d = p.begin({}, Chat().request())
    # 0.15 * 7 + 0.6 * 3 = 2.85 micro-USD -> 3 (float accumulation would be 2.8500000000000005)
    assert (
        p.finish(d, served_model="openai/s1", usage={"prompt_tokens": 7, "completion_tokens": 3})
        == 3
    )
    assert Pricing(0.1, 0.2).cost_micros(10, 10) == 3
    assert Pricing("0.000001", 0).cost_micros(1, 0) == 1
    with pytest.raises(ValueError, match="input_per_mtok"):
        Pricing(-1, 0)
    with pytest.raises(ValueError, match="output_per_mtok"):
        Pricing(1, float("nan"))


def test_a_refused_request_changes_nothing(make_policy: MakePolicy) -> None:
    p, store = make_policy(classify=classify, pricing=PRICES, max_session_cost_usd="0.01")
    chat = Chat("[S] q")
    d = p.begin({}, chat.request(max_tokens=10))
    p.finish(d, served_model="openai/s1", cost_micros=9_000)
    p.begin({}, chat.request(max_tokens=10))  # a strike, reserved 48 micros
    before = store.get_session(d.session_id)
    with pytest.raises(BudgetExceeded) as info:
        p.begin({}, chat.reply().user("[M] bigger").request(max_tokens=500))
    err = info.value
    assert (err.session_id, err.spent_micros, err.cap_micros) == (d.session_id, 9_000, 10_000)
    assert err.reserved_micros == before.reserved_micros > 0
    assert err.requested_micros > 10_000 - 9_000 - err.reserved_micros
    assert store.get_session(d.session_id) == before  # pin, tier, strikes, cost, reservations


def test_the_cap_holds_exactly_at_its_edge(make_policy: MakePolicy) -> None:
    p, store = make_policy(
        classify=classify, pricing={"openai/s1": Pricing(0, 1), "groq/s2": Pricing(0, 1)},
        max_session_cost_usd="0.0001",
    )  # fmt: skip
    h = {"x-session-id": "edge"}

    def body(i: int) -> dict[str, Any]:
        return Chat(f"[S] request {i}").request(max_tokens=25)

    held = [p.begin(h, body(i)) for i in range(4)]  # 4 x 25 = the whole cap of 100
    assert [d.reserved_micros for d in held] == [25] * 4
    with pytest.raises(BudgetExceeded):
        p.begin(h, body(4))
    p.finish(held[0], served_model=None)  # released
    again = p.begin(h, body(5))
    for d in [*held[1:], again]:
        p.finish(d, served_model="openai/s1", cost_micros=25)
    e = store.get_session("edge")
    assert (e.session_cost_micros, e.reserved_micros) == (100, 0)
    with pytest.raises(BudgetExceeded):
        p.begin(h, body(6))


def test_unfinished_reservations_expire(make_policy: MakePolicy, clock: FakeClock) -> None:
    p, store = make_policy(
        classify=classify, pricing=PRICES, max_session_cost_usd=1, reservation_ttl_ms=10_000
    )
    d = p.begin({}, Chat().request(max_tokens=100))
    assert store.get_session(d.session_id).reserved_micros > 0
    clock.advance(10_000)
    assert store.get_session(d.session_id).reserved_micros == 0
    d2 = p.begin({}, Chat().request(max_tokens=100))
    assert store.get_session(d2.session_id).flow.reservations[0].id == d2.reservation_id
    assert len(store.get_session(d2.session_id).flow.reservations) == 1


def test_unpriced_models_reserve_nothing(make_policy: MakePolicy) -> None:
    p, store = make_policy(classify=classify, pricing={}, max_session_cost_usd="0.000001")
    d = p.begin({}, Chat("[C] q").request())
    assert d.reserved_micros == 0
    assert store.get_session(d.session_id).reserved_micros == 0


def test_downgrade_mode_sends_an_auto_session_to_simple(make_policy: MakePolicy) -> None:
    prices = {
        **PRICES,
        "anthropic/c1": Pricing(100, 100),
        "openai/r1": Pricing(100, 100),
        "anthropic/r2": Pricing(100, 100),
    }
    p, store = make_policy(
        classify=classify, pricing=prices, max_session_cost_usd="0.05", budget_mode="downgrade"
    )
    chat = Chat("[C] design the system")
    strict, _ = make_policy(classify=classify, pricing=prices, max_session_cost_usd="0.05")
    with pytest.raises(BudgetExceeded):  # the same request in strict mode is refused
        strict.begin({}, chat.request(max_tokens=1000), scope="strict")
    d = p.begin({}, chat.request(max_tokens=1000))
    assert (d.reason, d.model, d.tier, d.fallbacks) == (
        "budget_downgrade",
        "openai/s1",
        Tier.SIMPLE,
        ["groq/s2"],
    )
    e = store.get_session(d.session_id)
    assert (e.model, e.tier) == ("anthropic/c1", Tier.COMPLEX)  # the pin is not moved
    assert (
        e.reserved_micros
        == d.reserved_micros
        == max(
            prices["openai/s1"].cost_micros(
                -(-(len("you are an agent") + len("[C] design the system")) // 3), 1000
            ),
            prices["groq/s2"].cost_micros(
                -(-(len("you are an agent") + len("[C] design the system")) // 3), 1000
            ),
        )
    )
    d2 = p.begin({}, chat.request(max_tokens=1000))
    d3 = p.begin({}, chat.request(max_tokens=1000))
    assert [d2.reason, d3.reason] == ["budget_downgrade", "budget_downgrade"]  # no escalation
    assert store.get_session(d.session_id).escalated is False
    p.finish(d3, served_model="groq/s2", cost_micros=1)  # a SIMPLE fallback does not move the pin
    assert store.get_session(d.session_id).model == "anthropic/c1"


def test_downgrade_refuses_explicit_sessions_and_tables_without_simple(
    make_policy: MakePolicy,
) -> None:
    prices = {"x/explicit": Pricing(1000, 1000), "anthropic/c1": Pricing(1000, 1000), **PRICES}
    p, _ = make_policy(
        classify=classify, pricing=prices, max_session_cost_usd="0.01", budget_mode="downgrade"
    )
    with pytest.raises(BudgetExceeded):
        p.begin({}, Chat("[C] q", model="x/explicit").request())
    tiers = {k: v for k, v in TIERS.items() if k != "SIMPLE"}
    p2, _ = make_policy(
        tiers=tiers, classify=classify, pricing={"anthropic/m1": Pricing(1000, 1000)},
        max_session_cost_usd="0.01", budget_mode="downgrade",
    )  # fmt: skip
    with pytest.raises(BudgetExceeded):
        p2.begin({}, Chat("[M] q").request())


# -- rule 8: finish -----------------------------------------------------------------------------


def test_finish_with_a_fallback_repins_and_never_clears_explicit(
    policy: tuple[Any, Any], clock: FakeClock
) -> None:
    p, store = policy
    chat = Chat("[M] q", model="own/model")
    d = p.begin({}, chat.request())
    clock.advance(5)
    p.finish(d, served_model="openai/m2", cost_micros=3)
    e = store.get_session(d.session_id)
    assert (e.model, e.user_explicit, e.explicit_model) == ("openai/m2", True, "own/model")
    assert (e.flow.fallback_from, e.flow.fallback_at, e.session_cost_micros) == (
        "own/model",
        clock.now,
        3,
    )
    d2 = p.begin({}, chat.reply().user("[M] next").request())
    p.finish(d2, served_model="anthropic/m1")  # a second fallback keeps what was replaced
    assert store.get_session(d.session_id).flow.fallback_from == "own/model"


def test_failed_call_releases_its_reservation_and_charges_nothing(make_policy: MakePolicy) -> None:
    p, store = make_policy(classify=classify, pricing=PRICES, max_session_cost_usd=1)
    d = p.begin({}, Chat().request())
    assert p.finish(d, served_model=None, cost_micros=999) == 0
    e = store.get_session(d.session_id)
    assert (e.reserved_micros, e.session_cost_micros, e.flow.failed_fingerprint) == (
        0,
        0,
        d.fingerprint,
    )


def test_finish_on_an_expired_session_still_charges(
    policy: tuple[Any, Any], clock: FakeClock
) -> None:
    p, store = policy
    d = p.begin({}, Chat().request())
    clock.advance(Config().timeout_ms + 1)
    assert p.finish(d, served_model="openai/s1", cost_micros=11) == 11
    assert store.get_session(d.session_id).session_cost_micros == 11


def test_decision_headers(policy: tuple[Any, Any]) -> None:
    p, _ = policy
    d = p.begin({"x-session-id": "h1"}, Chat("[C] q").request())
    assert d.headers == {
        "X-Session-ID": "h1",
        "X-Session-Source": "x-session-id",
        "X-Session-Model": "anthropic/c1",
        "X-Session-Tier": "COMPLEX",
        "X-Session-Reason": "new",
        "X-Session-Cost-USD": "0.000000",
    }
    assert d.models == ["anthropic/c1", "openai/c2", "google/c3"]


# -- the rules together -------------------------------------------------------------------------


def test_a_scripted_twelve_turn_agent_conversation(
    make_policy: MakePolicy, clock: FakeClock
) -> None:
    p, store = make_policy(classify=classify, fallback_pin_ms=60_000)
    chat = Chat("[S] the login test fails, find out why")
    turns: list[tuple[str, str]] = []

    def turn(served: str | None = None) -> None:
        d = p.begin({}, chat.request())
        turns.append((d.reason, d.model))
        p.finish(d, served_model=served or d.model, cost_micros=100)
        clock.advance(10_000)

    turn()  # 1 new
    chat.reply("looking").user("[S] show me the test file")
    turn()  # 2 pinned
    chat.reply().user("[M] explain why the token expires")
    turn()  # 3 upgraded
    chat.reply().user("[S] ok thanks")
    turn()  # 4 pinned, never down
    for _ in range(3):  # 5-7: the agent loops on the same tool result
        chat.tool_loop("FAILED tests/test_login.py::test_refresh - AssertionError")
        turn()
    chat.reply().user("[C] here is the whole log:\n" + "DEBUG refresh token...\n" * 800)
    turn()  # 8 pinned, and now cache-sticky (large context)
    chat.reply().user("[R] prove the refresh cannot race")
    turn()  # 9 cache_sticky: no upgrade while the cache is warm
    chat.reply().user("[R] and the logout path?")
    turn(served="openai/c2")  # 10 cache_sticky, served by a fallback
    chat.reply().user("[R] continue")
    turn()  # 11 the fallback pin holds
    clock.advance(60_000)
    chat.reply().user("[R] finish up")
    turn()  # 12 primary_retry: a stale fallback pin beats the sticky one
    assert turns == [
        ("new", "openai/s1"),
        ("pinned", "openai/s1"),
        ("upgraded", "anthropic/m1"),
        ("pinned", "anthropic/m1"),
        ("pinned", "anthropic/m1"),
        ("pinned", "anthropic/m1"),
        ("escalated", "anthropic/c1"),
        ("pinned", "anthropic/c1"),
        ("cache_sticky", "anthropic/c1"),
        ("cache_sticky", "anthropic/c1"),
        ("cache_sticky", "openai/c2"),
        ("primary_retry", "anthropic/c1"),
    ]
    e = store.get_session(sid_of(chat))
    assert (e.request_count, e.session_cost_micros, e.reserved_micros) == (12, 1200, 0)


def test_policy_argument_checks(make_store: Any) -> None:
    store = make_store()
    inner = getattr(store, "store", store)
    with pytest.raises(ValueError, match="budget_mode"):
        SessionPolicy(inner, TIERS, budget_mode="lenient")
    with pytest.raises(ValueError, match="profiles"):
        SessionPolicy(inner, TIERS, profiles=())
    with pytest.raises(ValueError, match="default_max_tokens"):
        SessionPolicy(inner, TIERS, default_max_tokens=0)
    with pytest.raises(ValueError, match="max_session_cost_usd"):
        SessionPolicy(inner, TIERS, max_session_cost_usd=-1)
    with pytest.raises(TypeError, match="pricing"):
        SessionPolicy(inner, TIERS, pricing={"m": (1, 2)})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        SessionPolicy(object(), TIERS)  # type: ignore[arg-type]


def test_sync_and_async_entry_points_are_not_mixed() -> None:
    from llm_sessions import AsyncSessionStore

    sync_policy = SessionPolicy(SessionStore(Config(cleanup_interval_ms=0)), TIERS)
    with pytest.raises(TypeError, match="begin"):
        import asyncio

        asyncio.run(sync_policy.abegin({}, Chat().request()))
    async_policy = SessionPolicy(AsyncSessionStore(Config(cleanup_interval_ms=0)), TIERS)
    with pytest.raises(TypeError, match="abegin"):
        async_policy.begin({}, Chat().request())


def test_session_ids_hash_like_the_reference() -> None:
    assert derive_session_id("x") == hashlib.sha256(b"x").hexdigest()
