"""Benchmark of the in-memory store against a minimal dict + Lock store, in one run.

    python bench/store_bench.py [--quick]

Prints ns/op of each operation for `SessionStore` and for the baseline (bench/_baseline.py)
and their ratio; bytes per live session (tracemalloc, 200k sessions) for both; the
longest single call seen while 200k expired sessions are cleaned up; and the time of
`hash_request_content` on 10 MB beside 10 KB. Ratios are the figures: absolute times
on a shared machine are noise.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from llm_sessions import Config, SessionStore, hash_request_content

from _baseline import MinimalStore


def ns_per_op(fn: Callable[[int], object], n: int, repeats: int = 5) -> float:
    """Best-of-`repeats` mean ns per call of fn(i) for i in range(n)."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter_ns()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def compare_ops(n: int) -> list[tuple[str, float, float]]:
    ids = [f"session-{i:06d}" for i in range(n)]
    rows = []
    for name, make_ops in OPS.items():
        results = []
        for store in (
            SessionStore(Config(cleanup_interval_ms=0, max_sessions=10 * n)),
            MinimalStore(),
        ):
            prepare, op = make_ops(store, ids)
            prepare()
            results.append(ns_per_op(op, n))
        rows.append((name, results[0], results[1]))
    return rows


def _prefill(store: SessionStore | MinimalStore, ids: list[str]) -> Callable[[], None]:
    def run() -> None:
        for sid in ids:
            store.set_session(sid, "anthropic/claude-sonnet-4.6", "MEDIUM")

    return run


OPS: dict[str, Callable[..., tuple[Callable[[], None], Callable[[int], object]]]] = {
    "get_session (hit)": lambda s, ids: (_prefill(s, ids), lambda i: s.get_session(ids[i])),
    "set_session (new)": lambda s, ids: (
        s.clear_all if hasattr(s, "clear_all") else s._d.clear,
        lambda i: s.set_session(ids[i] + "n" + str(time.perf_counter_ns()), "m", "MEDIUM"),
    ),
    "set_session (existing)": lambda s, ids: (
        _prefill(s, ids),
        lambda i: s.set_session(ids[i], "anthropic/claude-sonnet-4.6", "MEDIUM"),
    ),
    "touch_session": lambda s, ids: (_prefill(s, ids), lambda i: s.touch_session(ids[i])),
    "record_request_hash": lambda s, ids: (
        _prefill(s, ids),
        lambda i: s.record_request_hash(ids[i], "0123456789abcdef0123456789abcdef"),
    ),
    "add_session_cost": lambda s, ids: (
        _prefill(s, ids),
        lambda i: s.add_session_cost(ids[i], 125),
    ),
}


def bytes_per_session(n: int) -> tuple[float, float]:
    out = []
    for make in (lambda: SessionStore(Config(cleanup_interval_ms=0, max_sessions=n)), MinimalStore):
        ids = [f"session-{i:06d}" for i in range(n)]
        models = ["anthropic/claude-sonnet-4.6", "openai/gpt-4o"]
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        store = make()
        for i, sid in enumerate(ids):
            store.set_session(sid.encode().decode(), models[i % 2], "MEDIUM")
        del ids
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        out.append((after - before) / n)
        del store
    return out[0], out[1]


def cleanup_stall(n: int) -> tuple[float, float, int]:
    """Max and median latency of get_session in another thread while `n` expired
    sessions are swept; returns (max_ms, median_us, removed)."""
    now = [0]
    store = SessionStore(
        Config(cleanup_interval_ms=0, timeout_ms=1000, max_sessions=n + 10), clock=lambda: now[0]
    )
    for i in range(n):
        store.set_session(f"session-{i:06d}", "m", "MEDIUM")
    now[0] = 10_000
    store.set_session("live", "m", "MEDIUM")
    latencies: list[int] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            t0 = time.perf_counter_ns()
            store.get_session("live")
            latencies.append(time.perf_counter_ns() - t0)

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.05)
    removed = store.expire()
    time.sleep(0.05)
    done.set()
    t.join()
    return max(latencies) / 1e6, statistics.median(latencies) / 1e3, removed


def hash_ratio() -> tuple[float, float]:
    small = ("word " * 2048)[: 10 * 1024]
    big = "word " * (2 * 1024 * 1024)
    t_small = ns_per_op(lambda i: hash_request_content(small), 2000)
    t_big = ns_per_op(lambda i: hash_request_content(big), 2000)
    return t_small, t_big


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer iterations (for a smoke run)")
    args = ap.parse_args()
    n = 20_000 if args.quick else 200_000
    print(f"{'operation':28} {'SessionStore':>13} {'minimal':>10} {'ratio':>7}")
    worst = 0.0
    for name, ours, base in compare_ops(n // 4):
        worst = max(worst, ours / base)
        print(f"{name:28} {ours:10.0f} ns {base:7.0f} ns {ours / base:6.2f}x")
    print(f"worst ratio: {worst:.2f}x (target <= 2x)")
    ours_b, base_b = bytes_per_session(n)
    print(
        f"bytes per live session ({n} sessions): SessionStore {ours_b:.0f} B, "
        f"minimal {base_b:.0f} B "
        f"(target < 450 B)"
    )
    stall_ms, median_us, removed = cleanup_stall(n)
    print(
        f"cleanup of {removed} expired sessions: longest get_session {stall_ms:.2f} ms, "
        f"median {median_us:.1f} us (target < 5 ms)"
    )
    t_small, t_big = hash_ratio()
    print(
        f"hash_request_content: 10 KB {t_small / 1e3:.1f} us, 10 MB {t_big / 1e3:.1f} us, "
        f"ratio {t_big / t_small:.2f}x (target <= 2x)"
    )


if __name__ == "__main__":
    main()
