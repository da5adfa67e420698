"""Code run in child processes by the cross-process tests (importable by spawn)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from llm_sessions import Config, RedisSessionStore


def run_threads(work: Callable[[int], None], count: int) -> None:
    """`work(0)` .. `work(count - 1)`, each in a thread of its own; returns when all end."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def add_costs(url: str, session_ids: list[str], threads: int, calls: int) -> int:
    """`threads` threads each add 1..n micros `calls` times, spread over `session_ids`;
    returns the total this process added."""
    store = RedisSessionStore(url, Config(cleanup_interval_ms=0), socket_timeout=5)
    added = [0] * threads

    def work(t: int) -> None:
        for i in range(calls):
            micros = (i % 7) + 1
            store.add_session_cost(session_ids[(t + i) % len(session_ids)], micros)
            added[t] += micros

    run_threads(work, threads)
    store.close()
    return sum(added)


def read_session(url: str, session_id: str, now: int | None) -> Any:
    store = RedisSessionStore(
        url, Config(cleanup_interval_ms=0), clock=(lambda: now) if now else None
    )
    entry = store.get_session(session_id)
    store.close()
    return None if entry is None else entry.to_dict()


def pin_session(url: str, session_id: str, model: str, now: int) -> None:
    store = RedisSessionStore(url, Config(cleanup_interval_ms=0), clock=lambda: now)
    store.set_session(session_id, model, "MEDIUM")
    store.close()


POLICY_TIERS = {"SIMPLE": {"primary": "p/simple", "fallback": ["p/backup"]}}


def budget_edge(url: str, session_id: str, pairs: int, cap_usd: str, worst: int) -> tuple[int, int]:
    """`pairs` concurrent begin/finish pairs (threads) on one session over Redis; each
    reserves `worst` micros and spends at most that. Returns (admitted, refused)."""
    from llm_sessions import BudgetExceeded, Pricing, SessionPolicy

    store = RedisSessionStore(url, Config(cleanup_interval_ms=0), socket_timeout=5)
    prices = {"p/simple": Pricing(0, 1), "p/backup": Pricing(0, 1)}
    policy = SessionPolicy(store, POLICY_TIERS, pricing=prices, max_session_cost_usd=cap_usd)
    admitted = refused = 0
    lock = threading.Lock()
    barrier = threading.Barrier(pairs)

    def one(i: int) -> None:
        nonlocal admitted, refused
        body = {"messages": [{"role": "user", "content": f"turn {i}"}], "max_tokens": worst}
        barrier.wait()
        try:
            d = policy.begin({"x-session-id": session_id}, body)
        except BudgetExceeded:
            with lock:
                refused += 1
            return
        policy.finish(d, served_model=d.model, cost_micros=worst - (i % 3))
        with lock:
            admitted += 1

    run_threads(one, pairs)
    store.close()
    return admitted, refused


def hot_session(
    url: str, session_id: str, threads: int, calls: int, cap_usd: int
) -> tuple[int, int]:
    """`threads` threads each run `calls` begin/finish pairs on one session over Redis, a
    cap admitting all; returns (cost this process charged, exceptions seen)."""
    from llm_sessions import Pricing, SessionPolicy

    store = RedisSessionStore(url, Config(cleanup_interval_ms=0), socket_timeout=5)
    prices = {"p/simple": Pricing(0, 1), "p/backup": Pricing(0, 1)}
    policy = SessionPolicy(store, POLICY_TIERS, pricing=prices, max_session_cost_usd=cap_usd)
    charged, errors = [0] * threads, [0] * threads
    barrier = threading.Barrier(threads)

    def work(t: int) -> None:
        barrier.wait()
        for i in range(calls):
            body = {"messages": [{"role": "user", "content": f"{t}/{i}"}], "max_tokens": 10}
            try:
                d = policy.begin({"x-session-id": session_id}, body)
                policy.finish(d, served_model=d.model, cost_micros=1 + (t + i) % 5)
                charged[t] += 1 + (t + i) % 5
            except Exception:
                errors[t] += 1

    run_threads(work, threads)
    store.close()
    return sum(charged), sum(errors)
