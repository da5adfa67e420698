"""Scale-out, measured in one run: `serve --workers 2` against `--workers 1` on Redis, and
what a Redis Cluster, Sentinel and `store.wait_replicas = 1` cost against one server.

    python bench/scale_bench.py [--seconds S] [--rounds N]

Every process on loopback: a minimal upstream (asyncio, a fixed chat answer, so that it
takes as little of the machine's CPU as possible), Redis (one server; a cluster of 3+3;
a primary, a replica and 3 sentinels), the gateway, and the load: `wrk` when it is
installed (``apt-get install wrk``: C, one thread, so the gateway gets most of the
machine), else the keep-alive load generator of gateway_bench.py; Chat Completions, 32
connections, 48 sessions. Cells interleave over
the rounds; reported: throughput and the gateway's CPU per 1,000 requests (all its
workers), medians, and their ratios to the baseline of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gateway_bench import cpu_s, free_port, load, wait_ready
from gateway_helpers import ONE_MODEL_TOML

from redis_server import RedisClusterServers, RedisSentinelServers, RedisServer

UPSTREAM = r"""
import asyncio, json
BODY = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 40, "completion_tokens": 3, "total_tokens": 43}}).encode()
ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
          + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)

async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            writer.write(ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", {port})
    await server.serve_forever()

asyncio.run(main())
"""


def tree(pid: int) -> list[int]:
    """`pid` and every process under it."""
    found, children = [pid], {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    i = 0
    while i < len(found):
        found += children.get(found[i], [])
        i += 1
    return found


@contextmanager
def gateway(
    work: Path, upstream: int, store: str, workers: int, wait: int = 0
) -> Iterator[tuple[int, int]]:
    config = work / f"gateway-{free_port()}.toml"
    config.write_text(ONE_MODEL_TOML.format(upstream=f"http://127.0.0.1:{upstream}", store=store,
                                            extra=f"wait_replicas = {wait}"))  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_sessions", "serve", "--config", str(config), "--port",
         str(port), "--workers", str(workers), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "OPENAI_API_KEY": "sk-bench"},
    )  # fmt: skip
    try:
        wait_ready(port)
        time.sleep(1.0 + workers)  # every worker up
        asyncio.run(load(port, 8, False, 48, seconds=0.5))  # warm
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer bench"
local n = 0
request = function()
  n = n + 1
  local body = '{"model": "auto", "messages": [{"role": "system", "content": "You are a ' ..
    'helpful assistant."}, {"role": "user", "content": "Summarise part ' .. (n % 7) .. '."}]}'
  wrk.headers["x-session-id"] = "s" .. (n % 48)
  return wrk.format(nil, "/v1/chat/completions", nil, body)
end
"""


def run_wrk(port: int, seconds: float, script: Path) -> tuple[int, float]:
    """(requests answered 2xx, requests/s) of one wrk run."""
    done = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{int(seconds)}s", "-s", str(script), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    total = int(re.search(r"(\d+) requests in", done.stdout).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    if bad:
        print(f"  {bad.group(1)} answers were not 2xx", flush=True)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))  # type: ignore[union-attr]
    return total - (int(bad.group(1)) if bad else 0), rate


def measure(port: int, pid: int, seconds: float, script: Path | None) -> tuple[float, float]:
    """(requests/s, gateway CPU ms per 1,000 requests) over `seconds` of load."""
    pids = tree(pid)
    before = sum(cpu_s(p) for p in pids)
    if script is not None:
        count, rate = run_wrk(port, seconds, script)
    else:
        latencies, rate = asyncio.run(load(port, 32, False, 48, seconds=seconds))
        count = len(latencies)
    spent = sum(cpu_s(p) for p in pids) - before
    return rate, spent * 1e6 / count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    script = None
    if shutil.which("wrk"):
        script = work / "load.lua"
        script.write_text(WRK_SCRIPT)
    print(f"load: {'wrk' if script else 'the Python load generator (no wrk)'}", flush=True)
    upstream = free_port()
    up = subprocess.Popen([sys.executable, "-c", UPSTREAM.replace("{port}", str(upstream))])
    single = RedisServer(work / "redis").start()
    cluster = RedisClusterServers(work / "cluster").start()
    sentinel = RedisSentinelServers(work / "sentinel").start()
    cells = {
        "workers 1, one Redis": (single.url, 1, 0),
        "workers 2, one Redis": (single.url, 2, 0),
        "workers 1, Cluster 3+3": (cluster.url, 1, 0),
        "workers 1, Sentinel": (sentinel.url, 1, 0),
        "workers 1, Sentinel, wait_replicas=1": (sentinel.url, 1, 1),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in cells}
    try:
        wait_ready(upstream)
        for round_ in range(args.rounds):
            for name, (store, workers, wait) in cells.items():
                with gateway(work, upstream, store, workers, wait) as (port, pid):
                    results[name].append(measure(port, pid, args.seconds, script))
                rate, cpu = results[name][-1]
                print(f"round {round_ + 1} {name:<40} {rate:8.0f} req/s {cpu:8.0f} ms CPU/1k",
                      flush=True)  # fmt: skip
    finally:
        up.terminate()
        single.stop()
        cluster.stop()
        sentinel.stop()
    medians = {n: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v))
               for n, v in results.items()}  # fmt: skip
    base_rate, base_cpu = medians["workers 1, one Redis"]
    print(f"\n{'cell':<40} {'req/s':>8} {'x base':>7} {'CPU/1k':>8} {'x base':>7}")
    for name, (rate, cpu) in medians.items():
        print(f"{name:<40} {rate:8.0f} {rate / base_rate:7.2f} {cpu:8.0f} {cpu / base_cpu:7.2f}")
    print(f"\ncores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
