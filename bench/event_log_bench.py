"""What each session's event log costs, in one run.

    python bench/event_log_bench.py [--quick]

The routing flow's `begin` + `finish` of a realistic request (policy_bench's agent
turn), with the gateway's fields added to each turn's event, on a store keeping 100
events a session against the same store keeping none (``events_kept = 0``: the
baseline), in interleaved rounds: the memory store, then Redis (a private redis-server on
loopback), where the server's own time per script call is read from INFO commandstats
too. Then what a full log holds: the bytes of one event, and Redis' MEMORY USAGE of a
session's hash and of its log of 100.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).parent))
from llm_sessions import Config, RedisSessionStore, SessionPolicy, SessionStore
from llm_sessions.demo import PRICES, TIERS
from policy_bench import realistic_body

from redis_server import RedisServer

USAGE = {"prompt_tokens": 1500, "completion_tokens": 200}
EXTRA = {"api": "chat", "stream": True, "status": 200, "latency_ms": 812.4,
         "agent": "claude-cli/2.1.197 (external, sdk-cli)", "input_tokens": 1500,
         "output_tokens": 200, "cache_read_tokens": 1200, "cache_write_tokens": 0,
         "cache_savings_micros": 3240, "complete": True}  # fmt: skip
SESSIONS = 200


def flows(store: Any, count: int) -> Any:
    policy = SessionPolicy(store, TIERS, pricing=PRICES, max_session_cost_usd=50)
    parsed = [json.loads(realistic_body(i)) for i in range(count)]
    headers = [{"x-session-id": f"session-{i % SESSIONS}"} for i in range(count)]

    def flow(i: int) -> None:
        d = policy.begin(headers[i], parsed[i], event=EXTRA)
        policy.finish(d, served_model=d.model, usage=USAGE, event=EXTRA)

    for i in range(SESSIONS):  # every session written once: the steady state
        flow(i)
    return flow


def per_turn_us(flow: Any, n: int) -> float:
    started = time.process_time()
    for i in range(n):
        flow(i)
    return (time.process_time() - started) / n * 1e6


def compare(name: str, make: Any, n: int, rounds: int, server: Any = None) -> None:
    """Interleaved rounds of the flow on a store keeping 100 events and one keeping none;
    the ratio of the medians of CPU per turn (this process's)."""
    kept, none = flows(make(100), n), flows(make(0), n)
    with_log, without = [], []
    server_us: dict[str, list[float]] = {"kept": [], "none": []}
    for _ in range(rounds):
        for label, flow, out in (("kept", kept, with_log), ("none", none, without)):
            if server is not None:
                server.config_resetstat()
            out.append(per_turn_us(flow, n))
            if server is not None:
                stats = server.info("commandstats")
                calls = sum(s["calls"] for k, s in stats.items() if k.startswith("cmdstat_eval"))
                usec = sum(s["usec"] for k, s in stats.items() if k.startswith("cmdstat_eval"))
                server_us[label].append(usec / max(calls, 1))
    a, b = statistics.median(with_log), statistics.median(without)
    print(f"{name}: begin+finish {a:.1f} us of CPU a turn with the log, {b:.1f} us without: "
          f"ratio {a / b:.3f}")  # fmt: skip
    if server is not None:
        sa, sb = statistics.median(server_us["kept"]), statistics.median(server_us["none"])
        print(f"{name}: Redis' own time per script call {sa:.2f} us with the log, {sb:.2f} us "
              f"without: ratio {sa / sb:.3f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n, rounds = (500, 3) if args.quick else (3000, 7)

    def memory(kept: int) -> SessionStore:
        return SessionStore(Config(cleanup_interval_ms=0, events_kept=kept))

    compare("memory", memory, n, rounds)
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        raw = redis.Redis(port=server.port)
        try:
            prefixes = iter(range(1000))

            def on_redis(kept: int) -> RedisSessionStore:
                config = Config(cleanup_interval_ms=0, events_kept=kept)
                return RedisSessionStore(server.url, config, key_prefix=f"b{next(prefixes)}:")

            compare("redis", on_redis, n // 3, rounds, raw)
            store = on_redis(100)
            policy = SessionPolicy(store, TIERS, pricing=PRICES)
            body = json.loads(realistic_body(0))
            for _ in range(100):
                d = policy.begin({"x-session-id": "full"}, body)
                policy.finish(d, served_model=d.model, usage=USAGE, event=EXTRA)
            event = store.get_events("full")[-1]
            key = store.key("full")
            log = raw.memory_usage(key + ":events")
            record = raw.memory_usage(key)
            print(f"one event: {len(event.encode())} bytes of JSON; a session's record "
                  f"{record} bytes in Redis, its full log of 100 {log} bytes")  # fmt: skip
        finally:
            raw.close()
            server.stop()


if __name__ == "__main__":
    main()
