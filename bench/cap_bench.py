"""What a session cap holds, as the upstream bills it: spend / cap, scenario by scenario.

    python bench/cap_bench.py [--gateway-src PATH]

The stand-in upstream (from this tree, always: it bills like a provider, with the stored
context a continuation sends again and output cut at the request's limit) runs in a
process of its own; `llm-sessions serve` runs from this tree, or from `--gateway-src`
(another checkout's ``src``: a "before" to compare with). Every model is priced at 5 and
25 USD per million input and output tokens, the upstream's own bill; the gateway knows
these prices for the routing table's models only. For each scenario, one session with a
cap, and what the upstream billed for it (its answers' usage at those prices) over the cap:

- ``unpriced``: 100 requests naming a model the gateway has no price for (item 9);
- ``no-limit``: 10 requests without an output limit, each answered with 20,000 tokens
  unless one is forwarded (item 10);
- ``continuations``: one 12,000-token context, then 20 continuations of it at once (item 5);
- ``background``: 10 background responses, each retrieved when done (item 6);
- ``agent``: an agent's 128,000-token limit under a cap below its worst case, turn after
  turn until refused (item 11): served turns and spend;
- ``outage``: on Redis (``on_error = "fail_open"``), 40 chained Responses turns, every
  other one sent while Redis stalls for 0.8 s (``DEBUG SLEEP``), longer than the
  gateway's 0.5 s socket timeout: its link can't be read (item 7);
- ``cut-stream``: 10 Messages streams the upstream drops after their first text, before
  any usage: billed upstream for the input and the words it sent (item 8).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gateway_helpers import wait_until_up

from redis_server import RedisServer, free_port

SRC = Path(__file__).resolve().parent.parent / "src"
IN, OUT = 5, 25  # USD per million tokens: the upstream's price of every model
STANDIN = """
import uvicorn
from llm_sessions.server.standin import Behaviour, StandIn
words = " ".join(["word"] * 20000)
standin = StandIn(default=Behaviour(text=words))
standin.set("claude-cut", text=words, break_stream=True, break_after=3000)
uvicorn.run(standin.app(), host="127.0.0.1", port={port}, log_level="warning")
"""


def billed(usage: dict[str, Any] | None) -> float:
    """What the upstream bills for one answer's usage, in USD."""
    if not usage:
        return 0.0
    inputs = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    output = usage.get("completion_tokens", usage.get("output_tokens", 0))
    return (inputs * IN + output * OUT) / 1e6


def serve(
    work: Path, upstream: str, cap: float, gateway_src: Path, store: str
) -> tuple[subprocess.Popen[bytes], str]:
    models = ("gpt-4o-mini", "gpt-4o", "o3-mini", "claude-cut")
    prices = "".join(f'[pricing."{m}"]\ninput_per_mtok = {IN}\noutput_per_mtok = {OUT}\n'
                     for m in models)  # fmt: skip
    config = work / f"gateway-{cap}.toml"
    config.write_text(f'[upstream]\nbase_url = "{upstream}/v1"\n'
                      'apis = ["chat", "responses", "messages"]\n'
                      f'[store]\nurl = "{store}"\n'
                      f"{prices}[budget]\nmax_session_cost_usd = {cap}\n")  # fmt: skip
    port = free_port()
    env = {**os.environ, "OPENAI_API_KEY": "sk-x", "PYTHONPATH": str(gateway_src)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_sessions", "serve", "--config", str(config), "--port",
         str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/health", proc)
    return proc, url


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


def unpriced(http: httpx.Client) -> tuple[float, str]:
    spent = 0.0
    for i in range(100):
        reply = http.post("/v1/chat/completions", json=chat(f"q{i}", model="x/unpriced",
                                                             max_tokens=100))  # fmt: skip
        spent += billed(reply.json().get("usage")) if reply.status_code == 200 else 0
    return spent, f"last status {reply.status_code}"


def no_limit(http: httpx.Client) -> tuple[float, str]:
    spent, served = 0.0, 0
    for i in range(10):
        reply = http.post("/v1/chat/completions", json=chat(f"write a lot {i}"))
        if reply.status_code == 200:
            served += 1
            spent += billed(reply.json().get("usage"))
    return spent, f"{served} served"


def continuations(http: httpx.Client) -> tuple[float, str]:
    first = http.post("/v1/responses", json={"model": "auto", "input": "z" * 48_000,
                                             "max_output_tokens": 16})  # fmt: skip
    spent = billed(first.json().get("usage"))
    previous = first.json()["id"]

    def one(i: int) -> httpx.Response:
        body = {"model": "auto", "input": f"and {i}?", "previous_response_id": previous,
                "max_output_tokens": 16}  # fmt: skip
        return http.post("/v1/responses", json=body)

    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(one, range(20)))
    spent += sum(billed(r.json().get("usage")) for r in replies if r.status_code == 200)
    served = sum(r.status_code == 200 for r in replies)
    return spent, f"{served} of 20 continuations served"


def background(http: httpx.Client) -> tuple[float, str]:
    spent, served = 0.0, 0
    for i in range(10):
        reply = http.post("/v1/responses", json={"model": "auto", "input": f"job {i}",
                                                 "background": True})  # fmt: skip
        if reply.status_code == 200:
            served += 1
            done = http.get(f"/v1/responses/{reply.json()['id']}")
            spent += billed(done.json().get("usage"))
    return spent, f"{served} of 10 served"


def agent(http: httpx.Client) -> tuple[float, str]:
    spent, served = 0.0, 0
    for i in range(30):
        reply = http.post("/v1/chat/completions", json=chat(f"turn {i}: go on " * 40,
                                                            max_tokens=128_000))  # fmt: skip
        if reply.status_code != 200:
            break
        served += 1
        spent += billed(reply.json().get("usage"))
    return spent, f"{served} turns served before a {reply.status_code}"


def outage(http: httpx.Client, redis: RedisServer) -> tuple[float, str]:
    """Chained turns, every other one while Redis stalls past the socket timeout. No
    session header: the chain names the session, as with Codex."""
    http = httpx.Client(base_url=http.base_url, headers={"authorization": "Bearer sk-b"})
    body = {"model": "auto", "input": "begin", "max_output_tokens": 1_000}
    first = http.post("/v1/responses", json=body)
    spent, previous = billed(first.json().get("usage")), first.json()["id"]
    statuses: dict[int, int] = {}
    stalling = redis.client()
    for i in range(40):
        stall = None
        if i % 2 == 0:
            stall = threading.Thread(target=stalling.execute_command, args=("DEBUG", "SLEEP", 0.8))
            stall.start()
            time.sleep(0.05)  # the stall has begun
        reply = http.post("/v1/responses", json={**body, "input": f"go on {i}",
                                                 "previous_response_id": previous})  # fmt: skip
        if stall is not None:
            stall.join()
        statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
        if reply.status_code == 200:
            spent += billed(reply.json().get("usage"))
            previous = reply.json()["id"]
    stalling.close()
    http.close()
    return spent, "of 40 turns: " + ", ".join(f"{n} {code}" for code, n in sorted(statuses.items()))


def cut_stream(http: httpx.Client) -> tuple[float, str]:
    """Messages streams dropped by the upstream after their first text."""
    spent, answered = 0.0, 0
    for i in range(10):
        body = {"model": "claude-cut", "max_tokens": 5_000, "stream": True,
                "messages": [{"role": "user", "content": f"write {i}"}]}  # fmt: skip
        inputs = words = 0
        with http.stream("POST", "/v1/messages", json=body) as reply:
            if reply.status_code != 200:
                continue
            answered += 1
            try:
                for line in reply.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    event = json.loads(line[6:])
                    if event.get("type") == "message_start":
                        inputs = event["message"].get("usage", {}).get("input_tokens", 0)
                    elif event.get("type") == "content_block_delta":
                        words += len(event["delta"].get("text", "").split())
            except httpx.HTTPError:
                pass  # the cut, as the client sees it
        spent += (inputs * IN + words * OUT) / 1e6  # what the upstream generated and bills
    return spent, f"{answered} of 10 streams begun"


Scenario = Callable[..., tuple[float, str]]
# name: (cap in USD, the scenario, the store it runs on)
SCENARIOS: dict[str, tuple[float, Scenario, str]] = {
    "unpriced": (0.1, unpriced, "memory"),
    "no-limit": (0.25, no_limit, "memory"),
    "continuations": (0.25, continuations, "memory"),
    "background": (0.25, background, "memory"),
    "agent": (1.0, agent, "memory"),
    "outage": (0.25, outage, "redis"),
    "cut-stream": (0.25, cut_stream, "memory"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway-src", type=Path, default=SRC, help="the gateway's src")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cap-bench-"))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    upstream = subprocess.Popen([sys.executable, "-c", STANDIN.format(port=port)], env=env)
    redis = RedisServer(work / "redis", "--enable-debug-command", "local").start()
    try:
        wait_until_up(f"http://127.0.0.1:{port}/v1/models", upstream)
        print(f"gateway from {args.gateway_src}")
        print(f"{'scenario':<14} {'cap USD':>8} {'upstream USD':>13} {'spend/cap':>10}  what")
        for name, (cap, run, store) in SCENARIOS.items():
            url_of_store = redis.url if store == "redis" else "memory://"
            proc, url = serve(work, f"http://127.0.0.1:{port}", cap, args.gateway_src, url_of_store)
            try:
                headers = {"authorization": "Bearer sk-bench", "x-session-id": f"cap-{name}"}
                with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
                    spent, what = run(http, redis) if store == "redis" else run(http)
            finally:
                proc.terminate()
                proc.wait(15)
            print(f"{name:<14} {cap:>8.2f} {spent:>13.4f} {spent / cap:>10.2f}  {what}")
    finally:
        redis.stop()
        upstream.terminate()
        upstream.wait(15)
    print(json.dumps({"note": "spend/cap <= 1 is a cap that holds"}))


if __name__ == "__main__":
    main()
