"""What one expensive request costs the gateway, against ``orjson.loads`` of its body.

    python bench/body_bench.py [--mb 10] [--shapes tools,parts,...]

Starts the stand-in upstream and `llm-sessions serve` (memory store), each a process of
its own on loopback. For each hostile shape of body (about `--mb` MB, under the 10 MB
limit: millions of empty tool objects, of empty content parts, of messages, one huge text,
a million Messages tool_use blocks, deep nesting), it sends one request and measures:

- the gateway process's CPU seconds for it (from /proc), over the CPU this process
  spends in ``orjson.loads`` of the same bytes: the goal is at most 3x (or 0.5 s);
- the longest a ``GET /health`` polled every 5 ms waited while it ran (the event loop's
  stall): the goal is no more than that same bound;
- the same with four such requests at once: CPU per request, and the longest wait.

Whatever the answer (a 400 for a body a real API would refuse too, a 200 when served),
its status is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gateway_helpers import standin_process, wait_until_up

from redis_server import free_port

TICK = os.sysconf("SC_CLK_TCK")


def shapes(mb: float) -> dict[str, tuple[str, Callable[[], bytes]]]:
    size = int(mb * 1_000_000)
    hi = [{"role": "user", "content": "hi"}]

    def chat(**extra: Any) -> bytes:
        return orjson.dumps({"model": "auto", "messages": hi, **extra})

    return {
        "tools": ("/v1/chat/completions", lambda: chat(tools=[{}] * (size // 3))),
        "parts": ("/v1/chat/completions", lambda: orjson.dumps(
            {"model": "auto", "messages": [{"role": "user", "content": [{}] * (size // 3)}]})),
        "messages": ("/v1/chat/completions", lambda: orjson.dumps(
            {"model": "auto", "messages": [{"role": "user", "content": ""}] * (size // 30)})),
        "text": ("/v1/chat/completions", lambda: orjson.dumps(
            {"model": "auto", "messages": [{"role": "user", "content": "why " * (size // 4)}]})),
        "tool_use": ("/v1/messages", lambda: orjson.dumps(
            {"model": "auto", "max_tokens": 10, "messages": [{"role": "assistant", "content": [
                {"type": "tool_use", "id": "t", "name": "n", "input": {}}] * (size // 55)}]})),
        "nesting": ("/v1/chat/completions", lambda: chat(
            tools=[json.loads("[" * 120 + "]" * 120)] * (size // 250))),
    }  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def loads_seconds(body: bytes) -> float:
    """CPU seconds of orjson.loads(body): the best of three."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        orjson.loads(body)
        best = min(best, time.process_time() - started)
    return best


async def measure(url: str, pid: int, path: str, body: bytes, copies: int) -> dict[str, Any]:
    """`copies` requests of `body` at once, with /health polled beside them."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        await client.get("/health")
        waits: list[float] = []
        running = True

        async def poll() -> None:
            while running:
                started = time.perf_counter()
                await client.get("/health")
                waits.append(time.perf_counter() - started)
                await asyncio.sleep(0.005)

        poller = asyncio.create_task(poll())
        await asyncio.sleep(0.05)
        cpu = cpu_seconds(pid)
        headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
        replies = await asyncio.gather(
            *(client.post(path, content=body, headers=headers) for _ in range(copies))
        )
        spent = cpu_seconds(pid) - cpu
        running = False
        await poller
    errors = [r.json()["error"]["message"][:70] for r in replies if r.status_code >= 400]
    return {
        "cpu": spent / copies,
        "stall": max(waits),
        "status": sorted({r.status_code for r in replies}),
        "error": errors[0] if errors else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=9.5, help="body size, MB")
    parser.add_argument("--shapes", default="", help="comma-separated (default: all)")
    args = parser.parse_args()
    chosen = shapes(args.mb)
    names = [s for s in args.shapes.split(",") if s] or list(chosen)
    work = Path(tempfile.mkdtemp(prefix="body-bench-"))
    with standin_process() as upstream:
        config = work / "gateway.toml"
        config.write_text(f'[upstream]\nbase_url = "{upstream}/v1"\napis = ["chat", "messages"]\n')
        port = free_port()
        command = [sys.executable, "-m", "llm_sessions", "serve", "--config", str(config),
                   "--port", str(port), "--log-level", "warning"]  # fmt: skip
        log = open(work / "gateway.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "OPENAI_API_KEY": "sk-x"})  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(f"{url}/health", proc)
            print(f"{'shape':<10} {'MB':>5} {'loads s':>8} {'CPU s':>7} {'ratio':>6} "
                  f"{'stall s':>8} {'x4 CPU':>7} {'x4 stall':>8}  status")  # fmt: skip
            for name in names:
                path, build = chosen[name]
                body = build()
                loads = loads_seconds(body)
                one = asyncio.run(measure(url, proc.pid, path, body, 1))
                four = asyncio.run(measure(url, proc.pid, path, body, 4))
                bound = max(3 * loads, 0.5)
                print(f"{name:<10} {len(body) / 1e6:>5.1f} {loads:>8.3f} {one['cpu']:>7.3f} "
                      f"{one['cpu'] / loads:>6.1f} {one['stall']:>8.3f} {four['cpu']:>7.3f} "
                      f"{four['stall']:>8.3f}  {one['status']} {one['error']}"
                      f"{'' if one['cpu'] <= bound and one['stall'] <= bound else '  OVER'}")  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(15)
            log.close()
    print("goal: CPU and stall within max(3 x loads, 0.5 s); x4: per-request CPU alike")


if __name__ == "__main__":
    main()
