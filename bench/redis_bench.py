"""Benchmark of the Redis stores against raw redis-py, in one run, on a private local
redis-server (started and stopped here).

    python bench/redis_bench.py [--quick]

For each method: ops/s of `RedisSessionStore` on one connection, beside raw redis-py
doing the same round trip on one connection (EVALSHA of the same script for writes,
HGETALL for reads); and ops/s of `AsyncRedisSessionStore` with 50 concurrent tasks
beside raw ``redis.asyncio`` with 50 tasks. The ratio store/raw is the figure (target
>= 0.8). Round trips per call are counted on the socket.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aredis

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from redis_server import RedisServer

from llm_sessions import AsyncRedisSessionStore, Config, RedisSessionStore, Tier
from llm_sessions.stores.redis_core import SCRIPTS

CFG = Config(cleanup_interval_ms=0)


class Counting(redis.Connection):
    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        super().send_packed_command(command, check_health)


def rate(fn: Callable[[int], object], n: int, repeats: int = 3) -> float:
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        best = max(best, n / (time.perf_counter() - t0))
    return best


async def arate(
    fn: Callable[[int], Awaitable[object]], n: int, tasks: int = 50, repeats: int = 3
) -> float:
    async def worker(k: int) -> None:
        for i in range(k, n, tasks):
            await fn(i)

    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(tasks)))
        best = max(best, n / (time.perf_counter() - t0))
    return best


def operations(
    store: Any, ids: list[str]
) -> dict[str, tuple[Callable[[int], Any], str, Callable[[int], list[Any]]]]:
    """name -> (call, raw kind, raw args for that call)."""
    key = store.key
    now = b""
    timeout = b"%d" % CFG.timeout_ms

    def script_args(i: int, *extra: bytes) -> list[Any]:
        return [key(ids[i]), now, timeout, ids[i].encode(), *extra]

    return {
        "get_session": (lambda i: store.get_session(ids[i]), "hgetall", lambda i: [key(ids[i])]),
        "is_cache_sticky": (lambda i: store.is_cache_sticky(ids[i]), "hgetall", lambda i: [key(ids[i])]),
        "get_session_cost_micros": (lambda i: store.get_session_cost_micros(ids[i]), "hgetall", lambda i: [key(ids[i])]),
        "set_session": (lambda i: store.set_session(ids[i], "anthropic/claude-sonnet-4.6", Tier.MEDIUM), "set_session",
                        lambda i: script_args(i, b"anthropic/claude-sonnet-4.6", b"MEDIUM", b"0")),
        "touch_session": (lambda i: store.touch_session(ids[i]), "touch_session", lambda i: script_args(i)),
        "record_request_hash": (lambda i: store.record_request_hash(ids[i], "0123456789abcdef0123456789abcdef"),
                                "record_request_hash", lambda i: script_args(i, b"0123456789abcdef0123456789abcdef")),
        "add_session_cost": (lambda i: store.add_session_cost(ids[i], 125), "add_session_cost", lambda i: script_args(i, b"125")),
        "set_cache_sticky": (lambda i: store.set_cache_sticky(ids[i], "anthropic"), "set_cache_sticky",
                             lambda i: script_args(i, b"anthropic")),
        "escalate_session": (lambda i: store.escalate_session(ids[i]), "escalate_session",
                             lambda i: script_args(i, b"0", b"", b"0", b"", b"0", b"")),
    }  # fmt: skip


def sync_bench(server: RedisServer, n: int) -> list[tuple[str, int, float, float]]:
    pool = redis.ConnectionPool(port=server.port, connection_class=Counting, max_connections=1)
    store = RedisSessionStore(redis.Redis(connection_pool=pool), CFG)
    raw = redis.Redis(port=server.port)
    shas = {name: raw.script_load(src) for name, src in SCRIPTS.items()}
    ids = [f"session-{i:06d}" for i in range(n)]
    rows = []
    for name, (call, kind, raw_args) in operations(store, ids).items():
        for i in range(n):
            store.set_session(ids[i], "anthropic/claude-sonnet-4.6", Tier.SIMPLE)
        before = Counting.sends
        call(0)
        trips = Counting.sends - before
        ours = rate(call, n)
        if kind == "hgetall":
            base = rate(lambda i: raw.hgetall(raw_args(i)[0]), n)
        else:
            base = rate(lambda i, kind=kind: raw.evalsha(shas[kind], 1, *raw_args(i)), n)
        rows.append((name, trips, ours, base))
    store.close()
    raw.close()
    return rows


async def async_bench(server: RedisServer, n: int) -> list[tuple[str, float, float]]:
    store = AsyncRedisSessionStore(server.url, CFG)
    raw = aredis.Redis(port=server.port, max_connections=50)
    shas = {name: await raw.script_load(src) for name, src in SCRIPTS.items()}
    ids = [f"session-{i:06d}" for i in range(n)]
    rows = []
    for name, (call, kind, raw_args) in operations(store, ids).items():
        for i in range(n):
            await store.set_session(ids[i], "anthropic/claude-sonnet-4.6", Tier.SIMPLE)
        ours = await arate(call, n)
        if kind == "hgetall":
            base = await arate(lambda i: raw.hgetall(raw_args(i)[0]), n)
        else:
            base = await arate(lambda i, kind=kind: raw.evalsha(shas[kind], 1, *raw_args(i)), n)
        rows.append((name, ours, base))
    await store.aclose()
    await raw.aclose()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 2_000 if args.quick else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            print(f"sync, one connection, {n} calls each (reads: one read script, HMGET + TIME)")
            print(f"{'method':26} {'trips':>5} {'store ops/s':>12} {'raw ops/s':>10} {'ratio':>6}")
            ratios = []
            for name, trips, ours, base in sync_bench(server, n):
                ratios.append(ours / base)
                print(f"{name:26} {trips:>5} {ours:12.0f} {base:10.0f} {ours / base:6.2f}")
            print(f"\nasync, 50 concurrent tasks, {n} calls each")
            print(f"{'method':26} {'store ops/s':>12} {'raw ops/s':>10} {'ratio':>6}")
            for name, ours, base in asyncio.run(async_bench(server, n)):
                ratios.append(ours / base)
                print(f"{name:26} {ours:12.0f} {base:10.0f} {ours / base:6.2f}")
            print(
                f"\nworst ratio {min(ratios):.2f}, median {statistics.median(ratios):.2f} (target >= 0.80)"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
