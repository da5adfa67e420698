"""What only the Redis stores must do: one round trip per method, sharing across
processes, server time, faults, persistence, memory pressure, key hygiene."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import re
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_sessions import (
    AsyncRedisSessionStore,
    Config,
    Entry,
    Pricing,
    RedisSessionStore,
    StoreUnavailable,
    Tier,
    open_async_store,
    open_store,
)
from llm_sessions.records import EMPTY_FLOW, FlowState, Reservation
from llm_sessions.stores.redis_core import SCRIPTS

import workers
from helpers import FakeClock
from redis_server import CountingConnection, RedisServer

CFG = Config(cleanup_interval_ms=0)


@pytest.fixture
def counted_store(redis_url: str, redis_server: RedisServer) -> Iterator[RedisSessionStore]:
    pool = redis.ConnectionPool(port=redis_server.port, connection_class=CountingConnection)
    store = RedisSessionStore(redis.Redis(connection_pool=pool), CFG)
    store.ping()
    yield store
    store.close()
    pool.disconnect()


def round_trips(call: Any) -> int:
    before = CountingConnection.sends
    call()
    return CountingConnection.sends - before


def test_every_per_session_method_is_one_round_trip(counted_store: RedisSessionStore) -> None:
    s = counted_store
    for src in SCRIPTS.values():  # the first call of each script would load it
        s._client.script_load(src)
    calls = {
        "set_session": lambda: s.set_session("s", "m", Tier.SIMPLE),
        "get_session": lambda: s.get_session("s"),
        "touch_session": lambda: s.touch_session("s"),
        "record_request_hash": lambda: s.record_request_hash("s", "h"),
        "escalate_session": lambda: s.escalate_session("s", {Tier.MEDIUM: "m2"}),
        "add_session_cost": lambda: s.add_session_cost("s", 5),
        "get_session_cost_micros": lambda: s.get_session_cost_micros("s"),
        "get_session_cost_usd": lambda: s.get_session_cost_usd("s"),
        "set_cache_sticky": lambda: s.set_cache_sticky("s", "openai"),
        "is_cache_sticky": lambda: s.is_cache_sticky("s"),
        "clear_session": lambda: s.clear_session("s"),
    }
    assert {name: round_trips(call) for name, call in calls.items()} == dict.fromkeys(calls, 1)


def test_writes_are_single_scripts_and_reads_single_reads(
    counted_store: RedisSessionStore, redis_server: RedisServer
) -> None:
    s = counted_store
    s.set_session("warm", "m")
    client = redis_server.client()
    client.config_resetstat()
    s.set_session("s", "m", Tier.SIMPLE)
    s.add_session_cost("s", 5)
    s.get_session("s")
    stats = client.info("commandstats")
    watched = ("evalsha", "eval", "hgetall", "watch", "multi", "exec", "script|load")
    top_level = {k: stats[f"cmdstat_{k}"]["calls"] for k in watched if f"cmdstat_{k}" in stats}
    assert top_level == {"evalsha": 3}  # the read too is one script (HMGET and the time)
    client.close()


def test_script_flush_between_calls(redis_url: str, redis_server: RedisServer) -> None:
    store = RedisSessionStore(redis_url, CFG)
    client = redis_server.client()
    store.set_session("s", "m")
    client.script_flush()
    assert store.add_session_cost("s", 3) == 3
    client.script_flush()
    store.touch_session("s")
    assert store.get_session("s").request_count == 2
    client.close()
    store.close()


def test_async_script_flush_between_calls(redis_url: str, redis_server: RedisServer) -> None:
    async def run() -> int:
        async with AsyncRedisSessionStore(redis_url, CFG) as store:
            await store.set_session("s", "m")
            redis_server.client().script_flush()
            return await store.add_session_cost("s", 4)

    assert asyncio.run(run()) == 4


def test_keys_are_digests_under_the_prefix(redis_url: str, redis_server: RedisServer) -> None:
    store = RedisSessionStore(redis_url, CFG, key_prefix="app:")
    ids = ["plain", "a:b", "{slot}", "nul\x00", "x" * 10_240, "会话"]
    for sid in ids:
        store.set_session(sid, "m")
    keys = sorted(k.decode() for k in redis_server.client().keys("*"))
    assert len(keys) == len(ids)
    # the digest in braces: the session's Redis Cluster hash tag (a raw "{slot}" id never is)
    assert all(re.fullmatch(r"app:[0-9a-f]{16}:\{[0-9a-f]{32}\}", k) for k in keys)
    assert keys == sorted(store.key(sid) for sid in ids)
    store.close()
    with pytest.raises(ValueError, match="braces"):
        RedisSessionStore(redis_url, CFG, key_prefix="app{x}:")


def test_key_ttl_follows_last_use(
    redis_url: str, redis_server: RedisServer, clock: FakeClock
) -> None:
    timeout = 60_000
    store = RedisSessionStore(
        redis_url, Config(cleanup_interval_ms=0, timeout_ms=timeout), clock=clock
    )
    client = redis_server.client()
    store.set_session("s", "m")
    assert timeout - 1000 < client.pttl(store.key("s")) <= timeout
    store.add_session_cost("c", 1)
    assert timeout - 1000 < client.pttl(store.key("c")) <= timeout
    client.pexpire(store.key("s"), 5000)
    store.touch_session("s")
    assert client.pttl(store.key("s")) > 5000
    client.close()
    store.close()


def test_a_key_that_outlives_its_timeout_is_never_revived(
    redis_url: str, redis_server: RedisServer, clock: FakeClock
) -> None:
    store = RedisSessionStore(redis_url, CFG, clock=clock)
    store.set_session("s", "m", Tier.SIMPLE, True)
    store.add_session_cost("s", 99)
    clock.advance(CFG.timeout_ms + 1)
    assert redis_server.client().exists(store.key("s"))  # the key is still there
    assert store.get_session("s") is None
    assert store.escalate_session("s") is None
    store.set_session("s", "fresh")
    e = store.get_session("s")
    assert (e.model, e.session_cost_micros, e.user_explicit, e.request_count) == (
        "fresh",
        0,
        False,
        1,
    )
    store.close()


def test_stats_scan_in_batches_and_never_use_keys(
    redis_url: str, redis_server: RedisServer
) -> None:
    store = RedisSessionStore(redis_url, CFG)
    client = redis_server.client()
    pipe = client.pipeline()
    for i in range(1200):
        pipe.set(f"other:{i}", "x")
    pipe.execute()
    for i in range(1500):
        store.set_session(f"s{i:05d}", "m")
    client.config_resetstat()
    stats = store.get_stats(limit=3)
    assert stats.count == 1500
    assert [s.id for s in stats.sessions] == ["s00000", "s00001", "s00002"]
    cmd = client.info("commandstats")
    assert "cmdstat_keys" not in cmd
    assert cmd["cmdstat_scan"]["calls"] > 1
    client.config_resetstat()
    store.clear_all()
    cmd = client.info("commandstats")
    assert cmd["cmdstat_unlink"]["calls"] > 1
    assert "cmdstat_flushdb" not in cmd and "cmdstat_keys" not in cmd
    assert store.get_stats().count == 0
    assert client.dbsize() == 1200  # nothing outside the prefix was touched
    client.close()
    store.close()


def test_glob_characters_in_the_prefix_are_literal(
    redis_url: str, redis_server: RedisServer
) -> None:
    star = RedisSessionStore(redis_url, CFG, key_prefix="t*:")
    other = RedisSessionStore(redis_url, CFG, key_prefix="tx:")
    star.set_session("a", "m")
    other.set_session("b", "m")
    assert star.get_stats().count == 1
    star.clear_all()
    assert other.get_session("b") is not None
    star.close()
    other.close()


# -- shared between processes ---------------------------------------------------------------


def _pool() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))


def test_two_processes_add_costs_exactly(redis_url: str) -> None:
    ids = ["p-a", "p-b", "p-c"]
    with _pool() as pool:
        futures = [pool.submit(workers.add_costs, redis_url, ids, 8, 2000) for _ in range(2)]
        added = sum(f.result(timeout=300) for f in futures)
    store = RedisSessionStore(redis_url, CFG)
    assert sum(store.get_session_cost_micros(sid) for sid in ids) == added
    assert added == 2 * 8 * sum((i % 7) + 1 for i in range(2000))
    store.close()


def test_a_pin_and_an_expiry_are_seen_by_every_process(redis_url: str, clock: FakeClock) -> None:
    with _pool() as pool:
        pool.submit(workers.pin_session, redis_url, "shared", "model-a", clock.now).result()
        seen = pool.submit(workers.read_session, redis_url, "shared", clock.now + 1000).result()
        assert seen["model"] == "model-a"
        # a replica whose clock is past the timeout treats it as gone, and re-pins fresh
        late = clock.now + CFG.timeout_ms + 1
        assert pool.submit(workers.read_session, redis_url, "shared", late).result() is None
        pool.submit(workers.pin_session, redis_url, "shared", "model-b", late).result()
        again = pool.submit(workers.read_session, redis_url, "shared", late + 10).result()
    assert (again["model"], again["request_count"], again["created_at"]) == ("model-b", 1, late)


def test_stores_on_server_time_agree_whatever_their_local_clocks(
    redis_url: str, redis_server: RedisServer
) -> None:
    """Two replicas whose local clocks are 10 s apart: with clock=None both use Redis'
    TIME and agree; had they used their own clocks they would disagree."""
    client = redis_server.client()
    seconds, micros = client.time()
    server_now = seconds * 1000 + micros // 1000
    timeout = 5_000
    cfg = Config(cleanup_interval_ms=0, timeout_ms=timeout)
    writer_old = RedisSessionStore(redis_url, cfg, clock=lambda: server_now - 7_000)
    writer_old.set_session("idle-7s", "m")  # last used 7 s ago by server time: expired
    writer_new = RedisSessionStore(redis_url, cfg, clock=lambda: server_now - 1_000)
    writer_new.set_session("idle-1s", "m")  # last used 1 s ago: alive
    replica_a = RedisSessionStore(redis_url, cfg)
    replica_b = RedisSessionStore(redis_url, cfg)
    for replica in (replica_a, replica_b):
        assert replica.get_session("idle-7s") is None
        assert replica.get_session("idle-1s") is not None
    # what local clocks 10 s apart would have concluded
    behind = RedisSessionStore(redis_url, cfg, clock=lambda: server_now - 5_000)
    ahead = RedisSessionStore(redis_url, cfg, clock=lambda: server_now + 5_000)
    assert behind.get_session("idle-7s") is not None
    assert ahead.get_session("idle-1s") is None
    for s in (writer_old, writer_new, replica_a, replica_b, behind, ahead):
        s.close()
    client.close()


# -- faults ---------------------------------------------------------------------------------


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


def test_fail_open_keeps_answering_through_an_outage(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisSessionStore(own_server.url, CFG, on_error="fail_open")
    store.set_session("s", "m", Tier.SIMPLE)
    assert store.add_session_cost("s", 10) == 10
    own_server.kill()
    with caplog.at_level(logging.WARNING, logger="llm_sessions.redis"):
        for _ in range(20):
            assert store.get_session("s") is None
            assert store.add_session_cost("s", 10) == 0
            assert store.record_request_hash("s", "h") == 0
            assert store.escalate_session("s") is None
            assert store.is_cache_sticky("s") is False
            assert store.get_stats().count == 0
            # transact never fails open: the routing flow decides what an outage means
            with pytest.raises(StoreUnavailable):
                store.transact("s", lambda e, now: (e, "no session" if e is None else "?"))
            # nor does a link: "unknown" would send a chained turn to a new session, with
            # a budget of its own
            with pytest.raises(StoreUnavailable):
                store.resolve_link("t:resp_1")
            store.set_session("s", "other")
            store.touch_session("s")
    assert store.errors >= 20 * 10
    assert len([r for r in caplog.records if r.name == "llm_sessions.redis"]) == 1
    assert store.ping() is False
    own_server.start()
    errors = store.errors
    store.set_session("s", "m2")
    assert store.get_session("s").model == "m2"
    assert store.errors == errors
    assert store.ping() is True
    store.close()


def test_raise_mode_raises_store_unavailable_never_a_redis_error(own_server: RedisServer) -> None:
    store = RedisSessionStore(own_server.url, CFG)
    store.set_session("s", "m")
    own_server.kill()
    calls = [
        lambda: store.get_session("s"),
        lambda: store.set_session("s", "m"),
        lambda: store.add_session_cost("s", 1),
        lambda: store.get_stats(),
        lambda: store.clear_all(),
        lambda: store.transact("s", lambda e, now: (e, 1)),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert isinstance(info.value.__cause__, redis.RedisError)
    store.close()


def test_async_fail_open_and_recovery(own_server: RedisServer) -> None:
    async def run() -> tuple[Any, ...]:
        async with AsyncRedisSessionStore(own_server.url, CFG, on_error="fail_open") as store:
            await store.set_session("s", "m")
            own_server.kill()
            during = (await store.get_session("s"), await store.add_session_cost("s", 5))
            own_server.start()
            await store.set_session("s", "back")
            return during, (await store.get_session("s")).model, store.errors

    during, model, errors = asyncio.run(run())
    assert during == (None, 0)
    assert model == "back"
    assert errors >= 2


def test_unreachable_server_fails_fast(tmp_path: Path) -> None:
    from redis_server import free_port

    store = RedisSessionStore(f"redis://127.0.0.1:{free_port()}/0", CFG)
    with pytest.raises(StoreUnavailable):
        store.get_session("s")
    store.close()


def test_appendfsync_always_restart_loses_nothing(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "aof", "--appendonly", "yes", "--appendfsync", "always").start()
    try:
        store = RedisSessionStore(server.url, CFG)
        for i in range(50):
            store.set_session(f"s{i}", f"model-{i}", Tier.COMPLEX)
            store.add_session_cost(f"s{i}", 1000 + i)
            store.record_request_hash(f"s{i}", "h")
        before = {f"s{i}": store.get_session(f"s{i}") for i in range(50)}
        server.kill()  # SIGKILL: no clean shutdown, only the fsynced log survives
        server.start()
        after = {f"s{i}": store.get_session(f"s{i}") for i in range(50)}
        assert after == before
        assert all(isinstance(e, Entry) for e in after.values())
        store.close()
    finally:
        server.kill()


def test_memory_pressure_refuses_writes_cleanly_and_reads_keep_working(tmp_path: Path) -> None:
    server = RedisServer(
        tmp_path / "oom", "--maxmemory", "3mb", "--maxmemory-policy", "noeviction"
    ).start()
    try:
        raising = RedisSessionStore(server.url, CFG)
        failing_open = RedisSessionStore(server.url, CFG, on_error="fail_open")
        raising.set_session("kept", "m")
        raising.add_session_cost("kept", 7)
        client = server.client()
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for i in range(10_000):
                client.set(f"ballast:{i}", "x" * 10_000)
        # freed client buffers could bring memory back under the line: keep it well over
        client.config_set("maxmemory", str(client.info("memory")["used_memory"] // 2))
        with pytest.raises(StoreUnavailable, match="OutOfMemoryError"):
            raising.set_session("new", "m")
        with pytest.raises(StoreUnavailable):
            raising.add_session_cost("new", 1)
        assert failing_open.add_session_cost("new", 1) == 0
        assert failing_open.errors == 1
        assert raising.get_session("kept").session_cost_micros == 7  # reads keep working
        assert raising.get_session_cost_micros("kept") == 7
        assert raising.get_session("new") is None
        raising.close()
        failing_open.close()
        client.close()
    finally:
        server.kill()


def test_open_store_urls(redis_url: str) -> None:
    assert type(open_store("memory://")).__name__ == "SessionStore"
    store = open_store(redis_url, CFG, key_prefix="u:")
    assert isinstance(store, RedisSessionStore)
    assert store.key_prefix == "u:"
    store.close()
    astore = open_async_store(redis_url)
    assert isinstance(astore, AsyncRedisSessionStore)
    assert type(open_async_store("memory://")).__name__ == "AsyncSessionStore"
    with pytest.raises(ValueError, match="unsupported store url"):
        open_store("mysql://x")
    with pytest.raises(ValueError, match="on_error"):
        open_store(redis_url, on_error="ignore")


def test_a_client_is_reused_with_retries_off(redis_server: RedisServer, redis_url: str) -> None:
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    store = RedisSessionStore(client, CFG)
    store.set_session("s", "m")
    assert store.get_session("s").model == "m"
    assert store._client.get_retry()._retries == 0
    with pytest.raises(TypeError):
        RedisSessionStore(object(), CFG)
    store.close()
    client.close()


@pytest.mark.parametrize("built_from", ["url", "client"])
def test_the_async_store_builds_its_clients_warning_free(
    redis_server: RedisServer, redis_url: str, built_from: str
) -> None:
    """Every redis-py admitted: the async pools get the asyncio Retry (redis-py 8.2 warns
    when a synchronous one reaches an asyncio client, and converts it)."""
    import warnings

    import redis.asyncio
    import redis.asyncio.retry

    async def go() -> None:
        client = redis.asyncio.Redis(port=redis_server.port, decode_responses=True)
        target: Any = redis_url if built_from == "url" else client
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            store = AsyncRedisSessionStore(target, CFG)
            await store.set_session("s", "m")
            entry = await store.get_session("s")
            assert entry is not None
            assert entry.model == "m"
            retry = store._client.get_retry()
            await store.aclose()
        await client.aclose()
        assert [str(w.message) for w in caught] == []
        assert isinstance(retry, redis.asyncio.retry.Retry)
        assert retry._retries == 0

    asyncio.run(go())


def test_a_routed_request_is_two_round_trips_in_the_steady_state(
    redis_url: str, redis_server: RedisServer
) -> None:
    """begin and finish each send one compare-and-set against the version this process
    wrote last; only a write by someone else in between costs more (the failed
    compare-and-set answers with the current record), and nothing is lost to it."""
    from llm_sessions import SessionPolicy

    from conftest import TIERS

    pool = redis.ConnectionPool(port=redis_server.port, connection_class=CountingConnection)
    store = RedisSessionStore(redis.Redis(connection_pool=pool), CFG)
    other = RedisSessionStore(redis_url, CFG)  # another replica
    prices = {
        m: Pricing(1, 2) for t in TIERS.values() for m in [t["primary"], *t.get("fallback", [])]
    }
    policy = SessionPolicy(store, TIERS, pricing=prices, max_session_cost_usd=100)
    replica = SessionPolicy(other, TIERS, pricing=prices, max_session_cost_usd=100)
    headers = {"x-session-id": "s"}

    def turn(flow: SessionPolicy, i: int) -> int:
        before = CountingConnection.sends
        body = {"messages": [{"role": "user", "content": f"turn {i}"}]}
        decision = flow.begin(headers, body)
        flow.finish(decision, served_model=decision.model, cost_micros=5)
        return CountingConnection.sends - before

    try:
        turn(policy, 0)  # scripts loaded, the session created (a read: nothing known yet)
        assert [turn(policy, i) for i in range(1, 6)] == [2] * 5
        turn(replica, 6)  # the other replica writes
        assert turn(policy, 7) == 3  # one compare-and-set lost, with the record in its reply
        assert turn(policy, 8) == 2
        entry = store.get_session("s")
        assert entry is not None and entry.session_cost_micros == 9 * 5
        assert entry.request_count == 9 and entry.reserved_micros == 0
        # every turn's event is in the log, written by the compare-and-sets counted above
        assert [e["total_micros"] for e in policy.events("s")] == [5 * (i + 1) for i in range(9)]
    finally:
        store.close()
        other.close()
        pool.disconnect()


# -- a write against the version this process wrote carries only what changed ------------

_NOW = 1_700_000_000_000
_hex = st.text(alphabet="0123456789abcdef", min_size=1, max_size=10)
_text = st.text(max_size=6)
_flows = st.one_of(
    st.just(EMPTY_FLOW),
    st.builds(
        FlowState,
        st.lists(
            st.builds(
                Reservation, _hex, st.integers(0, 10**9), st.integers(_NOW + 1, _NOW + 10**6)
            ),
            max_size=3,
        ).map(tuple),
        _text,
        _text,
        st.integers(0, _NOW),
        st.integers(0, 10**7),
        _text,
        st.lists(st.tuples(_hex, st.integers(0, 2**63 - 1)), max_size=4).map(tuple),
    ),
)
_entries = st.builds(
    Entry,
    model=st.sampled_from(["", "openai/gpt-4o-mini", "anthropic/claude-sonnet-4.6"]),
    tier=st.sampled_from([None, *Tier]),
    created_at=st.integers(_NOW - 10**6, _NOW),
    last_used_at=st.just(_NOW),
    request_count=st.integers(0, 10**6),
    recent_hashes=st.lists(_hex, max_size=3).map(tuple),
    strikes=st.integers(0, 5),
    escalated=st.booleans(),
    user_explicit=st.booleans(),
    cache_sticky=st.booleans(),
    cache_sticky_at=st.integers(0, _NOW),
    provider=st.sampled_from(["", "openai", "anthropic"]),
    session_cost_micros=st.integers(0, 2**63 - 1),
    flow=_flows,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(_entries, min_size=2, max_size=6))
def test_a_record_written_change_by_change_is_the_record_written_whole(
    redis_url: str, entries: list[Entry]
) -> None:
    """Each write after this process's own sends only the fields that changed (and
    deletes the hashes and flow fields that went): whatever the sequence, the hash is the
    one a whole write of the last record makes, and another process reads that record."""
    clock = FakeClock(_NOW)
    writer = RedisSessionStore(redis_url, CFG, clock=clock)
    reader = RedisSessionStore(redis_url, CFG, clock=clock)  # knows nothing: reads
    raw = redis.Redis.from_url(redis_url)
    try:
        writer.clear_all()
        for n, entry in enumerate(entries):
            writer.transact("s", lambda old, now, e=entry: (e, None))  # type: ignore[misc]
            reader.transact(f"whole-{n}", lambda old, now, e=entry: (e, None))  # type: ignore[misc]
            assert reader.get_session("s") == entry
            changed = raw.hgetall(writer.key("s"))
            whole = raw.hgetall(reader.key(f"whole-{n}"))
            for fields in (changed, whole):
                del fields[b"id"], fields[b"v"]
            assert changed == whole
    finally:
        raw.close()
        writer.close()
        reader.close()


def test_a_steady_state_write_sends_only_what_changed(
    counted_store: RedisSessionStore, clock: FakeClock
) -> None:
    store = RedisSessionStore(counted_store._client, CFG, clock=clock)
    entry = Entry("openai/gpt-4o-mini", Tier.SIMPLE, clock(), clock(), 1, ("a" * 32,), 0,
                  False, False, False, 0, "", 5)  # fmt: skip
    try:
        store.transact("s", lambda old, now: (entry, None))  # created: the whole record
        assert b"$5\r\nmodel\r\n" in CountingConnection.last
        whole = len(CountingConnection.last)
        store.transact("s", lambda old, now: (entry._replace(session_cost_micros=9), None))
        sent = CountingConnection.last
        assert b"$4\r\ncost\r\n$1\r\n9\r\n" in sent and b"$5\r\nmodel\r\n" not in sent
        assert len(sent) < whole / 2
        assert store.get_session("s") == entry._replace(session_cost_micros=9)
    finally:
        store.close()


@pytest.mark.parametrize("step_s", [3_600, -3_600])
def test_a_step_of_the_hosts_clock_never_resets_a_live_session(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, step_s: int
) -> None:
    """The default clock is Redis' own: a step of this host's wall clock (an NTP step, a
    VM resumed) of more than the session timeout, either way, changes nothing. (The next
    writes estimated the server's time from the wall clock; a forward step made every
    remembered session look expired, and a fresh record was written over the live one:
    its cost back to 0, its cap bypassed.)"""
    import time as real_time

    from llm_sessions import Pricing, SessionPolicy

    store = RedisSessionStore(redis_url, Config(timeout_ms=60_000, cleanup_interval_ms=0))
    policy = SessionPolicy(store, {"SIMPLE": {"primary": "m"}}, pricing={"m": Pricing(1, 1)})
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    session = {"x-session-id": "stepped"}
    try:
        first = policy.begin(session, body)
        policy.finish(first, served_model="m", cost_micros=500)
        wall = real_time.time_ns
        monkeypatch.setattr(real_time, "time_ns", lambda: wall() + step_s * 1_000_000_000)
        again = policy.begin(session, body)
        policy.finish(again, served_model="m", cost_micros=500)
        assert again.reason == "pinned" and again.session_cost_micros == 500
        entry = store.get_session("stepped")
        assert entry is not None and entry.session_cost_micros == 1000
        assert entry.request_count == 2
    finally:
        store.close()
