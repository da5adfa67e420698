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
from llm_sessions import AsyncRedisSessionStore, Config, RedisSessionStore, Tier
from llm_sessions.stores.redis_core import SCRIPTS

from redis_server import CountingConnection, RedisServer

CFG = Config(cleanup_interval_ms=0)


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


HASH = b"0123456789abcdef0123456789abcdef"
MODEL = "anthropic/claude-sonnet-4.6"

# method -> (store call, the raw command of the same round trip, that command's extra args)
OPS: dict[str, tuple[Callable[[Any, str], Any], str, tuple[bytes, ...]]] = {
    "get_session": (lambda s, sid: s.get_session(sid), "hgetall", ()),
    "is_cache_sticky": (lambda s, sid: s.is_cache_sticky(sid), "hgetall", ()),
    "get_session_cost_micros": (lambda s, sid: s.get_session_cost_micros(sid), "hgetall", ()),
    "set_session": (
        lambda s, sid: s.set_session(sid, MODEL, Tier.MEDIUM),
        "set_session",
        (MODEL.encode(), b"MEDIUM", b"0"),
    ),
    "touch_session": (lambda s, sid: s.touch_session(sid), "touch_session", ()),
    "record_request_hash": (
        lambda s, sid: s.record_request_hash(sid, HASH.decode()),
        "record_request_hash",
        (HASH,),
    ),
    "add_session_cost": (
        lambda s, sid: s.add_session_cost(sid, 125),
        "add_session_cost",
        (b"125",),
    ),
    "set_cache_sticky": (
        lambda s, sid: s.set_cache_sticky(sid, "anthropic"),
        "set_cache_sticky",
        (b"anthropic",),
    ),
    "escalate_session": (
        lambda s, sid: s.escalate_session(sid),
        "escalate_session",
        (b"0", b"", b"0", b"", b"0", b""),
    ),
}


def raw_args(store: Any, sid: str, kind: str, extra: tuple[bytes, ...]) -> tuple[Any, ...]:
    """Arguments of the raw call: the key, and for scripts the store's own argument list."""
    if kind == "hgetall":
        return (store.key(sid),)
    return (store.key(sid), b"", b"%d" % CFG.timeout_ms, sid.encode(), *extra)


def sync_bench(server: RedisServer, n: int) -> list[tuple[str, int, float, float]]:
    pool = redis.ConnectionPool(
        port=server.port, connection_class=CountingConnection, max_connections=1
    )
    store = RedisSessionStore(redis.Redis(connection_pool=pool), CFG)
    raw = redis.Redis(port=server.port)
    shas = {name: raw.script_load(src) for name, src in SCRIPTS.items()}
    ids = [f"session-{i:06d}" for i in range(n)]
    rows = []
    for name, (call, kind, extra) in OPS.items():
        for sid in ids:
            store.set_session(sid, MODEL, Tier.SIMPLE)
        args = [raw_args(store, sid, kind, extra) for sid in ids]
        before = CountingConnection.sends
        call(store, ids[0])
        trips = CountingConnection.sends - before
        ours = rate(lambda i, call=call: call(store, ids[i]), n)
        if kind == "hgetall":
            base = rate(lambda i, args=args: raw.hgetall(*args[i]), n)
        else:
            base = rate(lambda i, args=args, sha=shas[kind]: raw.evalsha(sha, 1, *args[i]), n)
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
    for name, (call, kind, extra) in OPS.items():
        for sid in ids:
            await store.set_session(sid, MODEL, Tier.SIMPLE)
        args = [raw_args(store, sid, kind, extra) for sid in ids]
        ours = await arate(lambda i, call=call: call(store, ids[i]), n)
        if kind == "hgetall":
            base = await arate(lambda i, args=args: raw.hgetall(*args[i]), n)
        else:
            base = await arate(
                lambda i, args=args, sha=shas[kind]: raw.evalsha(sha, 1, *args[i]), n
            )
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
