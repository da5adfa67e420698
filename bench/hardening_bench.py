"""Benchmark of the production-hardening figures, each against a baseline in the same run.

    python bench/hardening_bench.py [--quick]

1. Hot sessions. begin+finish pairs through `SessionPolicy` on ONE session over Redis
   (500 asyncio tasks on `AsyncRedisSessionStore`; 64 threads on `RedisSessionStore`),
   against the same pairs spread over as many sessions (no contention): errors, cost
   exactness, reservations left, and the throughput ratio. Then 200 concurrent requests
   on one session over two `llm-sessions serve` processes sharing one Redis, with a cap
   that admits all and one that refuses some, against 200 requests on 200 sessions.
2. A busy pool. 1,000 concurrent second turns on 1,000 pinned sessions through one
   gateway on Redis (pool of 200): how many are pinned, store errors, wall time against
   the same burst through a memory-store gateway.
3. The session listing. 100k sessions in the memory store, 100 tenants: how late a 1 ms
   heartbeat on the event loop runs while a client pages through one tenant's listing
   without pause, against the heartbeat alone; and on Redis, one tenant's whole listing
   (SCAN MATCH on its tag) against a SCAN of every key (what listing took before).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from llm_sessions import (
    AsyncRedisSessionStore,
    AsyncSessionStore,
    Config,
    Pricing,
    RedisSessionStore,
    SessionPolicy,
    session_key,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gateway_helpers import gateway_processes, standin_process  # noqa: I001
from redis_server import RedisServer

CFG = Config(cleanup_interval_ms=0, max_sessions=200_000)
TIERS = {"SIMPLE": {"primary": "p/simple", "fallback": ["p/backup"]}}
PRICES = {"p/simple": Pricing(0, 1), "p/backup": Pricing(0, 1)}


def body(i: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"turn {i}"}], "max_tokens": 10}


# -- 1. hot sessions -------------------------------------------------------------------------------


async def _async_pairs(url: str, tasks: int, hot: bool) -> tuple[float, int, bool]:
    store = AsyncRedisSessionStore(url, CFG)
    await store.clear_all()
    policy = SessionPolicy(store, TIERS, pricing=PRICES, max_session_cost_usd=1000)
    errors = 0

    async def one(i: int) -> int:
        nonlocal errors
        sid = "hot" if hot else f"s{i}"
        try:
            d = await policy.abegin({"x-session-id": sid}, body(i))
            await policy.afinish(d, served_model=d.model, cost_micros=1 + i % 5)
        except Exception:
            errors += 1
            return 0
        return 1 + i % 5

    started = time.perf_counter()
    charged = await asyncio.gather(*(one(i) for i in range(tasks)))
    elapsed = time.perf_counter() - started
    exact = True
    if hot:
        entry = await store.get_session("hot")
        exact = (
            entry is not None
            and entry.session_cost_micros == sum(charged)
            and entry.reserved_micros == 0
        )
    await store.aclose()
    return elapsed, errors, exact


def _thread_pairs(url: str, threads: int, per: int, hot: bool) -> tuple[float, int, bool]:
    store = RedisSessionStore(url, CFG)
    store.clear_all()
    policy = SessionPolicy(store, TIERS, pricing=PRICES, max_session_cost_usd=1000)
    errors, charged, lock = [0], [0], threading.Lock()
    barrier = threading.Barrier(threads + 1)

    def work(t: int) -> None:
        barrier.wait()
        for i in range(per):
            sid = "hot" if hot else f"s{t}"
            try:
                d = policy.begin({"x-session-id": sid}, body(i))
                policy.finish(d, served_model=d.model, cost_micros=1)
                with lock:
                    charged[0] += 1
            except Exception:
                with lock:
                    errors[0] += 1

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    started = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    entry = store.get_session("hot")
    exact = not hot or (
        entry is not None and entry.session_cost_micros == charged[0] and entry.reserved_micros == 0
    )
    store.close()
    return elapsed, errors[0], exact


async def _burst(ports: list[int], count: int, session: str | None) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            url = f"http://127.0.0.1:{ports[i % len(ports)]}/v1/chat/completions"
            sid = session or f"s{i}"
            payload = {"model": "auto", **body(i), "max_tokens": 100}
            return await client.post(url, json=payload, headers={"x-session-id": sid})

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def _two_gateways(url: str, upstream: str, cap: str, tmp: Path) -> None:
    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()
    toml = (
        f'[upstream]\nbase_url = "{upstream}/v1"\n[store]\nurl = "{url}"\n'
        '[pricing."gpt-4o-mini"]\ninput_per_mtok = 1\noutput_per_mtok = 2\n'
        '[pricing."gpt-4o"]\ninput_per_mtok = 1\noutput_per_mtok = 2\n'
        f"[budget]\nmax_session_cost_usd = {cap}\n"
    )
    directory = Path(tempfile.mkdtemp(dir=tmp))
    with gateway_processes(directory, toml) as ports:
        started = time.perf_counter()
        hot = asyncio.run(_burst(ports, 200, "hot"))
        hot_s = time.perf_counter() - started
        started = time.perf_counter()
        spread = asyncio.run(_burst(ports, 200, None))
        spread_s = time.perf_counter() - started
        status = httpx.get(f"http://127.0.0.1:{ports[0]}/v1/sessions/hot").json()
    served = [r for r in hot if r.status_code == 200]
    billed = sum(
        r.json()["usage"]["prompt_tokens"] + 2 * r.json()["usage"]["completion_tokens"]
        for r in served
    )
    print(
        f"  cap {cap:>6} USD: {len(served)} served, "
        f"{sum(r.status_code == 429 for r in hot)} refused (429), "
        f"{sum(r.status_code >= 500 for r in hot)} 5xx; session cost "
        f"{status['session_cost_micros']} == upstream-reported {billed}: "
        f"{status['session_cost_micros'] == billed}; reserved after: "
        f"{status['reserved_micros']}; time {hot_s:.2f} s vs {spread_s:.2f} s on 200 "
        f"sessions ({hot_s / spread_s:.2f}x); 5xx on 200 sessions: "
        f"{sum(r.status_code >= 500 for r in spread)}"
    )


def hot_sessions(url: str, upstream: str, tmp: Path, quick: bool) -> None:
    print("1. hot sessions (begin+finish over Redis)")
    tasks = 200 if quick else 500
    spread_s, _, _ = asyncio.run(_async_pairs(url, tasks, hot=False))
    hot_s, hot_err, exact = asyncio.run(_async_pairs(url, tasks, hot=True))
    print(
        f"  {tasks} asyncio tasks, one session: {hot_err} errors, cost exact and 0 reserved: "
        f"{exact}; {tasks / hot_s:.0f} pairs/s vs {tasks / spread_s:.0f} on {tasks} sessions "
        f"({spread_s / hot_s:.2f}x)"
    )
    per = 5 if quick else 10
    spread_s, _, _ = _thread_pairs(url, 64, per, hot=False)
    hot_s, hot_err, exact = _thread_pairs(url, 64, per, hot=True)
    pairs = 64 * per
    print(
        f"  64 threads x {per}, one session: {hot_err} errors, cost exact and 0 reserved: "
        f"{exact}; {pairs / hot_s:.0f} pairs/s vs {pairs / spread_s:.0f} on 64 sessions "
        f"({spread_s / hot_s:.2f}x)"
    )
    print("  200 concurrent requests on one session over two gateway processes:")
    _two_gateways(url, upstream, "1000", tmp)
    _two_gateways(url, upstream, "0.004", tmp)


# -- 2. a busy pool ------------------------------------------------------------------------------------


async def _turns(base: str, count: int) -> tuple[list[httpx.Response], float]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def turn(i: int) -> httpx.Response:
            payload = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
            return await client.post(
                "/v1/chat/completions", json=payload, headers={"x-session-id": f"s{i}"}
            )

        await asyncio.gather(*(turn(i) for i in range(count)))
        started = time.perf_counter()
        replies = list(await asyncio.gather(*(turn(i) for i in range(count))))
        return replies, time.perf_counter() - started


def busy_pool(url: str, upstream: str, tmp: Path, quick: bool) -> None:
    print("2. a busy pool: concurrent second turns on pinned sessions, one gateway")
    count = 500 if quick else 1000
    results = {}
    for name, store_url in (("redis", url), ("memory", "memory://")):
        client = redis.Redis.from_url(url)
        client.flushall()
        client.close()
        toml = f'[upstream]\nbase_url = "{upstream}/v1"\n[store]\nurl = "{store_url}"\n'
        directory = Path(tempfile.mkdtemp(dir=tmp))
        with gateway_processes(directory, toml, count=1) as ports:
            base = f"http://127.0.0.1:{ports[0]}"
            replies, elapsed = asyncio.run(_turns(base, count))
            metrics = httpx.get(f"{base}/metrics").text
        errors = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("llm_sessions_store_errors ")
        )
        pinned = sum(r.headers.get("x-session-reason") == "pinned" for r in replies)
        results[name] = elapsed
        print(
            f"  {name:>6}: {pinned}/{count} pinned, {errors:.0f} store errors, "
            f"{sum(r.status_code != 200 for r in replies)} non-200, {elapsed:.2f} s"
        )
    print(f"  redis / memory wall time: {results['redis'] / results['memory']:.2f}x")


# -- 3. the listing ------------------------------------------------------------------------------------


async def _heartbeat(stop: asyncio.Event) -> list[float]:
    lates: list[float] = []
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        lates.append(time.perf_counter() - started - 0.001)
    return lates


async def _listing_stall(store: AsyncSessionStore, seconds: float, poll: bool) -> list[float]:
    stop = asyncio.Event()
    beat = asyncio.ensure_future(_heartbeat(stop))
    pages = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if poll:
            cursor = ""
            while True:
                page = await store.list_sessions("tenant-7", limit=100, cursor=cursor)
                pages += 1
                cursor = page.next_cursor
                if not cursor:
                    break
        else:
            await asyncio.sleep(0.01)
    stop.set()
    return await beat


def _p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def listing(url: str, quick: bool) -> None:
    sessions = 20_000 if quick else 100_000
    print(f"3. the session listing, {sessions} sessions over 100 tenants")
    store = AsyncSessionStore(CFG)
    for i in range(sessions):
        store._sync.set_session(session_key(f"s{i}", f"tenant-{i % 100}"), "m")
    seconds = 2 if quick else 5
    idle = asyncio.run(_listing_stall(store, seconds, poll=False))
    busy = asyncio.run(_listing_stall(store, seconds, poll=True))
    print(
        "  memory: event-loop heartbeat lateness while one client pages a tenant's listing "
        f"non-stop: p50 {_p(busy, 0.5):.2f} ms, p99 {_p(busy, 0.99):.2f} ms, max "
        f"{max(busy) * 1000:.2f} ms; idle: p99 {_p(idle, 0.99):.2f} ms, max "
        f"{max(idle) * 1000:.2f} ms"
    )
    sync = store._sync
    holds: list[float] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            started = time.perf_counter()
            sync.get_session("s1")
            holds.append(time.perf_counter() - started)

    thread = threading.Thread(target=reader)
    thread.start()
    started = time.perf_counter()
    rounds = 0
    while time.perf_counter() - started < seconds:
        sync.list_sessions("tenant-7", limit=100)
        rounds += 1
    done.set()
    thread.join()
    print(
        f"  memory: one page of one tenant takes {(time.perf_counter() - started) / rounds * 1000:.1f}"
        f" ms; a get_session on another thread meanwhile: p99 {_p(holds, 0.99):.2f} ms, "
        f"max {max(holds) * 1000:.2f} ms"
    )

    client = redis.Redis.from_url(url)
    client.flushall()
    rstore = RedisSessionStore(url, CFG)
    pipe = client.pipeline(transaction=False)
    for i in range(sessions):  # the records as the store writes them, in bulk
        key = session_key(f"s{i}", f"tenant-{i % 100}")
        pipe.hset(
            rstore.key(key),
            mapping={"id": key, "model": "m", "created_at": 0, "last_used_at": 2**62,
                     "request_count": 1, "cost": 0},
        )  # fmt: skip
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    started = time.perf_counter()
    rows, cursor = 0, ""
    while True:
        page = rstore.list_sessions("tenant-7", limit=100, cursor=cursor)
        rows += len(page.sessions)
        cursor = page.next_cursor
        if not cursor:
            break
    scoped = time.perf_counter() - started
    started = time.perf_counter()
    every = rstore.get_stats(limit=100).count  # what GET /v1/sessions ran before
    full = time.perf_counter() - started
    print(
        f"  redis: one tenant's whole listing ({rows} rows) {scoped * 1000:.0f} ms vs "
        f"get_stats over all {every} sessions {full * 1000:.0f} ms ({scoped / full:.2f}x)"
    )
    rstore.close()
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is required (make redis-server)")
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            with standin_process() as upstream:
                hot_sessions(server.url, upstream, Path(tmp), args.quick)
                busy_pool(server.url, upstream, Path(tmp), args.quick)
            listing(server.url, args.quick)
        finally:
            server.kill()


if __name__ == "__main__":
    main()
