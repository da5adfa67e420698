"""Concurrent requests of one session at the budget edge: the cap holds and nothing leaks."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from llm_sessions import (
    AsyncRedisSessionStore,
    AsyncSessionStore,
    BudgetExceeded,
    Config,
    Pricing,
    RedisSessionStore,
    SessionPolicy,
    SessionStore,
)

import workers

CFG = Config(cleanup_interval_ms=0)
PRICES = {"p/simple": Pricing(0, 1), "p/backup": Pricing(0, 1)}
WORST = 100  # micros reserved per request: max_tokens=100 at 1 micro-USD per output token
CAP = "0.002"  # 2000 micros: room for 20 of the 50 requests


def body(i: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"turn {i}"}], "max_tokens": WORST}


def run_threads(store: Any) -> tuple[int, int]:
    policy = SessionPolicy(store, workers.POLICY_TIERS, pricing=PRICES, max_session_cost_usd=CAP)
    admitted, refused, lock = [0], [0], threading.Lock()
    barrier = threading.Barrier(50)

    def one(i: int) -> None:
        barrier.wait()
        try:
            d = policy.begin({"x-session-id": "edge"}, body(i))
        except BudgetExceeded:
            with lock:
                refused[0] += 1
            return
        policy.finish(d, served_model=d.model, cost_micros=WORST - (i % 3))
        with lock:
            admitted[0] += 1

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return admitted[0], refused[0]


def check(e: Any, admitted: int, refused: int) -> None:
    assert admitted + refused == 50
    assert e.session_cost_micros <= 2000
    assert e.reserved_micros == 0
    assert e.flow.reservations == ()
    assert admitted >= 20  # every request that fitted was admitted
    assert refused > 0


def test_fifty_threads_over_memory() -> None:
    store = SessionStore(CFG)
    admitted, refused = run_threads(store)
    check(store.get_session("edge"), admitted, refused)


def test_fifty_threads_over_redis(redis_url: str) -> None:
    store = RedisSessionStore(redis_url, CFG, socket_timeout=5)
    admitted, refused = run_threads(store)
    check(store.get_session("edge"), admitted, refused)
    store.close()


def test_fifty_tasks_over_async_stores(redis_url: str) -> None:
    async def run(store: Any) -> tuple[int, int]:
        policy = SessionPolicy(
            store, workers.POLICY_TIERS, pricing=PRICES, max_session_cost_usd=CAP
        )

        async def one(i: int) -> bool:
            try:
                d = await policy.abegin({"x-session-id": "edge"}, body(i))
            except BudgetExceeded:
                return False
            await asyncio.sleep(0)  # let the others begin while this one is in flight
            await policy.afinish(d, served_model=d.model, cost_micros=WORST - (i % 3))
            return True

        async with store:
            results = await asyncio.gather(*(one(i) for i in range(50)))
            check(await store.get_session("edge"), sum(results), 50 - sum(results))
        return sum(results), 50 - sum(results)

    asyncio.run(run(AsyncSessionStore(CFG)))
    asyncio.run(run(AsyncRedisSessionStore(redis_url, CFG)))


def test_two_processes_share_one_budget_over_redis(redis_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        futures = [
            pool.submit(workers.budget_edge, redis_url, "edge", 25, CAP, WORST) for _ in range(2)
        ]
        results = [f.result(timeout=300) for f in futures]
    store = RedisSessionStore(redis_url, CFG)
    check(store.get_session("edge"), sum(r[0] for r in results), sum(r[1] for r in results))
    store.close()
