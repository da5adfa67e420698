"""Benchmark of the routing flow, in one run.

    python bench/policy_bench.py [--quick]

1. Memory store: `begin` + `finish` of one realistic request (a 10-message agent history,
   2 tools, about 4 KB of text) beside a bare ``json.loads`` of that request's body.
   Target: the whole session flow costs less than parsing the body.
2. Redis (a private redis-server on loopback): round trips per request, counted on the
   socket, and requests/s of `begin` + `finish` beside raw redis-py doing the same number
   of round trips (EVALSHA of the compare-and-set script against the version it knows,
   twice), in the steady state: every session written before.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from llm_sessions import Config, RedisSessionStore, SessionPolicy, SessionStore
from llm_sessions.demo import PRICES, TIERS
from llm_sessions.stores.redis_core import SCRIPTS, RedisOps, encode_entry

from redis_server import CountingConnection, RedisServer

TOOLS = [
    {"type": "function", "function": {"name": "run_tests", "description": "Run the test suite",
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "read_file", "description": "Read a file",
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}},
]  # fmt: skip


def realistic_body(turn: int) -> bytes:
    """A 10-message agent history with 2 tools and about 4 KB of text."""
    log = "".join(f"tests/test_auth.py::test_case_{i} PASSED\n" for i in range(40))
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a coding agent. Fix failing tests. " * 4},
        {"role": "user", "content": "The login tests fail since yesterday's merge, find out why."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "run_tests", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": log + "FAILED test_refresh\n"},
        {"role": "assistant", "content": "The refresh test fails. Reading the module."},
        {"role": "user", "content": "Go ahead."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c2", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c2", "content": "def refresh(token):\n    ...\n" * 40},
        {"role": "assistant", "content": "The token expiry is compared in local time."},
        {"role": "user", "content": f"Fix it and run the tests again (turn {turn})."},
    ]  # fmt: skip
    return json.dumps(
        {"model": "auto", "messages": messages, "tools": TOOLS, "max_tokens": 1024}
    ).encode()


def per_call_us(fn: Any, n: int, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def memory_bench(n: int) -> None:
    bodies = [realistic_body(i) for i in range(n)]
    parsed = [json.loads(b) for b in bodies]
    print(f"request body: {len(bodies[0])} bytes, {len(parsed[0]['messages'])} messages, 2 tools")
    store = SessionStore(Config(cleanup_interval_ms=0, max_sessions=10 * n))
    policy = SessionPolicy(store, TIERS, pricing=PRICES, max_session_cost_usd=50)
    headers = [{"x-session-id": f"session-{i % 1000}"} for i in range(n)]

    def flow(i: int) -> None:
        d = policy.begin(headers[i], parsed[i])
        policy.finish(
            d, served_model=d.model, usage={"prompt_tokens": 1500, "completion_tokens": 200}
        )

    t_flow = per_call_us(flow, n)
    t_json = per_call_us(lambda i: json.loads(bodies[i]), n)
    print(
        f"memory store: begin+finish {t_flow:.1f} us, json.loads of the body {t_json:.1f} us, "
        f"ratio {t_flow / t_json:.2f} (target < 1)"
    )


def redis_bench(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            pool = redis.ConnectionPool(
                port=server.port, connection_class=CountingConnection, max_connections=1
            )
            store = RedisSessionStore(
                redis.Redis(connection_pool=pool), Config(cleanup_interval_ms=0)
            )
            policy = SessionPolicy(store, TIERS, pricing=PRICES, max_session_cost_usd=50)
            count = max(n, 1000)
            parsed = [json.loads(realistic_body(i)) for i in range(count)]
            headers = [{"x-session-id": f"session-{i % 1000}"} for i in range(count)]

            def flow(i: int) -> None:
                d = policy.begin(headers[i], parsed[i])
                policy.finish(
                    d, served_model=d.model, usage={"prompt_tokens": 1500, "completion_tokens": 200}
                )

            for i in range(1000):  # every session written once: the steady state
                flow(i)
            before = CountingConnection.sends
            flow(1)
            trips = CountingConnection.sends - before
            ours = n / (per_call_us(flow, n, repeats=3) * n / 1e6)

            raw = redis.Redis(port=server.port)
            cas_sha = raw.script_load(SCRIPTS["compare_and_set"])
            ops = RedisOps(Config(), "raw:", None)
            entry = store.get_session("session-1")
            assert entry is not None
            timeout = b"%d" % Config().timeout_ms
            versions: dict[str, bytes] = {}

            def raw_flow(i: int) -> None:
                """begin, then finish: one compare-and-set each against the known version."""
                sid = f"session-{i % 1000}"
                key = ops.key(sid)
                record = encode_entry(sid, entry._replace(last_used_at=int(time.time() * 1000)))
                for _ in range(2):
                    while True:
                        version = versions.get(sid, b"")
                        reply = raw.evalsha(
                            cas_sha,
                            1,
                            key,
                            b"",
                            timeout,
                            sid.encode(),
                            version,
                            b"0",
                            b"-1",
                            *record,
                        )
                        if reply[0] == 1:
                            versions[sid] = reply[1]
                            break
                        versions[sid] = reply[2][-1] or b""

            for i in range(1000):
                raw_flow(i)
            base = n / (per_call_us(raw_flow, n, repeats=3) * n / 1e6)
            print(
                f"redis: {trips} round trips per request (begin + finish); "
                f"{ours:.0f} requests/s vs raw redis-py {base:.0f} requests/s for the same "
                f"{trips} round trips: ratio {ours / base:.2f}"
            )
            store.close()
            raw.close()
        finally:
            server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 500 if args.quick else 3000
    memory_bench(n)
    redis_bench(n)


if __name__ == "__main__":
    main()
