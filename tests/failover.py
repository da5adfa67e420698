"""A failover under load, measured: two gateway processes on one Redis store (Cluster or
Sentinel), many sessions, requests all along, a fault in the middle. Used by the failover
tests and by bench/failover_bench.py."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gateway_helpers import ONE_MODEL_PRICE, ONE_MODEL_TOML, gateway_processes, standin_process
from llm_sessions import token_usage


@dataclass
class Report:
    """What the clients saw and what the store kept."""

    statuses: Counter[int | str] = field(default_factory=Counter)
    served: int = 0  # answered 200 (acknowledged)
    unrecorded: int = 0  # of them, served without a session while the store was down
    lost_micros: int = 0  # acknowledged cost the store no longer has
    lost_sessions: int = 0  # sessions with some of it
    over_billed: int = 0  # sessions whose cost passed what was acknowledged (billed twice)
    backwards: int = 0  # sessions whose cost was seen to go down
    recovery_s: float = 0.0  # from the fault to the last failed request
    failed_late: int = 0  # requests failed in the last `settled_s` of the run

    def line(self) -> str:
        failed = sum(n for s, n in self.statuses.items() if s != 200)
        return (
            f"{self.served} served ({self.unrecorded} without a session), {failed} failed "
            f"({dict(self.statuses)}), recovered in "
            f"{self.recovery_s:.2f} s; {self.lost_sessions} sessions lost "
            f"{self.lost_micros} micro-USD of acknowledged cost; {self.backwards} went "
            f"backwards; {self.over_billed} billed over what was acknowledged"
        )


def run(
    directory: Path,
    store_url: str,
    fault: Callable[[], None],
    *,
    cap: bool = True,
    wait_replicas: int = 0,
    before_s: float = 2.0,
    after_s: float = 8.0,
    settled_s: float = 3.0,
    sessions: int = 48,
    threads: int = 8,
) -> Report:
    """Load two gateways for `before_s`, call `fault()`, go on for `after_s`; report (what
    failed in the last `settled_s` of it too: the gateways should have recovered by then)."""
    report = Report()
    acknowledged: Counter[str] = Counter()
    failures: list[float] = []
    seen: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    with ExitStack() as stack:
        upstream = stack.enter_context(standin_process())
        extra = f"wait_replicas = {wait_replicas}\n"
        if cap:
            extra += "[budget]\nmax_session_cost_usd = 1000\n"
        toml = ONE_MODEL_TOML.format(upstream=upstream, store=store_url, extra=extra)
        ports = stack.enter_context(gateway_processes(directory, toml))
        urls = [f"http://127.0.0.1:{port}" for port in ports]

        def load(n: int) -> None:
            with ExitStack() as mine:
                clients = [mine.enter_context(httpx.Client(base_url=u, timeout=30)) for u in urls]
                i = n
                while not stop.is_set():
                    session = f"f{i % sessions}"
                    body = {"model": "auto", "messages": [{"role": "user", "content": f"q{i}"}]}
                    try:
                        reply = clients[i % 2].post(
                            "/v1/chat/completions", json=body, headers={"x-session-id": session}
                        )
                        status: int | str = reply.status_code
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    with lock:
                        report.statuses[status] += 1
                        if status == 200:
                            report.served += 1
                            if reply.headers["x-session-reason"] == "store_unavailable":
                                report.unrecorded += 1  # no cap: served, its cost not kept
                            else:
                                usage = token_usage(reply.json()["usage"])
                                acknowledged[session] += ONE_MODEL_PRICE.usage_micros(usage)
                        else:
                            failures.append(time.monotonic())
                    i += threads

        def watch() -> None:
            with httpx.Client(base_url=urls[0], timeout=30) as http:
                while not stop.is_set():
                    for s in range(0, sessions, 4):
                        try:
                            found = http.get(f"/v1/sessions/f{s}")
                        except httpx.HTTPError:
                            continue
                        if found.status_code != 200:
                            continue
                        cost = int(found.json()["session_cost_micros"])
                        with lock:
                            if cost < seen.get(f"f{s}", 0):
                                report.backwards += 1
                            seen[f"f{s}"] = cost
                    time.sleep(0.05)

        workers = [threading.Thread(target=load, args=(n,)) for n in range(threads)]
        workers.append(threading.Thread(target=watch))
        for worker in workers:
            worker.start()
        time.sleep(before_s)
        faulted = time.monotonic()
        fault()
        time.sleep(after_s)
        stop.set()
        for worker in workers:
            worker.join()
        late = [t for t in failures if t > faulted]
        report.recovery_s = (max(late) - faulted) if late else 0.0
        report.failed_late = sum(t > faulted + after_s - settled_s for t in failures)
        with httpx.Client(base_url=urls[1], timeout=30) as http:
            for s in range(sessions):
                found = http.get(f"/v1/sessions/f{s}")
                kept = int(found.json()["session_cost_micros"]) if found.status_code == 200 else 0
                missing = acknowledged[f"f{s}"] - kept
                if missing > 0:
                    report.lost_micros += missing
                    report.lost_sessions += 1
                elif missing < 0:
                    report.over_billed += 1
    return report
