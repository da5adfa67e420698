"""Benchmark of the gateway against a bare passthrough and the upstream it fronts, in one run.

    python bench/gateway_bench.py [--quick] [--seconds S] [--rounds N]

Starts, each as its own process on loopback ports: the stand-in upstream; the *floor*, a
bare aiohttp passthrough that forwards each request's bytes to the stand-in without
parsing them and relays the answer as it comes; `llm-sessions serve` with the memory
store; and `llm-sessions serve` with a Redis store (its own redis-server). A small
keep-alive HTTP/1.1 load generator on asyncio streams drives each in turn, for every API
the gateway serves (Chat Completions, Anthropic Messages, OpenAI Responses), plain and
streamed, at concurrency 1, 16 and 64, each cell for a fixed time, in interleaved rounds.

With ``--litellm PATH`` (the ``litellm`` command of a LiteLLM proxy installed elsewhere,
e.g. ``pip install 'litellm[proxy]'`` in its own virtualenv), that proxy runs too, one
worker and no database, in front of the same stand-in, as a peer: for Chat Completions.

Each process's output is kept in a log (``--logs DIR``, else a new temp dir), every
request carries an ``x-request-id``, and every answer that is not 200 is kept with its
body: the run ends with their count and the first few, each with the log lines of the
process that answered it that name its request (the gateway logs every 5xx with its cause).

Reported per cell: p50 latency added to the stand-in's own, throughput, and the CPU
seconds the proxy process spent per 1,000 requests (the steadiest figure on a shared
machine); then the ratios the efficiency goals are stated in: gateway CPU / floor CPU,
gateway throughput / floor throughput at c=16, Redis gateway CPU / memory gateway CPU,
and Redis round trips (scripts run) per routed request. Then 100k requests over 10k sessions through the
memory gateway, with its resident memory sampled along the way.
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
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import redis

STANDIN = """
import uvicorn
from llm_sessions.server.standin import StandIn
uvicorn.run(StandIn().app(), host="127.0.0.1", port={port}, log_level="warning", access_log=False)
"""

# The floor: what any proxy must do at least (accept, forward the bytes, relay the answer).
FLOOR = """
import aiohttp
from aiohttp import web

UPSTREAM = "http://127.0.0.1:{upstream}"
HOP = {{"host", "content-length", "transfer-encoding", "connection"}}

async def start(app):
    app["client"] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=200), auto_decompress=False
    )

async def stop(app):
    await app["client"].close()

async def forward(request):
    body = await request.read()
    headers = {{k: v for k, v in request.headers.items() if k.lower() not in HOP}}
    async with request.app["client"].post(UPSTREAM + request.path, data=body,
                                          headers=headers) as upstream:
        out = web.StreamResponse(status=upstream.status)
        out.content_type = upstream.content_type
        await out.prepare(request)
        async for chunk in upstream.content.iter_any():
            await out.write(chunk)
        await out.write_eof()
        return out

app = web.Application()
app.on_startup.append(start)
app.on_cleanup.append(stop)
app.router.add_post("/{{tail:.*}}", forward)
web.run_app(app, host="127.0.0.1", port={port}, access_log=None, print=None)
"""

CONFIG = """
[upstream]
base_url = "http://127.0.0.1:{upstream}/v1"
api_key_env = "BENCH_KEY"
apis = ["chat", "messages", "responses"]
[server]
port = {port}
[store]
url = "{store}"
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

LITELLM = """
model_list:
  - model_name: auto
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:{upstream}/v1
      api_key: sk-bench
litellm_settings:
  drop_params: true
"""

APIS = ("chat", "messages", "responses")
TARGETS = ("direct", "floor", "memory", "redis", "translated")
# A 10-message agent conversation of about 4 KB, as the efficiency issue measures.
HISTORY = [
    {"role": "user" if i % 2 == 0 else "assistant",
     "content": f"Step {i}: " + "the design notes say the cache must stay warm. " * 8}
    for i in range(9)
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request_bytes(
    port: int, session: str, stream: bool, turn: int = 0, api: str = "chat", request_id: str = ""
) -> bytes:
    system = "You are a helpful assistant."
    question = {"role": "user", "content": f"Summarise the design notes, part {turn % 7}."}
    messages = [*HISTORY, question]
    if api == "chat":
        path, auth = "/v1/chat/completions", "authorization: Bearer bench"
        payload = {"model": "auto", "stream": stream,
                   "messages": [{"role": "system", "content": system}, *messages]}  # fmt: skip
    elif api == "messages":
        path, auth = "/v1/messages", "x-api-key: bench\r\nanthropic-version: 2023-06-01"
        payload = {"model": "auto", "stream": stream, "max_tokens": 256, "system": system,
                   "messages": messages}  # fmt: skip
    else:
        path, auth = "/v1/responses", "authorization: Bearer bench"
        payload = {"model": "auto", "stream": stream, "max_output_tokens": 256, "store": False,
                   "instructions": system, "input": messages}  # fmt: skip
    body = json.dumps(payload).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\n{auth}\r\n"
        f"x-session-id: {session}\r\nx-request-id: {request_id}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 answer: its status, and its body when the status is not 200 (a 200's
    body is read and dropped)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int((await reader.readline()).strip(), 16)
            parts.append((await reader.readexactly(size + 2))[:-2])
            if size == 0:
                break
        body = b"".join(parts)
    return status, (body if status != 200 else b"")


class Connection:
    """A keep-alive connection to a loopback port: `exchange` sends one request and reads
    its answer; a connection closed without one answers status 0 (with the error as its
    body) and is reopened for the next request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, data: bytes) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self._streams
        writer.write(data)
        try:
            return await read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.close()
            return 0, f"closed without an answer: {exc!r}".encode()

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


@dataclass
class Failure:
    """An answer that was not 200 (status 0: the connection closed without one)."""

    port: int
    status: int
    request_id: str
    body: bytes


FAILURES: list[Failure] = []


async def load(
    port: int,
    concurrency: int,
    stream: bool,
    sessions: int,
    api: str = "chat",
    seconds: float = 0.0,
    total: int = 0,
) -> tuple[list[float], float]:
    """Requests over `concurrency` keep-alive connections for `seconds` (or `total`
    requests); the per-request latencies (s) and the requests/s. Each request carries an
    ``x-request-id``; every answer that is not 200, and every connection the server closed
    without an answer (status 0; the worker opens another), goes to `FAILURES` with its
    body, and is counted here."""
    latencies: list[float] = []
    failed = 0
    stop = time.perf_counter() + seconds
    per = total // concurrency if total else 0
    run = f"{port}-{time.monotonic_ns()}"

    async def worker(w: int) -> None:
        nonlocal failed
        connection = Connection(port)
        i = 0
        while (i < per) if per else (time.perf_counter() < stop):
            n = w * 1_000_003 + i
            request_id = f"{run}-{w}-{i}"
            data = request_bytes(port, f"s{n % sessions}", stream, i, api, request_id)
            t0 = time.perf_counter()
            status, body = await connection.exchange(data)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                failed += 1
                FAILURES.append(Failure(port, status, request_id, body))
            i += 1
        connection.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    if failed:
        print(f"  port {port}: {failed} of {len(latencies)} answers were not 200", flush=True)
    return latencies, len(latencies) / (time.perf_counter() - t0)


def report_failures(
    failures: list[Failure], logs: dict[int, Path], names: dict[int, str], shown: int = 5
) -> None:
    """Every answer that was not 200, counted by process and status; the first `shown`
    with their bodies and the lines of the answering process's log that name their
    request."""
    if not failures:
        print("\nevery answer was 200")
        return
    counts: dict[tuple[str, int], int] = defaultdict(int)
    for f in failures:
        counts[(names.get(f.port, str(f.port)), f.status)] += 1
    print(f"\n{len(failures)} answers were not 200: "
          + ", ".join(f"{p} status {s}: {n}" for (p, s), n in sorted(counts.items())))  # fmt: skip
    for f in failures[:shown]:
        print(f"\n  {names.get(f.port, f.port)}, status {f.status}, request {f.request_id}:")
        print(f"    body: {f.body[:1000].decode(errors='replace')}")
        log = logs.get(f.port)
        if log is not None and log.exists():
            for line in log.read_text(errors="replace").splitlines():
                if f.request_id in line:
                    print(f"    log:  {line[:2000]}")
    print(f"\n  the processes' logs: {sorted({str(path.parent) for path in logs.values()})}")


def scripts_run(client: redis.Redis) -> int:
    """Scripts Redis has run: each is one round trip of the store (the commands a script
    runs inside are not)."""
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
               for name in ("evalsha", "evalsha_ro", "eval", "eval_ro"))  # fmt: skip


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short cells, one round, small soak")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per cell")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    ap.add_argument("--apis", default=",".join(APIS), help="which APIs (comma-separated)")
    ap.add_argument("--litellm", help="a LiteLLM proxy's `litellm` command, to run as a peer")
    ap.add_argument("--logs", help="where to keep each process's log (default: a new temp dir)")
    args = ap.parse_args()
    seconds = args.seconds or (1.5 if args.quick else 5.0)
    rounds = args.rounds or (1 if args.quick else 3)
    soak = 10_000 if args.quick else 100_000
    targets = (*TARGETS, "litellm") if args.litellm else TARGETS
    ports = {name: free_port() for name in (*targets, "redis-server")}
    logs_dir = Path(args.logs or tempfile.mkdtemp(prefix="gateway-bench-logs-"))
    logs_dir.mkdir(parents=True, exist_ok=True)
    logs = {ports[name]: logs_dir / f"{name}.log" for name in (*targets, "redis-server")}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as files:
        env = {**os.environ, "BENCH_KEY": "sk-bench"}

        def logged(name: str) -> dict[str, object]:
            """Popen arguments that keep a process's output in its log."""
            out = files.enter_context(open(logs[ports[name]], "wb"))
            return {"stdout": out, "stderr": subprocess.STDOUT, "env": env}

        procs: dict[str, subprocess.Popen[bytes]] = {}
        redis_url = f"redis://127.0.0.1:{ports['redis-server']}/0"
        try:
            procs["redis-server"] = subprocess.Popen(
                ["redis-server", "--port", str(ports["redis-server"]), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", tmp], **logged("redis-server"),
            )  # type: ignore[call-overload]  # fmt: skip
            script = STANDIN.format(port=ports["direct"])
            procs["direct"] = subprocess.Popen([sys.executable, "-c", script], **logged("direct"))  # type: ignore[call-overload]
            script = FLOOR.format(port=ports["floor"], upstream=ports["direct"])
            procs["floor"] = subprocess.Popen([sys.executable, "-c", script], **logged("floor"))  # type: ignore[call-overload]
            for name, store in (("memory", "memory://"), ("redis", redis_url),
                                ("translated", "memory://")):  # fmt: skip
                config = Path(tmp) / f"{name}.toml"
                text = CONFIG.format(upstream=ports["direct"], port=ports[name], store=store)
                if name == "translated":  # an upstream of Chat Completions alone
                    text = text.replace(
                        'apis = ["chat", "messages", "responses"]', 'apis = ["chat"]'
                    )
                config.write_text(text)
                procs[name] = subprocess.Popen(  # type: ignore[call-overload]
                    [sys.executable, "-m", "llm_sessions", "serve", "--config", str(config),
                     "--log-level", "warning"], **logged(name),
                )  # fmt: skip
            if args.litellm:
                config = Path(tmp) / "litellm.yaml"
                config.write_text(LITELLM.format(upstream=ports["direct"]))
                procs["litellm"] = subprocess.Popen(  # type: ignore[call-overload]
                    [args.litellm, "--config", str(config), "--host", "127.0.0.1",
                     "--port", str(ports["litellm"]), "--num_workers", "1"],
                    **{**logged("litellm"), "env": {**env,
                       "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"}},
                )  # fmt: skip
            for name in (*targets, "redis-server"):
                wait_ready(ports[name])
            print("ports: " + ", ".join(f"{name} {port}" for name, port in ports.items()))
            counter = redis.Redis(port=ports["redis-server"])
            for name in targets:  # warm up every process and connection pool
                asyncio.run(load(ports[name], 8, False, 100, total=800))
            apis = [a for a in args.apis.split(",") if a in APIS]
            cells = [(api, stream, c) for api in apis for stream in (False, True)
                     for c in (1, 16, 64)]  # fmt: skip
            lat: dict[tuple[object, ...], list[float]] = defaultdict(list)
            rps: dict[tuple[object, ...], list[float]] = defaultdict(list)
            cpu: dict[tuple[object, ...], list[float]] = defaultdict(list)
            commands: list[float] = []
            for _ in range(rounds):
                for api, stream, c in cells:
                    for name in targets:
                        if name == "litellm" and api != "chat":
                            continue
                        pid = procs[name].pid
                        before = cpu_s(pid)
                        cmds = scripts_run(counter)
                        done, rate = asyncio.run(
                            load(ports[name], c, stream, 10_000, api, seconds=seconds)
                        )
                        key = (api, stream, c, name)
                        cpu[key].append((cpu_s(pid) - before) / len(done) * 1000)
                        lat[key] += done
                        rps[key].append(rate)
                        if name == "redis":
                            cmds = scripts_run(counter) - cmds
                            commands.append((cmds - 1) / len(done))  # less the first INFO
            report(cells, lat, rps, cpu, commands)
            report_translation(cells, lat, cpu)
            if args.litellm:
                report_peer(cells, lat, rps, cpu)
            print(f"\nsoak: {soak} requests over 10000 sessions through the memory gateway (c=64)")
            samples = []
            for step in range(5):
                asyncio.run(load(ports["memory"], 64, False, 10_000, total=soak // 5))
                samples.append(rss_kb(procs["memory"].pid))
                done_n = (step + 1) * soak // 5
                print(f"  after {done_n:>7} requests: gateway RSS {samples[-1] / 1024:.1f} MB")
            growth = (samples[-1] - samples[0]) / 1024
            print(f"  growth from the first fifth to the end: {growth:+.1f} MB "
                  f"({(samples[-1] / samples[0] - 1) * 100:+.1f}%)")  # fmt: skip
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(15)
            report_failures(FAILURES, logs, {port: name for name, port in ports.items()})


def report_translation(
    cells: list[tuple[str, bool, int]],
    lat: dict[tuple[object, ...], list[float]],
    cpu: dict[tuple[object, ...], list[float]],
) -> None:
    """What translation adds: the memory gateway in front of a Chat-only upstream (the
    Messages and Responses requests translated) against the same gateway in front of an
    upstream of every API (served natively), CPU per request and p50 latency."""
    med = statistics.median
    print("\ntranslation: a Messages or Responses request to a Chat-only upstream, against "
          "the same request served natively (memory gateway)")  # fmt: skip
    print(f"{'':22} {'CPU ms / req':>25}   {'p50 ms':>19}")
    print(f"{'':22} {'native':>8} {'transl.':>8} {'ratio':>7}   {'native':>8} {'transl.':>8}")
    for api, stream, c in cells:
        if api == "chat":
            continue
        native, moved = (
            med(cpu[(api, stream, c, "memory")]),
            med(cpu[(api, stream, c, "translated")]),
        )
        p50 = [med(lat[(api, stream, c, t)]) * 1000 for t in ("memory", "translated")]
        label = f"{api} {'stream' if stream else 'plain'} c={c}"
        print(f"{label:22} {native:8.3f} {moved:8.3f} {moved / native:7.2f}x   "
              f"{p50[0]:8.2f} {p50[1]:8.2f}")  # fmt: skip


def report(
    cells: list[tuple[str, bool, int]],
    lat: dict[tuple[object, ...], list[float]],
    rps: dict[tuple[object, ...], list[float]],
    cpu: dict[tuple[object, ...], list[float]],
    commands: list[float],
) -> None:
    """The table per cell, then the goal ratios (medians over rounds)."""
    med = statistics.median
    print(f"{'':22} {'added p50 ms':>27}   {'req/s':>23}   {'proxy CPU s / 1k req':>23}")
    print(f"{'':22} {'floor':>8} {'memory':>9} {'redis':>8}   {'floor':>7} {'memory':>7} "
          f"{'redis':>7}   {'floor':>7} {'memory':>7} {'redis':>7}")  # fmt: skip
    ratios: dict[str, list[float]] = defaultdict(list)
    for api, stream, c in cells:
        base = med(lat[(api, stream, c, "direct")])
        added = [
            (med(lat[(api, stream, c, t)]) - base) * 1000 for t in ("floor", "memory", "redis")
        ]
        rates = [med(rps[(api, stream, c, t)]) for t in ("floor", "memory", "redis")]
        cpus = [med(cpu[(api, stream, c, t)]) for t in ("floor", "memory", "redis")]
        name = f"{api} {'stream' if stream else 'plain'} c={c}"
        print(f"{name:22} {added[0]:8.2f} {added[1]:9.2f} {added[2]:8.2f}   "
              f"{rates[0]:7.0f} {rates[1]:7.0f} {rates[2]:7.0f}   "
              f"{cpus[0]:7.3f} {cpus[1]:7.3f} {cpus[2]:7.3f}")  # fmt: skip
        kind = "stream" if stream else "plain"
        ratios[f"memory CPU / floor CPU ({kind})"].append(cpus[1] / cpus[0])
        ratios["redis CPU / memory CPU"].append(cpus[2] / cpus[1])
        if c == 16:
            ratios[f"memory req/s / floor req/s at c=16 ({kind})"].append(rates[1] / rates[0])
    print("\nratios (median over the cells; goals: CPU <= 2x the floor, c=16 throughput "
          ">= 0.5x the floor, Redis CPU <= 1.5x memory):")  # fmt: skip
    for label, values in ratios.items():
        print(f"  {label:48} {med(values):5.2f}  (range {min(values):.2f}-{max(values):.2f})")
    print(f"  Redis round trips per routed request             {med(commands):5.2f}")


def report_peer(
    cells: list[tuple[str, bool, int]],
    lat: dict[tuple[object, ...], list[float]],
    rps: dict[tuple[object, ...], list[float]],
    cpu: dict[tuple[object, ...], list[float]],
) -> None:
    """The LiteLLM proxy beside the memory gateway, for Chat Completions (medians)."""
    med = statistics.median
    print(f"\nLiteLLM proxy (one worker, no database), Chat Completions:\n{'':22} "
          f"{'added p50 ms':>12} {'req/s':>8} {'CPU s/1k':>9}   LiteLLM CPU / memory CPU")  # fmt: skip
    for api, stream, c in cells:
        if api != "chat":
            continue
        key, ours = (api, stream, c, "litellm"), (api, stream, c, "memory")
        added = (med(lat[key]) - med(lat[(api, stream, c, "direct")])) * 1000
        name = f"{api} {'stream' if stream else 'plain'} c={c}"
        print(f"{name:22} {added:12.2f} {med(rps[key]):8.0f} {med(cpu[key]):9.3f}   "
              f"{med(cpu[key]) / med(cpu[ours]):6.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
