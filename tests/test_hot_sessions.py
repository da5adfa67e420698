"""A hot session is never an error: contention waits (in-process keyed locks, backoff
between processes) up to a time limit, and only the documented exceptions leave the flow."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
import redis

from llm_sessions import (
    AsyncRedisSessionStore,
    Config,
    Pricing,
    RedisSessionStore,
    SessionBusy,
    SessionPolicy,
    StoreUnavailable,
)
from llm_sessions.stores.keyed import AsyncKeyedLock, KeyedLock, LockTimeout

import workers
from redis_server import RedisServer

CFG = Config(cleanup_interval_ms=0)
PRICES = {"p/simple": Pricing(0, 1), "p/backup": Pricing(0, 1)}


def body(i: int, max_tokens: int = 100) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"turn {i}"}], "max_tokens": max_tokens}


# -- the keyed locks ---------------------------------------------------------------------------


def test_keyed_lock_serializes_one_key_and_keeps_nothing_for_idle_keys() -> None:
    locks = KeyedLock()
    inside, most, guard = [0], [0], threading.Lock()

    def work(key: str) -> None:
        for _ in range(50):
            with locks.hold(key, None):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=work, args=("hot",)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1
    assert len(locks) == 0


def test_keyed_lock_times_out_and_other_keys_do_not_wait() -> None:
    locks = KeyedLock()
    with locks.hold("a", None):
        started = time.monotonic()
        with pytest.raises(LockTimeout), locks.hold("a", 0.05):
            pass
        assert time.monotonic() - started >= 0.05
        with locks.hold("b", 0):  # another key is free at once
            pass
    assert len(locks) == 0


def test_async_keyed_lock_is_fifo_times_out_and_survives_cancellation() -> None:
    async def main() -> None:
        locks = AsyncKeyedLock()
        order: list[int] = []
        inside = [0]

        async def one(i: int) -> None:
            async with locks.hold("k", None):
                inside[0] += 1
                assert inside[0] == 1
                order.append(i)
                await asyncio.sleep(0)
                inside[0] -= 1

        await asyncio.gather(*(one(i) for i in range(100)))
        assert order == list(range(100))
        assert len(locks) == 0

        async with locks.hold("k", None):
            with pytest.raises(LockTimeout):
                async with locks.hold("k", 0.02):
                    pass
            waiter = asyncio.ensure_future(one(-1))
            await asyncio.sleep(0.01)
            waiter.cancel()  # a waiter that leaves must not keep the key
            with pytest.raises(asyncio.CancelledError):
                await waiter
        assert len(locks) == 0

    asyncio.run(main())


# -- many requests on one session over Redis ----------------------------------------------------


def _check_session(url: str, key: str, expected_cost: int, expected_count: int) -> None:
    store = RedisSessionStore(url, CFG)
    entry = store.get_session(key)
    store.close()
    assert entry is not None
    assert entry.session_cost_micros == expected_cost
    assert entry.reserved_micros == 0
    assert entry.request_count == expected_count


def test_500_asyncio_tasks_on_one_session_all_admitted_and_billed(redis_url: str) -> None:
    """Today 7 of 50 are lost with `RuntimeError: session changed 64 times`."""

    async def main() -> tuple[int, int]:
        store = AsyncRedisSessionStore(redis_url, CFG)
        policy = SessionPolicy(
            store, workers.POLICY_TIERS, pricing=PRICES, max_session_cost_usd="1000"
        )

        async def one(i: int) -> int:
            d = await policy.abegin({"x-session-id": "hot"}, body(i))
            cost = 50 + i % 7
            await policy.afinish(d, served_model=d.model, cost_micros=cost)
            return cost

        costs = await asyncio.gather(*(one(i) for i in range(500)))
        await store.aclose()
        return len(costs), sum(costs)

    served, cost = asyncio.run(main())
    assert served == 500
    _check_session(redis_url, "hot", cost, 500)


def test_64_threads_on_one_session_all_admitted_and_billed(redis_url: str) -> None:
    store = RedisSessionStore(redis_url, CFG)
    policy = SessionPolicy(store, workers.POLICY_TIERS, pricing=PRICES, max_session_cost_usd="1000")
    barrier = threading.Barrier(64)
    costs: list[int] = []
    errors: list[BaseException] = []

    def one(t: int) -> None:
        barrier.wait()
        for i in range(5):
            try:
                d = policy.begin({"x-session-id": "hot"}, body(t * 5 + i))
                policy.finish(d, served_model=d.model, cost_micros=t + i)
                costs.append(t + i)
            except BaseException as exc:  # the test fails on any
                errors.append(exc)

    workers.run_threads(one, 64)
    store.close()
    assert errors == []
    _check_session(redis_url, "hot", sum(costs), 320)


def test_two_processes_contend_on_one_session_without_errors(redis_url: str) -> None:
    """Across processes only the compare-and-set decides; losers back off and retry."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        futures = [
            pool.submit(workers.hot_session, redis_url, "shared", 32, 4, 1_000_000)
            for _ in range(2)
        ]
        results = [f.result(timeout=120) for f in futures]
    assert [r[1] for r in results] == [0, 0]  # no errors of any kind
    total = sum(r[0] for r in results)
    _check_session(redis_url, "shared", total, 2 * 32 * 4)


def test_contention_past_the_busy_timeout_is_session_busy(redis_url: str) -> None:
    store = RedisSessionStore(redis_url, CFG, busy_timeout_ms=50)
    entered, release = threading.Event(), threading.Event()

    def slow(entry: Any, now: int) -> tuple[Any, str]:
        entered.set()
        release.wait(5)
        return entry, "slow"

    holder = threading.Thread(target=store.transact, args=("busy", slow))
    holder.start()
    assert entered.wait(5)
    started = time.monotonic()
    with pytest.raises(SessionBusy) as info:
        store.transact("busy", lambda e, now: (e, "fast"))
    waited = time.monotonic() - started
    release.set()
    holder.join()
    assert isinstance(info.value, StoreUnavailable)
    assert 0.04 <= waited < 2
    # with no limit it waits as long as it takes
    assert store.transact("busy", lambda e, now: (e, "fast"), busy_timeout_ms=float("inf")) == (
        "fast"
    )
    store.close()


def test_cross_process_losses_past_the_busy_timeout_are_session_busy(redis_url: str) -> None:
    """A writer that always wins makes every compare-and-set of this one lose."""
    store = RedisSessionStore(redis_url, CFG, busy_timeout_ms=30)
    store.set_session("k", "m")
    other = redis.Redis.from_url(redis_url)
    key = store.key("k")

    def meddle(entry: Any, now: int) -> tuple[Any, None]:
        other.hincrby(key, "v", 1)  # another process's write lands between read and write
        return entry._replace(request_count=entry.request_count + 1), None

    started = time.monotonic()
    with pytest.raises(SessionBusy):
        store.transact("k", meddle)
    assert 0.03 <= time.monotonic() - started < 2
    other.close()
    store.close()


# -- pools ------------------------------------------------------------------------------------


def test_a_busy_pool_waits_instead_of_failing(redis_url: str) -> None:
    """Ten times more concurrent calls than connections: all succeed, no store errors."""

    async def main() -> tuple[int, int]:
        store = AsyncRedisSessionStore(redis_url, CFG, max_connections=5)
        totals = await asyncio.gather(*(store.add_session_cost(f"s{i}", 1) for i in range(500)))
        errors = store.errors
        await store.aclose()
        return sum(totals), errors

    assert asyncio.run(main()) == (500, 0)


def test_sync_pool_waits_too(redis_url: str) -> None:
    store = RedisSessionStore(redis_url, CFG, max_connections=2)

    def adds(i: int) -> None:
        for _ in range(20):
            store.add_session_cost(f"t{i}", 1)

    workers.run_threads(adds, 16)
    assert store.errors == 0
    assert sum(store.get_session_cost_micros(f"t{i}") for i in range(16)) == 320
    store.close()


def _connected_clients(server: RedisServer) -> int:
    client = server.client()
    count = int(client.info("clients")["connected_clients"]) - 1  # less this one
    client.close()
    return count


def test_stores_made_from_a_client_close_the_pool_they_made(
    redis_url: str, redis_server: RedisServer
) -> None:
    before = _connected_clients(redis_server)
    caller = redis.Redis.from_url(redis_url)
    for _ in range(20):
        store = RedisSessionStore(caller, CFG)
        store.set_session("s", "m")
        store.close()
    caller.close()
    assert _connected_clients(redis_server) == before


def test_an_explicit_socket_timeout_is_honoured_with_a_client(redis_url: str) -> None:
    caller = redis.Redis.from_url(redis_url, socket_timeout=30)
    kept = RedisSessionStore(caller, CFG)
    given = RedisSessionStore(caller, CFG, socket_timeout=0.2, max_connections=7)
    assert kept._pool.connection_kwargs["socket_timeout"] == 30
    assert given._pool.connection_kwargs["socket_timeout"] == 0.2
    assert given._pool.max_connections == 7
    for store in (kept, given):
        store.close()
    caller.close()


def test_no_raw_redis_error_leaves_a_store(redis_url: str) -> None:
    store = RedisSessionStore(redis_url, CFG, on_error="fail_open")
    other = redis.Redis.from_url(redis_url)
    other.set(store.key("wrong"), "a string, not a hash")
    for call in (
        lambda: store.get_session("wrong"),
        lambda: store.add_session_cost("wrong", 1),
        lambda: store.transact("wrong", lambda e, now: (e, None)),
    ):
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert isinstance(info.value.__cause__, redis.RedisError)
    other.close()
    store.close()
