"""The rules every store follows (README, "Semantics"), run against every store kind.

Each test uses an injected clock; none sleeps.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_sessions import STRIKE_LIMIT, Config, Entry, SessionInfo, Tier

from conftest import StoreFactory
from helpers import FakeClock

TIMEOUT = Config().timeout_ms
MODELS = {Tier.MEDIUM: "m-medium", Tier.COMPLEX: "m-complex", Tier.REASONING: "m-reasoning"}


def live_ids(store: Any) -> list[str]:
    return [s.id for s in store.get_stats().sessions]


# -- rule 1: disabled store, empty id ------------------------------------------------------


def test_disabled_store_reads_nothing_and_writes_nothing(make_store: StoreFactory) -> None:
    store = make_store(Config(enabled=False, cleanup_interval_ms=0))
    store.set_session("s", "m", Tier.SIMPLE, True)
    store.touch_session("s")
    assert store.record_request_hash("s", "h") == 0
    assert store.escalate_session("s") is None
    assert store.add_session_cost("s", 10) == 0
    store.set_cache_sticky("s", "anthropic")
    assert store.get_session("s") is None
    assert store.get_session_cost_micros("s") == 0
    assert store.get_session_cost_usd("s") == 0.0
    assert store.is_cache_sticky("s") is False
    assert store.get_stats().count == 0
    store.clear_session("s")
    store.clear_all()


def test_empty_id_reads_nothing_and_writes_nothing(store: Any) -> None:
    store.set_session("", "m")
    assert store.add_session_cost("", 5) == 0
    assert store.record_request_hash("", "h") == 0
    assert store.escalate_session("") is None
    store.touch_session("")
    store.set_cache_sticky("", "openai")
    assert store.get_session("") is None
    assert store.is_cache_sticky("") is False
    assert store.get_session_cost_micros("") == 0
    assert store.get_stats().count == 0


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("bad_id", [None, 1, b"s", ["s"]])
def test_non_str_id_raises_type_error_everywhere(
    make_store: StoreFactory, enabled: bool, bad_id: object
) -> None:
    store = make_store(Config(enabled=enabled, cleanup_interval_ms=0))
    calls = [
        lambda: store.get_session(bad_id),
        lambda: store.set_session(bad_id, "m"),
        lambda: store.touch_session(bad_id),
        lambda: store.clear_session(bad_id),
        lambda: store.record_request_hash(bad_id, "h"),
        lambda: store.escalate_session(bad_id),
        lambda: store.add_session_cost(bad_id, 1),
        lambda: store.get_session_cost_usd(bad_id),
        lambda: store.get_session_cost_micros(bad_id),
        lambda: store.set_cache_sticky(bad_id, "openai"),
        lambda: store.is_cache_sticky(bad_id),
    ]
    for call in calls:
        with pytest.raises(TypeError):
            call()


# -- rule 2: expiry ----------------------------------------------------------------------


def test_session_lives_exactly_timeout_ms(store: Any, clock: FakeClock) -> None:
    store.set_session("s", "m")
    clock.advance(TIMEOUT)
    assert store.get_session("s") is not None
    clock.advance(1)
    assert store.get_session("s") is None
    assert store.get_stats().count == 0


def test_expired_session_is_never_revived(store: Any, clock: FakeClock) -> None:
    store.set_session("s", "old", Tier.COMPLEX, True)
    store.add_session_cost("s", 500)
    store.record_request_hash("s", "h")
    store.record_request_hash("s", "h")
    store.set_cache_sticky("s", "anthropic")
    clock.advance(TIMEOUT + 1)
    # writes other than set_session/add_session_cost treat it as absent
    store.touch_session("s")
    assert store.record_request_hash("s", "h") == 0
    assert store.escalate_session("s") is None
    store.set_cache_sticky("s", "openai")
    assert store.get_session("s") is None
    assert store.is_cache_sticky("s") is False
    assert store.get_session_cost_micros("s") == 0
    # set_session starts a fresh entry: cost, strikes, explicit flag all reset
    store.set_session("s", "new", Tier.SIMPLE)
    e = store.get_session("s")
    assert e == Entry(
        "new", Tier.SIMPLE, clock.now, clock.now, 1, (), 0, False, False, False, 0, "", 0
    )


def test_add_cost_on_expired_session_starts_a_cost_only_entry(store: Any, clock: FakeClock) -> None:
    store.set_session("s", "m", Tier.MEDIUM)
    store.add_session_cost("s", 700)
    clock.advance(TIMEOUT + 1)
    assert store.add_session_cost("s", 3) == 3
    e = store.get_session("s")
    assert (e.model, e.tier, e.request_count, e.session_cost_micros) == ("", None, 0, 3)


def test_touch_extends_life(store: Any, clock: FakeClock) -> None:
    store.set_session("s", "m")
    clock.advance(TIMEOUT)
    store.touch_session("s")
    clock.advance(TIMEOUT)
    assert store.get_session("s") is not None
    clock.advance(1)
    assert store.get_session("s") is None


def test_reads_do_not_refresh_recency(store: Any, clock: FakeClock) -> None:
    store.set_session("s", "m")
    for _ in range(2):
        clock.advance(TIMEOUT // 2)
        store.get_session("s")
        store.is_cache_sticky("s")
        store.get_session_cost_micros("s")
        store.get_stats()
        store.add_session_cost("s", 1)
        store.record_request_hash("s", "h")
        store.escalate_session("s")
        store.set_cache_sticky("s", "openai")
    assert store.get_session("s").last_used_at == clock.now - TIMEOUT
    clock.advance(1)
    assert store.get_session("s") is None


# -- rule 3: set_session --------------------------------------------------------------------


def test_set_session_creates_then_counts(store: Any, clock: FakeClock) -> None:
    t0 = clock.now
    store.set_session("s", "a", Tier.SIMPLE)
    e = store.get_session("s")
    assert (e.model, e.tier, e.created_at, e.last_used_at, e.request_count) == (
        "a",
        Tier.SIMPLE,
        t0,
        t0,
        1,
    )
    clock.advance(1234)
    store.set_session("s", "a", Tier.REASONING)  # same model: tier is kept
    e = store.get_session("s")
    assert (e.model, e.tier, e.created_at, e.last_used_at, e.request_count) == (
        "a",
        Tier.SIMPLE,
        t0,
        t0 + 1234,
        2,
    )
    store.set_session("s", "b", "COMPLEX")  # a different model replaces model and tier
    e = store.get_session("s")
    assert (e.model, e.tier, e.request_count) == ("b", Tier.COMPLEX, 3)
    store.set_session("s", "c", None)
    assert store.get_session("s").tier is None


def test_user_explicit_only_goes_from_false_to_true(store: Any) -> None:
    store.set_session("s", "a")
    assert store.get_session("s").user_explicit is False
    store.set_session("s", "a", None, True)
    assert store.get_session("s").user_explicit is True
    store.set_session("s", "b", None, False)
    assert store.get_session("s").user_explicit is True


@pytest.mark.parametrize("tier", ["medium", "Medium", "", "ULTRA", 1, object()])
def test_unknown_tier_raises_value_error_and_writes_nothing(store: Any, tier: object) -> None:
    with pytest.raises(ValueError, match="tier"):
        store.set_session("s", "m", tier)
    assert store.get_session("s") is None


def test_set_session_argument_types(store: Any) -> None:
    with pytest.raises(TypeError):
        store.set_session("s", None)
    with pytest.raises(TypeError):
        store.set_session("s", "m", None, "yes")
    assert store.get_session("s") is None


# -- rule 4: touch_session ------------------------------------------------------------------


def test_touch_updates_existing_only(store: Any, clock: FakeClock) -> None:
    store.touch_session("ghost")
    assert store.get_session("ghost") is None
    store.set_session("s", "m")
    clock.advance(50)
    store.touch_session("s")
    e = store.get_session("s")
    assert (e.last_used_at, e.request_count, e.created_at) == (clock.now, 2, clock.now - 50)


# -- rule 5: record_request_hash ------------------------------------------------------------


def test_strike_limit_is_two() -> None:
    assert STRIKE_LIMIT == 2


def test_three_identical_requests_give_0_1_2(store: Any) -> None:
    store.set_session("s", "m")
    assert [store.record_request_hash("s", "h") for _ in range(3)] == [0, 1, 2]
    assert store.get_session("s").strikes == 2


def test_a_different_hash_resets_strikes(store: Any) -> None:
    store.set_session("s", "m")
    assert [store.record_request_hash("s", h) for h in "aabaa"] == [0, 1, 0, 0, 1]


def test_window_keeps_last_three_hashes(store: Any) -> None:
    store.set_session("s", "m")
    for h in ["h1", "h2", "h3", "h4"]:
        store.record_request_hash("s", h)
    assert store.get_session("s").recent_hashes == ("h2", "h3", "h4")


def test_record_on_absent_session_is_zero_and_creates_nothing(store: Any) -> None:
    assert store.record_request_hash("ghost", "h") == 0
    assert store.get_session("ghost") is None


def test_record_hash_type_check(store: Any) -> None:
    store.set_session("s", "m")
    with pytest.raises(TypeError):
        store.record_request_hash("s", 5)


# -- rule 6: escalate_session ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (Tier.SIMPLE, Tier.MEDIUM),
        (Tier.MEDIUM, Tier.COMPLEX),
        (None, Tier.COMPLEX),
        (Tier.COMPLEX, Tier.REASONING),
    ],
)
def test_escalation_goes_one_tier_up(store: Any, start: Tier | None, expected: Tier) -> None:
    store.set_session("s", "m", start)
    store.record_request_hash("s", "h")
    store.record_request_hash("s", "h")
    assert store.escalate_session("s") == expected
    e = store.get_session("s")
    assert (e.tier, e.escalated, e.strikes, e.recent_hashes, e.model) == (
        expected,
        True,
        0,
        (),
        "m",
    )


def test_escalation_takes_the_model_of_the_new_tier(store: Any) -> None:
    store.set_session("s", "m", Tier.SIMPLE)
    assert store.escalate_session("s", MODELS) == Tier.MEDIUM
    assert store.get_session("s").model == "m-medium"
    assert store.escalate_session("s", {"COMPLEX": "by-string-key"}) == Tier.COMPLEX
    assert store.get_session("s").model == "by-string-key"
    assert store.escalate_session("s", {Tier.SIMPLE: "unrelated"}) == Tier.REASONING
    assert store.get_session("s").model == "by-string-key"


def test_escalation_leaves_absent_explicit_and_top_sessions_alone(store: Any) -> None:
    assert store.escalate_session("ghost", MODELS) is None
    assert store.get_session("ghost") is None
    store.set_session("x", "mine", Tier.SIMPLE, True)
    store.record_request_hash("x", "h")
    store.record_request_hash("x", "h")
    assert store.escalate_session("x", MODELS) is None
    e = store.get_session("x")
    assert (e.model, e.tier, e.escalated, e.strikes) == ("mine", Tier.SIMPLE, False, 1)
    store.set_session("top", "big", Tier.REASONING)
    assert store.escalate_session("top", MODELS) is None
    assert store.get_session("top").escalated is False


@pytest.mark.parametrize("models", [{"ULTRA": "x"}, {None: "x"}, {Tier.SIMPLE: 3}, ["x"]])
def test_bad_models_mapping_raises(store: Any, models: Any) -> None:
    store.set_session("s", "m", Tier.SIMPLE)
    with pytest.raises((TypeError, ValueError)):
        store.escalate_session("s", models)
    assert store.get_session("s").tier == Tier.SIMPLE


# -- rule 7: add_session_cost ---------------------------------------------------------------


def test_cost_accumulates_and_reads_back(store: Any) -> None:
    store.set_session("s", "m")
    assert store.add_session_cost("s", 1_500_000) == 1_500_000
    assert store.add_session_cost("s", 250_001) == 1_750_001
    assert store.add_session_cost("s", 0) == 1_750_001
    assert store.get_session_cost_micros("s") == 1_750_001
    assert store.get_session_cost_usd("s") == pytest.approx(1.750001)
    assert str(store.get_session("s")).endswith("cost=$1.750001")


def test_cost_on_absent_session_creates_a_cost_only_entry(store: Any, clock: FakeClock) -> None:
    assert store.add_session_cost("c", 42) == 42
    assert store.get_session("c") == Entry(
        "", None, clock.now, clock.now, 0, (), 0, False, False, False, 0, "", 42
    )
    assert store.get_stats().count == 1
    store.set_session("c", "m", Tier.SIMPLE)  # a later pin keeps the cost
    e = store.get_session("c")
    assert (e.model, e.request_count, e.session_cost_micros) == ("m", 1, 42)


@pytest.mark.parametrize(
    ("micros", "error"),
    [(-1, ValueError), (1.5, TypeError), (True, TypeError), (False, TypeError), ("3", TypeError)],
)
def test_bad_costs_raise_and_change_nothing(store: Any, micros: object, error: type) -> None:
    store.add_session_cost("s", 7)
    with pytest.raises(error):
        store.add_session_cost("s", micros)
    assert store.get_session_cost_micros("s") == 7


def test_large_costs_stay_exact(store: Any) -> None:
    big = 2**62
    store.add_session_cost("s", big)
    assert store.add_session_cost("s", 1) == big + 1


# -- rule 8: cache stickiness ---------------------------------------------------------------


def test_cache_sticky_first_call_wins(store: Any, clock: FakeClock) -> None:
    store.set_cache_sticky("ghost", "anthropic")
    assert store.get_session("ghost") is None
    store.set_session("s", "anthropic/claude")
    e = store.get_session("s")
    assert (e.cache_sticky, e.cache_sticky_at, e.provider) == (False, 0, "")
    store.set_cache_sticky("s", "anthropic")
    t = clock.now
    clock.advance(10)
    store.set_cache_sticky("s", "vllm")
    e = store.get_session("s")
    assert (e.cache_sticky, e.cache_sticky_at, e.provider) == (True, t, "anthropic")


@pytest.mark.parametrize(
    ("provider", "ttl"), [("anthropic", 300_000), ("vllm", 600_000), ("x", 300_000)]
)
def test_cache_sticky_lasts_the_provider_ttl_from_last_use(
    store: Any, clock: FakeClock, provider: str, ttl: int
) -> None:
    store.set_session("s", "m")
    assert store.is_cache_sticky("s") is False
    store.set_cache_sticky("s", provider)
    clock.advance(ttl)
    assert store.is_cache_sticky("s") is True
    clock.advance(1)
    assert store.is_cache_sticky("s") is False
    store.touch_session("s")  # a touch renews a lapsed window while the session lives
    assert store.is_cache_sticky("s") is True


def test_cache_ttl_overrides_apply(make_store: StoreFactory, clock: FakeClock) -> None:
    store = make_store(
        Config(
            cleanup_interval_ms=0,
            timeout_ms=7_200_000,
            cache_ttl_ms={"anthropic": 3_600_000, "mine": 5},
        )
    )
    store.set_session("a", "m")
    store.set_cache_sticky("a", "anthropic")
    store.set_session("b", "m")
    store.set_cache_sticky("b", "mine")
    clock.advance(6)
    assert (store.is_cache_sticky("a"), store.is_cache_sticky("b")) == (True, False)
    clock.advance(3_600_000 - 6)
    assert store.is_cache_sticky("a") is True


def test_set_cache_sticky_type_check(store: Any) -> None:
    store.set_session("s", "m")
    with pytest.raises(TypeError):
        store.set_cache_sticky("s", None)
    assert store.get_session("s").cache_sticky is False


# -- rule 9: stats --------------------------------------------------------------------------


def test_stats_count_cut_sort_age_and_limit(store: Any, clock: FakeClock) -> None:
    store.set_session("zeta-session-long", "mz")
    clock.advance(2_500)
    store.set_session("alpha", "ma")
    store.set_session("alpha-session-long", "mb")
    clock.advance(1_000)
    stats = store.get_stats()
    assert stats.count == 3
    assert stats.sessions == [
        SessionInfo("alpha", "ma", 1),
        SessionInfo("alpha-se...", "mb", 1),
        SessionInfo("zeta-ses...", "mz", 3),
    ]
    assert stats.to_dict() == {
        "count": 3,
        "sessions": [
            {"id": "alpha", "model": "ma", "age": 1},
            {"id": "alpha-se...", "model": "mb", "age": 1},
            {"id": "zeta-ses...", "model": "mz", "age": 3},
        ],
    }
    json.dumps(stats.to_dict())
    assert [s.id for s in store.get_stats(limit=2).sessions] == ["alpha", "alpha-se..."]
    assert store.get_stats(limit=2).count == 3
    assert store.get_stats(limit=0).sessions == []
    with pytest.raises(ValueError):
        store.get_stats(limit=-1)


def test_stats_skip_expired(store: Any, clock: FakeClock) -> None:
    store.set_session("old", "m")
    clock.advance(TIMEOUT)
    store.set_session("new", "m")
    clock.advance(1)
    assert live_ids(store) == ["new"]
    assert store.get_stats().count == 1


def test_clear_session_and_clear_all(store: Any) -> None:
    for sid in ["a", "b", "c"]:
        store.set_session(sid, "m")
    store.clear_session("b")
    store.clear_session("never-existed")
    assert live_ids(store) == ["a", "c"]
    store.clear_all()
    assert store.get_stats().count == 0
    assert store.get_session("a") is None


# -- rule 10: snapshots ---------------------------------------------------------------------


def test_snapshots_are_immutable_and_detached(store: Any) -> None:
    store.set_session("s", "m", Tier.SIMPLE)
    store.record_request_hash("s", "h")
    e = store.get_session("s")
    with pytest.raises(AttributeError):
        e.model = "x"  # type: ignore[misc]
    stats = store.get_stats()
    stats.sessions.clear()
    store.set_session("s", "other", Tier.COMPLEX)
    assert e.model == "m"  # an old snapshot does not follow later writes
    assert store.get_stats().count == 1
    assert store.get_session("s").model == "other"


def test_entry_string_and_dict(store: Any, clock: FakeClock) -> None:
    store.set_session("s", "anthropic/claude-sonnet-4.6", Tier.COMPLEX, True)
    store.add_session_cost("s", 1_234_567)
    store.record_request_hash("s", "abc")
    e = store.get_session("s")
    assert str(e) == (
        "model=anthropic/claude-sonnet-4.6 tier=COMPLEX reqs=1 strikes=0 "
        "explicit=true cost=$1.234567"
    )
    assert e.to_dict() == {
        "model": "anthropic/claude-sonnet-4.6",
        "tier": "COMPLEX",
        "created_at": clock.now,
        "last_used_at": clock.now,
        "request_count": 1,
        "recent_hashes": ["abc"],
        "strikes": 0,
        "escalated": False,
        "user_explicit": True,
        "cache_sticky": False,
        "cache_sticky_at": 0,
        "provider": "",
        "session_cost_micros": 1_234_567,
    }
    assert json.loads(json.dumps(e.to_dict())) == e.to_dict()
    store.add_session_cost("c", 5)
    assert (
        str(store.get_session("c")) == "model= tier= reqs=0 strikes=0 explicit=false cost=$0.000005"
    )


# -- ids that are awkward as keys ----------------------------------------------------------


AWKWARD_IDS = [
    "a:b",
    "{tag}",
    "}{",
    "nul\x00inside",
    "\x00",
    "x" * 10_240,
    "x" * 10_241,
    "Ünïcödé 会话 🚀",
    "*",
    "llm-sessions:abc",
    " padded ",
]


def test_awkward_ids_round_trip_without_colliding(store: Any) -> None:
    for i, sid in enumerate(AWKWARD_IDS):
        store.set_session(sid, f"model-{i}")
        store.add_session_cost(sid, i + 1)
    for i, sid in enumerate(AWKWARD_IDS):
        e = store.get_session(sid)
        assert (e.model, e.session_cost_micros) == (f"model-{i}", i + 1), sid
    assert store.get_stats().count == len(AWKWARD_IDS)
    cut = {s.id for s in store.get_stats().sessions}
    assert "nul\x00insi..." in cut
    assert "Ünïcödé ..." in cut


# -- transact: the atomic step the routing flow is built on ---------------------------------


def test_transact_sees_live_entries_and_writes_what_it_returns(
    store: Any, clock: FakeClock
) -> None:
    seen: list[Any] = []

    def create(entry: Entry | None, now: int) -> tuple[Entry | None, str]:
        seen.append((entry, now))
        new = Entry("m", Tier.MEDIUM, now, now, 1, (), 0, False, False, False, 0, "", 99)
        return new, "created"

    assert store.transact("s", create) == "created"
    assert seen == [(None, clock.now)]
    assert store.get_session("s").session_cost_micros == 99

    def read_only(entry: Entry | None, now: int) -> tuple[Entry | None, int]:
        assert entry is not None
        return entry, entry.request_count

    assert store.transact("s", read_only) == 1
    clock.advance(TIMEOUT + 1)
    assert store.transact("s", lambda e, now: (e, e)) is None


def test_flow_state_round_trips_and_reservations_expire(store: Any, clock: FakeClock) -> None:
    from llm_sessions import FlowState, Reservation

    flow = FlowState(
        reservations=(
            Reservation("r1", 500, clock.now + 1_000),
            Reservation("r2", 7, clock.now + 5),
        ),
        explicit_model="mine/model ü",
        fallback_from="a/primary",
        fallback_at=clock.now - 3,
        sticky_ttl_ms=3_600_000,
        failed_fingerprint="f" * 32,
    )
    written = Entry(
        "m", Tier.COMPLEX, clock.now, clock.now, 2, ("h1", "h2"), 1, True, True, True,
        clock.now, "anthropic", 99, flow,
    )  # fmt: skip
    assert store.transact("s", lambda e, now: (written, "ok")) == "ok"
    assert store.get_session("s") == written
    assert store.get_session("s").reserved_micros == 507
    clock.advance(5)  # r2 expires: readers never see it
    assert store.get_session("s").flow.reservations == (flow.reservations[0],)
    assert store.get_session("s").reserved_micros == 500
    seen: list[Any] = []
    store.transact("s", lambda e, now: (e, seen.append(e)))
    assert seen[0].reserved_micros == 500
    store.add_session_cost("s", 1)  # core writes keep the flow state
    store.touch_session("s")
    assert store.get_session("s").flow.explicit_model == "mine/model ü"


# -- links: names that lead to a session (a response id to the session that made it) -------


def _touch(entry: Entry | None, now: int) -> tuple[Entry | None, None]:
    if entry is None:
        return Entry("m", Tier.MEDIUM, now, now, 1, (), 0, False, False, False, 0, "", 0), None
    return entry._replace(last_used_at=now, request_count=entry.request_count + 1), None


def test_links_are_written_with_the_session_and_resolved(store: Any, clock: FakeClock) -> None:
    assert store.resolve_link("t:resp_1") is None
    store.transact("t:s", _touch, links={"t:resp_1": "to s", "t:conv": "also s"})
    assert store.resolve_link("t:resp_1") == "to s"
    assert store.resolve_link("t:conv") == "also s"
    assert store.resolve_link("u:resp_1") is None  # another scope's name is another name
    # links never show up as sessions
    assert live_ids(store) == ["t:s"]
    assert [row.id for row in store.list_sessions("t").sessions] == ["s"]
    assert [row.id for row in store.list_sessions(None).sessions] == ["s"]


def test_links_are_not_written_without_a_write(store: Any) -> None:
    store.transact("s", lambda e, now: (e, None), links={"r": "x"})  # no session: no write
    assert store.resolve_link("r") is None
    store.transact("s", _touch)
    store.transact("s", lambda e, now: (e, None), links={"r": "x"})  # unchanged: no write
    assert store.resolve_link("r") is None
    store.transact("s", lambda e, now: (None, None), links={"r": "x"})  # deleted: no link
    assert store.resolve_link("r") is None


def test_a_link_lives_the_session_timeout_from_its_last_write(store: Any, clock: FakeClock) -> None:
    """A use never renews a link: it lives no longer than the session it was written with
    (which that write renewed too)."""
    store.transact("s", _touch, links={"r": "x"})
    clock.advance(TIMEOUT // 2)
    assert store.resolve_link("r") == "x"
    clock.advance(TIMEOUT // 2)
    assert store.resolve_link("r") == "x"  # at exactly the timeout it lives
    clock.advance(1)
    assert store.resolve_link("r") is None
    store.transact("s", _touch, links={"r": "y"})  # written again: back, with a new value
    assert store.resolve_link("r") == "y"


def test_links_outlive_nothing_the_session_does_not(store: Any, clock: FakeClock) -> None:
    """A link is written with its session and lives as long from then, so a session that
    expires takes every link written with it along."""
    store.transact("s", _touch, links={"r1": "x"})
    clock.advance(10)
    store.transact("s", _touch, links={"r2": "x"})
    clock.advance(TIMEOUT + 1)
    assert store.get_session("s") is None
    assert store.resolve_link("r1") is None and store.resolve_link("r2") is None


def test_clear_all_removes_links(store: Any) -> None:
    store.transact("s", _touch, links={"r": "x"})
    store.clear_all()
    assert store.resolve_link("r") is None


def test_link_argument_checks(store: Any) -> None:
    with pytest.raises(TypeError):
        store.resolve_link(5)
    with pytest.raises(TypeError):
        store.transact("s", _touch, links={"r": 5})
    assert store.get_session("s") is None  # a bad link writes nothing
