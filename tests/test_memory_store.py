"""What only the in-memory store must do: bound its memory, expire without a full scan,
run and stop its cleanup thread, and stay exact under threads."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_sessions import Config, Entry, SessionStore, Tier, monotonic_wall_clock, session_key
from llm_sessions.ids import key_scope
from llm_sessions.stores.memory_links import LINK_OVERHEAD, SCOPE_OVERHEAD, SESSION_OVERHEAD

from helpers import FakeClock

TIMEOUT = 1_000


def cfg(**kw: int) -> Config:
    return Config(**{"cleanup_interval_ms": 0, "timeout_ms": TIMEOUT, **kw})  # type: ignore[arg-type]


def test_bound_evicts_the_least_recently_used(clock: FakeClock) -> None:
    store = SessionStore(cfg(max_sessions=3), clock=clock)
    for sid in ["a", "b", "c"]:
        store.set_session(sid, "m")
        clock.advance(10)
    store.touch_session("a")  # b is now the least recently used
    store.get_session("b")  # reads do not count as use
    store.add_session_cost("b", 1)
    store.set_session("d", "m")
    assert [s.id for s in store.get_stats().sessions] == ["a", "c", "d"]
    assert len(store) == 3


def test_bound_drops_expired_sessions_first(clock: FakeClock) -> None:
    store = SessionStore(cfg(max_sessions=3), clock=clock)
    store.set_session("old1", "m")
    store.set_session("old2", "m")
    clock.advance(TIMEOUT + 1)
    store.set_session("live", "m")
    store.set_session("new", "m")
    assert len(store) == 2
    assert [s.id for s in store.get_stats().sessions] == ["live", "new"]


def test_memory_is_bounded_whatever_ids_arrive(clock: FakeClock) -> None:
    store = SessionStore(cfg(max_sessions=100), clock=clock)
    for i in range(5_000):
        store.add_session_cost(f"attacker-{i}", 1)
        store.set_session(f"x{i}", "m")
    assert len(store) == 100
    assert store.get_stats().count == 100


def test_expire_removes_only_what_expired(clock: FakeClock) -> None:
    store = SessionStore(cfg(max_sessions=10_000), clock=clock)
    for i in range(1_000):
        store.set_session(f"old{i}", "m")
    clock.advance(TIMEOUT // 2)
    for i in range(10):
        store.set_session(f"new{i}", "m")
    clock.advance(TIMEOUT // 2 + 1)
    assert store.expire() == 1_000
    assert len(store) == 10
    assert store.expire() == 0


def test_cleanup_thread_sweeps_and_stops_on_close(clock: FakeClock) -> None:
    store = SessionStore(Config(cleanup_interval_ms=5, timeout_ms=TIMEOUT), clock=clock)
    thread = store._thread
    assert thread is not None and thread.daemon and thread.is_alive()
    store.set_session("s", "m")
    clock.advance(TIMEOUT + 1)
    deadline = time.monotonic() + 10
    while len(store) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(store) == 0
    store.close()
    assert not thread.is_alive()
    store.close()  # idempotent


def test_no_thread_when_disabled_or_interval_zero() -> None:
    assert SessionStore(Config(enabled=False))._thread is None
    assert SessionStore(Config(cleanup_interval_ms=0))._thread is None


def test_context_manager_closes() -> None:
    with SessionStore(Config(cleanup_interval_ms=50)) as store:
        thread = store._thread
        store.set_session("s", "m")
    assert thread is not None and not thread.is_alive()


def test_a_dropped_store_is_freed_and_its_thread_ends() -> None:
    store = SessionStore(Config(cleanup_interval_ms=1))
    thread = store._thread
    ref = weakref.ref(store)
    del store
    gc.collect()
    assert ref() is None
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive()


def test_exact_cost_under_eight_threads() -> None:
    store = SessionStore(cfg())
    ids = ["s1", "s2", "s3"]
    barrier = threading.Barrier(8)

    def work(t: int) -> None:
        barrier.wait()
        for i in range(5_000):
            store.add_session_cost(ids[(t + i) % 3], i % 5 + 1)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(store.get_session_cost_micros(s) for s in ids) == 8 * sum(
        i % 5 + 1 for i in range(5_000)
    )


def test_concurrent_mixed_operations_never_raise() -> None:
    store = SessionStore(Config(cleanup_interval_ms=1, max_sessions=50))
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(3_000):
                sid = f"s{(t * 7 + i) % 80}"
                store.set_session(sid, f"m{i % 3}", Tier.SIMPLE)
                store.get_session(sid)
                store.touch_session(sid)
                store.record_request_hash(sid, "h" if i % 2 else "g")
                store.escalate_session(sid)
                store.set_cache_sticky(sid, "openai")
                store.is_cache_sticky(sid)
                if i % 100 == 0:
                    store.get_stats(limit=5)
                    store.expire()
        except BaseException as exc:  # pragma: no cover - the assertion reports it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    store.close()
    assert errors == []
    assert len(store) <= 50


def test_huge_ids_and_contents() -> None:
    store = SessionStore(cfg())
    huge = "i" * 1_000_000
    store.set_session(huge, "m")
    assert store.get_session(huge).model == "m"
    assert store.get_stats().sessions[0].id == "iiiiiiii..."
    assert store.record_request_hash(huge, "x" * 10_000_000) == 0


def test_default_clock_ignores_wall_clock_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = monotonic_wall_clock()
    start = clock()
    assert abs(start - time.time() * 1000) < 1_000
    monkeypatch.setattr(time, "time_ns", lambda: 0)
    monkeypatch.setattr(time, "time", lambda: 0.0)
    assert clock() >= start
    store = SessionStore(cfg())
    store.set_session("s", "m")
    assert store.get_session("s") is not None


# -- the scope index stays exactly in step with the sessions ---------------------------------------

_SCOPES = st.sampled_from(["", "acme", "a:b", "b%c"])
_IDS = st.sampled_from(["s1", "s2", "x:y", "z%"])
_OPS = st.lists(
    st.tuples(st.sampled_from(["set", "cost", "clear", "delete", "advance", "get", "expire",
                               "link", "resolve"]),
              _SCOPES, _IDS),
    max_size=60,
)  # fmt: skip


@settings(max_examples=200)
@given(_OPS)
def test_the_scope_index_matches_the_sessions(ops: list[tuple[str, str, str]]) -> None:
    from helpers import FakeClock

    clock = FakeClock()
    store = SessionStore(
        Config(max_sessions=5, timeout_ms=1000, cleanup_interval_ms=0),
        clock=clock,
        link_bytes=4 * (LINK_OVERHEAD + 20) + 2 * (SCOPE_OVERHEAD + SESSION_OVERHEAD),
    )
    for op, scope, sid in ops:
        key = session_key(sid, scope)
        if op == "set":
            store.set_session(key, "m")
        elif op == "cost":
            store.add_session_cost(key, 1)
        elif op == "clear":
            store.clear_session(key)
        elif op == "delete":
            store.transact(key, lambda e, now: (None, None))
        elif op == "advance":
            clock.advance(600)
        elif op == "get":
            store.get_session(key)
        elif op == "link":  # a name another scope's session may have written before
            store.transact(key, lambda e, now: (_touch(e, now)[0], None), links={sid: key})
        elif op == "resolve":
            assert store.resolve_link(sid) in (None, *(session_key(sid, s) for s in _SCOPES_ALL))
        else:
            store.expire()
        _check_links(store)
        indexed = {k for keys in store._scopes.values() for k in keys}
        assert indexed == {k for k in store._entries if key_scope(k)}  # the scoped ones
        assert all(key_scope(k) == s for s, keys in store._scopes.items() for k in keys)
        assert all(store._scopes.values())  # no empty sets kept
        for s in ("", "acme", "a:b", "b%c"):
            listed = {row.id for row in store.list_sessions(s, limit=100).sessions}
            live = {
                sid for sid in ("s1", "s2", "x:y", "z%")
                if store.get_session(session_key(sid, s)) is not None
            }  # fmt: skip
            assert listed == live
    store.clear_all()
    assert store._scopes == {}
    assert store._links.bytes == 0 and len(store._links) == 0


_SCOPES_ALL = ("", "acme", "a:b", "b%c")


def _check_links(store: SessionStore) -> None:
    """The links' indexes agree with each other, their byte count and the sessions."""
    links = store._links
    held = links._held
    overheads = SCOPE_OVERHEAD * len(links._scopes) + SESSION_OVERHEAD * len(links._sessions)
    assert links.bytes == sum(h.cost for h in held.values()) + overheads <= links.budget
    assert {n for names in links._scopes.values() for n in names} == set(held)
    assert {n for names in links._sessions.values() for n in names} == set(held)
    assert all(links._scopes.values()) and all(links._sessions.values())
    for scope, names in links._scopes.items():
        sessions = {held[n].session for n in names}
        assert links._scope_bytes[scope] == (
            sum(held[n].cost for n in names) + SCOPE_OVERHEAD + SESSION_OVERHEAD * len(sessions)
        )
    for session, names in links._sessions.items():
        assert session in store._entries  # a link never outlives its session
        assert all(held[n][2] == session for n in names)


# -- links: bounded in bytes, fair across tenants, gone with their session ------------------


def _touch(entry: Entry | None, now: int) -> tuple[Entry | None, None]:
    if entry is None:
        return Entry("m", Tier.MEDIUM, now, now, 1, (), 0, False, False, False, 0, "", 0), None
    return entry._replace(last_used_at=now), None


def _write_links(store: SessionStore, tenant: str, start: int, count: int) -> list[str]:
    """`count` turns of `tenant`, each linking a response id and its owner record, as the
    routing flow does; returns the response links' names in the order written."""
    names = []
    for i in range(start, start + count):
        key = session_key(f"s{i % 7}", tenant)
        name = session_key(f"response:resp_{i:032x}", tenant)
        value = f'["{key}", "upstream", 12345, "", 1700000000000]'
        store.transact(key, _touch, links={name: value, f"owner:{tenant}{i:034x}": "f" * 32})
        names.append(name)
    return names


def test_links_hold_no_more_memory_than_their_bound(clock: FakeClock) -> None:
    """The bound is in bytes of memory, measured: what the links hold once far more were
    written than fit stays within `link_bytes`, and uses most of it (the per-link overhead
    counted is what Python holds, not a guess many times too large)."""
    budget = 4 << 20
    store = SessionStore(cfg(max_sessions=1_000, timeout_ms=10**9), clock=clock, link_bytes=budget)
    for tenant in ("a", "b", "c"):
        _write_links(store, tenant, 0, 1)  # the sessions, before measuring
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for tenant in ("a", "b", "c"):
            _write_links(store, tenant, 1, 5_000)  # 30,000 links: about 3x what fits
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert store.resolve_link(session_key(f"response:resp_{5_000:032x}", "c")) is not None
    assert store.resolve_link(session_key(f"response:resp_{1:032x}", "a")) is None  # evicted
    assert budget // 2 < used <= budget


def test_a_tenant_flooding_links_evicts_its_own_not_anothers(clock: FakeClock) -> None:
    store = SessionStore(cfg(max_sessions=1_000, timeout_ms=10**9), clock=clock, link_bytes=1 << 20)
    quiet = _write_links(store, "quiet", 0, 100)
    flood = _write_links(store, "flood", 0, 20_000)
    assert all(store.resolve_link(name) is not None for name in quiet)
    assert store.resolve_link(flood[-1]) is not None
    assert store.resolve_link(flood[0]) is None
    # two tenants writing as fast as they can end up with a share each
    other = _write_links(store, "other", 0, 20_000)
    kept = [sum(store.resolve_link(n) is not None for n in names) for names in (flood, other)]
    assert all(store.resolve_link(name) is not None for name in quiet)
    assert min(kept) > 0.8 * max(kept)


def test_links_go_with_their_session(clock: FakeClock) -> None:
    """Deleted, evicted at `max_sessions` or expired and replaced: a session's links are
    gone with it, memory included, and a new session under the same id has none of them."""
    store = SessionStore(cfg(max_sessions=2), clock=clock)
    store.transact("t:a", _touch, links={"t:r1": "a", "owner:1": "x"})
    store.transact("t:b", _touch, links={"t:r2": "b"})
    store.clear_session("t:a")
    assert store.resolve_link("t:r1") is None and store.resolve_link("owner:1") is None
    store.transact("t:a", _touch)  # a new session under the id: the old links stay gone
    assert store.resolve_link("t:r1") is None
    store.transact("t:c", _touch, links={"t:r3": "c"})  # evicts t:b, the least recent
    assert store.get_session("t:b") is None and store.resolve_link("t:r2") is None
    assert store.resolve_link("t:r3") == "c"
    clock.advance(TIMEOUT + 1)
    store.transact("t:c", _touch)  # expired, and made anew
    assert store.resolve_link("t:r3") is None
    assert store._links.bytes == 0 and len(store._links) == 0


def test_a_link_written_again_by_another_session_moves_to_it(clock: FakeClock) -> None:
    """A conversation continued from another session: its link now leads there, and lives
    (and goes) with that session, not the first."""
    store = SessionStore(cfg(), clock=clock)
    store.transact("a", _touch, links={"conv": "a"})
    store.transact("b", _touch, links={"conv": "b"})
    store.clear_session("a")
    assert store.resolve_link("conv") == "b"
    store.clear_session("b")
    assert store.resolve_link("conv") is None


def test_link_bytes_is_checked() -> None:
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="link_bytes"):
            SessionStore(cfg(), link_bytes=bad)  # type: ignore[arg-type]


def test_links_of_many_tenants_hold_no_more_memory_than_their_bound(clock: FakeClock) -> None:
    """Every link of a tenant and a session of its own (each scope's and session's own
    indexes counted too): the bound still holds, measured."""
    budget = 2 << 20
    store = SessionStore(cfg(max_sessions=20_000, timeout_ms=10**9), clock=clock, link_bytes=budget)
    for i in range(6_000):  # the sessions, before measuring
        store.transact(session_key("s", f"tenant{i}"), _touch)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(6_000):  # about 3,000 fit
            key = session_key("s", f"tenant{i}")
            name = session_key(f"response:resp_{i:032x}", f"tenant{i}")
            store.transact(key, _touch, links={name: f'["{key}", "up", 1, "", 1]'})
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert budget // 2 < used <= budget
    assert store.resolve_link(session_key(f"response:resp_{5_999:032x}", "tenant5999"))
