"""Benchmark of the gateway against the stand-in upstream it fronts, in one run.

    python bench/gateway_bench.py [--quick]

Starts the stand-in upstream and the gateway (``llm-sessions serve``, memory store,
pricing and a budget on) as their own processes on loopback ports, then drives them with
a small keep-alive HTTP/1.1 load generator written on asyncio streams (so the generator
costs little next to what it measures). For non-streaming and streaming requests at
concurrency 1 and 64, it measures (a) the stand-in directly and (b) the gateway in front
of it, and reports the latency the gateway adds (p50, p99) and its throughput as a
ratio of the direct one, for each API (Chat Completions, Anthropic Messages, OpenAI
Responses). Then 100k requests over 10k sessions through the gateway, with its resident
memory sampled along the way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STANDIN = """
import uvicorn
from llm_sessions.server.standin import StandIn
uvicorn.run(StandIn().app(), host="127.0.0.1", port={port}, log_level="warning", access_log=False)
"""

CONFIG = """
[upstream]
base_url = "http://127.0.0.1:{upstream}/v1"
api_key_env = "BENCH_KEY"
apis = ["chat", "messages", "responses"]
[server]
port = {port}
[sessions]
max_sessions = 100000
[routing.tiers.SIMPLE]
primary = "openai/gpt-4o-mini"
fallback = ["groq/llama-3.1-8b"]
[routing.tiers.MEDIUM]
primary = "anthropic/claude-haiku-4.5"
[routing.tiers.COMPLEX]
primary = "anthropic/claude-sonnet-4.6"
[pricing."openai/gpt-4o-mini"]
input_per_mtok = 0.15
output_per_mtok = 0.6
[pricing."anthropic/claude-haiku-4.5"]
input_per_mtok = 1
output_per_mtok = 5
[budget]
max_session_cost_usd = 1000.0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request_bytes(port: int, session: str, stream: bool, turn: int = 0, api: str = "chat") -> bytes:
    system = "You are a helpful assistant."
    question = {"role": "user", "content": f"Summarise the design notes, part {turn % 7}."}
    if api == "chat":
        path, auth = "/v1/chat/completions", "authorization: Bearer bench"
        payload = {"model": "auto", "stream": stream,
                   "messages": [{"role": "system", "content": system}, question]}  # fmt: skip
    elif api == "messages":
        path, auth = "/v1/messages", "x-api-key: bench\r\nanthropic-version: 2023-06-01"
        payload = {"model": "auto", "stream": stream, "max_tokens": 256, "system": system,
                   "messages": [question]}  # fmt: skip
    else:
        path, auth = "/v1/responses", "authorization: Bearer bench"
        payload = {"model": "auto", "stream": stream, "max_output_tokens": 256,
                   "instructions": system, "input": question["content"]}  # fmt: skip
    body = json.dumps(payload).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\n{auth}\r\n"
        f"x-session-id: {session}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readline()).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def load(
    port: int, concurrency: int, total: int, stream: bool, sessions: int, api: str = "chat"
) -> tuple[list[float], float]:
    """Send `total` requests over `concurrency` keep-alive connections; return the
    per-request latencies (s) and the requests/s."""
    latencies: list[float] = []
    per = total // concurrency

    async def worker(w: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(per):
            n = w * per + i
            data = request_bytes(port, f"s{n % sessions}", stream, n // sessions, api)
            t0 = time.perf_counter()
            writer.write(data)
            status = await read_response(reader)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"HTTP {status}")
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return latencies, len(latencies) / (time.perf_counter() - t0)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n1, n64, soak = (300, 3_000, 10_000) if args.quick else (2_000, 20_000, 100_000)
    up_port, gw_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "gateway.toml"
        config.write_text(CONFIG.format(upstream=up_port, port=gw_port))
        env = {**os.environ, "BENCH_KEY": "sk-bench"}
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        standin = subprocess.Popen([sys.executable, "-c", STANDIN.format(port=up_port)], **quiet)  # type: ignore[call-overload]
        gateway = subprocess.Popen(
            [sys.executable, "-m", "llm_sessions", "serve", "--config", str(config)], **quiet
        )  # type: ignore[call-overload]
        try:
            wait_ready(up_port)
            wait_ready(gw_port)
            asyncio.run(load(gw_port, 8, 400, False, 100))  # warm up both
            asyncio.run(load(up_port, 8, 400, False, 100))
            print(
                f"{'':24} {'direct p50':>10} {'gateway p50':>11} {'added p50':>9} {'added p99':>9}"
                f" {'direct rps':>10} {'gateway rps':>11} {'ratio':>6}"
            )
            cells = [
                (api, stream, concurrency, total)
                for api in ("chat", "messages", "responses")
                for stream in (False, True)
                for concurrency, total in ((1, n1), (64, n64))
            ]
            for api, stream, concurrency, total in cells:
                direct, direct_rps = asyncio.run(
                    load(up_port, concurrency, total, stream, 10_000, api)
                )
                via, via_rps = asyncio.run(load(gw_port, concurrency, total, stream, 10_000, api))
                name = f"{api} {'stream' if stream else 'plain'} c={concurrency}"
                d50, v50 = statistics.median(direct) * 1e3, statistics.median(via) * 1e3
                d99, v99 = pct(direct, 0.99) * 1e3, pct(via, 0.99) * 1e3
                print(
                    f"{name:24} {d50:8.2f}ms {v50:9.2f}ms {v50 - d50:7.2f}ms {v99 - d99:7.2f}ms"
                    f" {direct_rps:10.0f} {via_rps:11.0f} {via_rps / direct_rps:6.2f}"
                )
            print(f"\nsoak: {soak} requests over 10000 sessions through the gateway (c=64)")
            samples = []
            for step in range(5):
                asyncio.run(load(gw_port, 64, soak // 5, False, 10_000))
                samples.append(rss_kb(gateway.pid))
                print(
                    f"  after {(step + 1) * soak // 5:>7} requests: gateway RSS {samples[-1] / 1024:.1f} MB"
                )
            print(
                f"  growth from the first fifth to the end: {(samples[-1] - samples[0]) / 1024:+.1f} MB "
                f"({(samples[-1] / samples[0] - 1) * 100:+.1f}%)"
            )
        finally:
            for proc in (gateway, standin):
                proc.terminate()
                proc.wait(15)


if __name__ == "__main__":
    main()
