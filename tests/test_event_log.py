"""Each session's event log (`transact`'s `event`, `get_events`), on every store kind:
bounded to `Config.events_kept`, written in the transaction's own write, expiring and
deleted with its session, started afresh by a new session."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_sessions import Config, Entry, RedisSessionStore, SessionStore, Tier

from conftest import StoreFactory
from helpers import FakeClock
from redis_server import CountingConnection, RedisServer

TIMEOUT = 60_000
CFG = Config(timeout_ms=TIMEOUT, cleanup_interval_ms=0, events_kept=5)


def bump(entry: Entry | None, now: int) -> tuple[Entry | None, int]:
    """A transition that creates the session or counts one more request on it."""
    if entry is None:
        new = Entry("m", Tier.SIMPLE, now, now, 1, (), 0, False, False, False, 0, "", 0)
    else:
        new = entry._replace(last_used_at=now, request_count=entry.request_count + 1)
    return new, new.request_count


def keep(entry: Entry | None, now: int) -> tuple[Entry | None, None]:
    return entry, None


def drop(entry: Entry | None, now: int) -> tuple[Entry | None, None]:
    return None, None


def numbered(old: Entry | None, new: Entry | None, result: Any, now: int) -> str:
    return json.dumps({"n": result, "new": old is None})


def test_the_log_keeps_the_newest_events_in_order(make_store: StoreFactory) -> None:
    store = make_store(CFG)
    for _ in range(8):
        store.transact("s", bump, event=numbered)
    events = [json.loads(e) for e in store.get_events("s")]
    assert [e["n"] for e in events] == [4, 5, 6, 7, 8]  # the bound: the 5 newest
    assert store.get_events("other") == []


def test_a_transaction_that_changes_nothing_still_logs_its_event(
    make_store: StoreFactory,
) -> None:
    """A refused turn writes nothing but its event; without a session there is no log."""
    store = make_store(CFG)
    store.transact("s", keep, event=lambda o, n, r, t: "refused")
    assert store.get_events("s") == []
    assert store.get_session("s") is None
    store.transact("s", bump, event=numbered)
    before = store.get_session("s")
    store.transact("s", keep, event=lambda o, n, r, t: "refused")
    assert store.get_events("s")[-1] == "refused"
    assert store.get_session("s") == before
    store.transact("s", keep, event=lambda o, n, r, t: None)
    assert len(store.get_events("s")) == 2


def test_the_log_expires_with_its_session_and_a_new_one_starts_afresh(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    store = make_store(CFG)
    store.transact("s", bump, event=numbered)
    clock.advance(TIMEOUT - 1)
    store.touch_session("s")  # a write of the reference API keeps the log alive too
    clock.advance(TIMEOUT - 1)
    assert len(store.get_events("s")) == 1
    clock.advance(2)
    assert store.get_events("s") == []
    store.transact("s", bump, event=numbered)
    assert [json.loads(e) for e in store.get_events("s")] == [{"n": 1, "new": True}]


def test_the_log_goes_with_its_session(make_store: StoreFactory) -> None:
    store = make_store(CFG)
    for sid in ("a", "b", "c"):
        store.transact(sid, bump, event=numbered)
    store.clear_session("a")
    assert store.get_events("a") == []
    store.transact("b", drop, event=numbered)  # a transaction deleting the session
    assert store.get_events("b") == []
    assert len(store.get_events("c")) == 1
    store.set_session("b", "m")  # a new session by the reference API: an empty log
    assert store.get_events("b") == []
    store.clear_all()
    assert store.get_events("c") == []


def test_listing_is_not_confused_by_the_logs(make_store: StoreFactory) -> None:
    store = make_store(CFG)
    for sid in ("a", "b"):
        store.transact(sid, bump, event=numbered)
    assert store.get_stats().count == 2
    assert sorted(r.id for r in store.list_sessions("", limit=10).sessions) == ["a", "b"]


def test_no_log_is_kept_when_events_kept_is_zero(make_store: StoreFactory) -> None:
    store = make_store(Config(cleanup_interval_ms=0, events_kept=0))
    store.transact("s", bump, event=numbered)
    assert store.get_events("s") == []
    with pytest.raises(TypeError):
        store.transact("s", bump, event="not callable")
    with pytest.raises(TypeError):
        store.get_events(1)


@pytest.mark.parametrize("kept", [-1, 10_001, 1.5, True])
def test_events_kept_out_of_range_is_refused(kept: Any) -> None:
    with pytest.raises(ValueError, match="events_kept"):
        Config(events_kept=kept)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kept=st.integers(1, 6),
    steps=st.lists(st.sampled_from(["bump", "keep", "drop", "quiet"]), min_size=1, max_size=14),
)
def test_the_log_matches_a_model_of_it(
    make_store: StoreFactory, kept: int, steps: list[str]
) -> None:
    """Any mix of writes, unchanged transactions, deletions and silent writes: the log
    is the last `kept` events written since the session was last created."""
    store = make_store(Config(cleanup_interval_ms=0, events_kept=kept))
    store.clear_all()
    model: list[str] | None = None
    for i, step in enumerate(steps):
        fn = {"bump": bump, "keep": keep, "drop": drop, "quiet": bump}[step]
        text = None if step == "quiet" else f"e{i}"
        store.transact("s", fn, event=lambda o, n, r, now, t=text: t)
        if step == "drop" or (step == "keep" and model is None):
            model = None
            continue
        model = [] if model is None else model
        if text is not None:
            model = (model + [text])[-kept:]
    assert store.get_events("s") == (model or [])


def test_memory_logs_are_bounded_in_bytes_oldest_logs_first(clock: FakeClock) -> None:
    event = "x" * 436  # 500 bytes with its overhead
    store = SessionStore(CFG, clock=clock, event_bytes=2_000)
    for sid in ("a", "b", "c"):
        store.transact(sid, bump, event=lambda o, n, r, t: event)
        clock.advance(1)
    store.transact("a", bump, event=lambda o, n, r, t: event)  # a: appended to last
    store.transact("c", bump, event=lambda o, n, r, t: event)  # 5 events: b's goes
    assert [len(store.get_events(s)) for s in "abc"] == [2, 0, 2]
    assert store._events.bytes == 2_000
    store.clear_session("a")
    assert store._events.bytes == 1_000
    with pytest.raises(ValueError, match="event_bytes"):
        SessionStore(CFG, event_bytes=-1)


def test_the_event_rides_in_the_compare_and_set(redis_server: RedisServer) -> None:
    """A steady-state transaction with an event is still one round trip: the event goes
    in the compare-and-set, and the log lives on the session's hash tag."""
    pool = redis.ConnectionPool(port=redis_server.port, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    client.flushall()
    store = RedisSessionStore(client, CFG)
    try:
        store.transact("s", bump, event=numbered)  # created: a read first
        for _ in range(3):
            before = CountingConnection.sends
            store.transact("s", bump, event=numbered)
            assert CountingConnection.sends - before == 1
        before = CountingConnection.sends
        store.transact("s", keep, event=lambda o, n, r, t: "refused")  # the event alone
        assert CountingConnection.sends - before == 1
        key, log = store.key("s"), store._ops.events_key("s")
        assert log.startswith(key) and key[key.index("{") :] in log
        assert client.type(log) == b"list" and client.llen(log) == 5
        assert 0 < client.pttl(log) <= client.pttl(key) + 5
    finally:
        store.close()
        pool.disconnect()


# -- the flow's events: one per turn, what the timeline shows -------------------------------


def test_the_flow_logs_each_turn_with_its_outcome(make_policy: Any) -> None:
    """A loop that escalates, a fallback that serves, a failed turn, a refusal and a
    repeated finish (logged once): the session's events say each, in order."""
    from llm_sessions import BudgetExceeded, Pricing

    from conftest import TIERS

    prices = {m: Pricing(1, 1) for t in TIERS.values()
              for m in [t["primary"], *t["fallback"]]}  # fmt: skip
    policy, _ = make_policy(pricing=prices, max_session_cost_usd=0.05, fit_output=False)
    headers = {"x-session-id": "s"}
    same = {"messages": [{"role": "user", "content": "again"}], "max_tokens": 10}
    extra = {"api": "chat", "status": 200}
    for _ in range(3):  # the third identical turn escalates
        d = policy.begin(headers, same)
        policy.finish(d, served_model=d.model, cost_micros=1_000, event=extra)
    d = policy.begin(headers, {"messages": [{"role": "user", "content": "other"}],
                               "max_tokens": 10})  # fmt: skip
    policy.finish(d, served_model=d.fallbacks[0], cost_micros=2_000, event=extra)
    policy.finish(d, served_model=d.fallbacks[0], cost_micros=2_000, event=extra)  # repeated
    d = policy.begin(headers, same)
    policy.finish(d, served_model=None, event={"status": 502})
    with pytest.raises(BudgetExceeded):
        policy.begin(headers, {**same, "max_tokens": 100_000}, event={"api": "messages"})
    log = policy.events("s")
    assert [e["reason"] for e in log] == [
        "new", "pinned", "escalated", "fallback", "pinned", "refused"
    ]  # fmt: skip
    assert [e["outcome"] for e in log] == ["served"] * 4 + ["failed", "refused"]
    assert [e["strikes_before"] for e in log[:3]] == [0, 0, 1]  # repeats of the first
    assert [e["strikes_after"] for e in log[:3]] == [0, 1, 0]  # escalating resets them
    assert [e["cost_micros"] for e in log] == [1_000, 1_000, 1_000, 2_000, 0, 0]
    assert [e["total_micros"] for e in log] == [1_000, 2_000, 3_000, 5_000, 5_000, 5_000]
    assert log[2]["tier"] != log[1]["tier"] and log[3]["model"] != log[3]["decided"]
    assert all("decided" not in e for e in log if e["reason"] != "fallback")
    assert log[0]["api"] == "chat" and log[4]["status"] == 502 and log[5]["api"] == "messages"
    assert log[5]["cap_micros"] == 50_000 and log[5]["requested_micros"] > 45_000
    assert [e["at"] for e in log] == sorted(e["at"] for e in log)
    assert policy.events("s", scope="another tenant") == []


def test_on_event_hears_each_logged_turn_once(make_policy: Any) -> None:
    heard: list[tuple[str, str, str]] = []
    policy, _ = make_policy(on_event=lambda scope, sid, e: heard.append((scope, sid, e["reason"])))
    body = {"messages": [{"role": "user", "content": "hi"}]}
    d = policy.begin({"x-session-id": "s"}, body, scope="acme")
    policy.finish(d, served_model=d.model, cost_micros=1)
    policy.finish(d, served_model=d.model, cost_micros=1)  # repeated: nothing new logged
    assert heard == [("acme", "s", "new")]
    assert [e["reason"] for e in policy.events("s", scope="acme")] == ["new"]


def test_a_failing_listener_never_fails_the_turn(make_policy: Any) -> None:
    def broken(scope: str, sid: str, event: dict[str, Any]) -> None:
        raise RuntimeError("listener down")

    policy, _ = make_policy(on_event=broken)
    d = policy.begin({"x-session-id": "s"}, {"messages": [{"role": "user", "content": "hi"}]})
    assert policy.finish(d, served_model=d.model, cost_micros=7) == 7
    assert len(policy.events("s")) == 1
    with pytest.raises(TypeError, match="on_event"):
        make_policy(on_event="not callable")
