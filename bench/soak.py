"""Soak: minutes of mixed traffic through healthy gateways, counting every answer that is
not 200, with its cause.

    python bench/soak.py [--seconds S] [--seed N] [--logs DIR]

Starts, each as its own process on loopback ports: the stand-in upstream (uvicorn, whose
keep-alive timeout is 5 s), a redis-server, one gateway on the memory store and two on
that Redis. Then, until the time is up, bursts of requests go to all three gateways at
once: every API (Chat Completions, Messages, Responses), plain and streamed, at random;
most on many sessions, a fifth on three hot sessions that the two Redis gateways share;
1 to 24 keep-alive connections per gateway. Between bursts the gateways sit idle for 0 to
8 s, half the time just around 5 s, so the upstream's keep-alive timeout runs out on
their pooled connections, now and then just as the next burst reuses them. (Each burst opens its own connections
to the gateways, as a client that knows their keep-alive timeout would: this measures
the gateways, not the load generator.)

Every setup here is healthy, so the goal is that every answer is 200. The run ends with
the count per gateway, and for any that was not: its status, body and the gateway's log
lines for that request (`bench/gateway_bench.py`'s report). The exit status is 1 when
any answer was not 200.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from gateway_bench import (
    CONFIG,
    STANDIN,
    Connection,
    Failure,
    free_port,
    report_failures,
    request_bytes,
    wait_ready,
)

APIS = ("chat", "messages", "responses")
GATEWAYS = ("memory", "redis-a", "redis-b")
HOT = 3


async def burst(
    rng: random.Random,
    ports: dict[str, int],
    sessions: int,
    served: Counter[str],
    failures: list[Failure],
    number: int,
) -> None:
    """One burst to every gateway at once: `concurrency` connections each, a few requests
    on each connection."""
    concurrency = rng.choice((1, 2, 4, 8, 16, 24))
    per_connection = rng.randint(1, 6)

    async def connection(name: str, c: int, seed: int) -> None:
        local = random.Random(seed)
        port = ports[name]
        connection = Connection(port)
        try:
            for i in range(per_connection):
                hot = local.random() < 0.2
                session = f"hot{local.randrange(HOT)}" if hot else f"s{local.randrange(sessions)}"
                api, stream = local.choice(APIS), local.random() < 0.5
                request_id = f"soak-{number}-{name}-{c}-{i}"
                data = request_bytes(port, session, stream, i, api, request_id)
                status, body = await connection.exchange(data)
                served[name] += 1
                if status != 200:
                    failures.append(Failure(port, status, request_id, body))
        finally:
            connection.close()

    await asyncio.gather(
        *(connection(name, c, rng.getrandbits(32)) for name in GATEWAYS for c in range(concurrency))
    )


async def drive(
    ports: dict[str, int], seconds: float, seed: int
) -> tuple[Counter[str], list[Failure], int]:
    rng = random.Random(seed)
    served: Counter[str] = Counter()
    failures: list[Failure] = []
    stop = time.monotonic() + seconds
    bursts = 0
    while time.monotonic() < stop:
        await burst(rng, ports, 2_000, served, failures, bursts)
        bursts += 1
        # idle: often just around the upstream's keep-alive timeout (5 s), when its
        # pooled connections are being closed as the next burst reuses them
        gap = rng.uniform(4.9, 5.2) if rng.random() < 0.5 else rng.uniform(0.0, 8.0)
        await asyncio.sleep(max(0.0, min(gap, stop - time.monotonic())))
    return served, failures, bursts


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=600.0, help="how long (default 10 min)")
    ap.add_argument("--seed", type=int, default=None, help="the traffic's random seed")
    ap.add_argument("--logs", help="where to keep each process's log (default: a new temp dir)")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    names = ("upstream", "redis-server", *GATEWAYS)
    ports = {name: free_port() for name in names}
    logs_dir = Path(args.logs or tempfile.mkdtemp(prefix="soak-logs-"))
    logs_dir.mkdir(parents=True, exist_ok=True)
    logs = {ports[name]: logs_dir / f"{name}.log" for name in names}
    redis_url = f"redis://127.0.0.1:{ports['redis-server']}/0"
    print(f"soak: {args.seconds:.0f} s, seed {seed}, logs in {logs_dir}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        procs: list[subprocess.Popen[bytes]] = []

        def start(name: str, command: list[str]) -> None:
            out = stack.enter_context(open(logs[ports[name]], "wb"))
            env = {**os.environ, "BENCH_KEY": "sk-soak"}
            procs.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env))

        try:
            start("redis-server", ["redis-server", "--port", str(ports["redis-server"]),
                                   "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                   "--dir", tmp])  # fmt: skip
            start("upstream", [sys.executable, "-c", STANDIN.format(port=ports["upstream"])])
            for name in GATEWAYS:
                store = "memory://" if name == "memory" else redis_url
                config = Path(tmp) / f"{name}.toml"
                config.write_text(
                    CONFIG.format(upstream=ports["upstream"], port=ports[name], store=store)
                )
                start(name, [sys.executable, "-m", "llm_sessions", "serve",
                             "--config", str(config), "--log-level", "warning"])  # fmt: skip
            for name in names:
                wait_ready(ports[name])
            started = time.monotonic()
            served, failures, bursts = asyncio.run(drive(ports, args.seconds, seed))
            took = time.monotonic() - started
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(15)
    print(f"\n{bursts} bursts in {took:.0f} s")
    for name in GATEWAYS:
        bad = sum(1 for f in failures if f.port == ports[name])
        print(f"  {name:8} {served[name]:7} requests, {bad} not 200")
    report_failures(failures, logs, {port: name for name, port in ports.items()})
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
