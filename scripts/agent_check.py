"""Real coding agents, headless and offline, through `llm-sessions serve` to the stand-in
upstream: Claude Code on the Anthropic Messages API, Codex on the OpenAI Responses API.

    npm install --prefix /opt/agents @anthropic-ai/claude-code @openai/codex   # once
    .venv/bin/python scripts/agent_check.py claude|codex [--bin PATH] [--cap USD]
        [--store memory|redis|cluster|sentinel] [--workers N] [--upstream-api API]
        [--drop-tools]

Starts the stand-in upstream and the gateway (a budget on; the memory store, or one the
script starts on loopback ports: one Redis server, a Redis Cluster of 3+3, or a primary,
a replica and 3 sentinels; with `--workers`, that many processes on one port), runs two
conversations of the agent in one directory with its base URL pointing at the gateway,
and checks what the operator would: every request of a conversation (a
tool loop of several turns) is one session, keyed by the session id the agent sends, and
the two conversations are two sessions although they open with the same project
instructions; every turn was charged. With `--upstream-api` (chat, messages or
responses) the stand-in serves that API alone, so the agent's requests are translated
(``X-Session-Translated``): every request must say so, and no output may mention a
streaming fallback. Prints what it saw; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gateway_helpers import gateway_processes, standin_process

from redis_server import RedisClusterServers, RedisSentinelServers, RedisServer

KEY = "sk-agent-check"


@dataclass(frozen=True)
class Agent:
    binary: str
    api: str  # the API it speaks, as upstream.apis names it
    source: str  # the id source its sessions should come from
    auth: str  # how the gateway lists sessions for its key

    def command(self, prompt: str, resume: bool = False) -> list[str]:
        if self.api == "messages":
            return [self.binary, "-p", *(["--continue"] if resume else []), prompt]
        return [self.binary, "exec", "--skip-git-repo-check", prompt]

    def env(self, gateway: str, home: Path) -> dict[str, str]:
        if self.api == "messages":
            return {
                "ANTHROPIC_BASE_URL": gateway,
                "ANTHROPIC_API_KEY": KEY,
                "ANTHROPIC_MODEL": "auto",  # let the gateway route (pin, escalate, cap)
                "DISABLE_TELEMETRY": "1",
                "DISABLE_AUTOUPDATER": "1",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            }
        (home / "config.toml").write_text(
            'model = "auto"\nmodel_provider = "gateway"\n[model_providers.gateway]\n'
            f'name = "llm-sessions"\nbase_url = "{gateway}/v1"\nenv_key = "GATEWAY_KEY"\n'
            'wire_api = "responses"\n'
        )
        return {"CODEX_HOME": str(home), "GATEWAY_KEY": KEY}


AGENTS = {
    "claude": Agent(
        "/opt/agents/node_modules/.bin/claude", "messages", "x-claude-code-session-id", "x-api-key"
    ),
    "codex": Agent(
        "/opt/agents/node_modules/.bin/codex", "responses", "session-id", "authorization"
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("agent", choices=sorted(AGENTS))
    parser.add_argument("--bin", help="the agent's executable (default: under /opt/agents)")
    parser.add_argument(
        "--cap", type=float, help="a session cap (USD) below the agent's worst case, at a "
        "large model's prices: turns go on with lowered output limits, then end in a 429",
    )  # fmt: skip
    parser.add_argument("--store", choices=["memory", "redis", "cluster", "sentinel"],
                        default="memory", help="where the gateway keeps sessions")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="gateway processes on one port")
    parser.add_argument(
        "--upstream-api",
        choices=["chat", "messages", "responses"],
        help="the one API the upstream speaks (default: the agent's)",
    )
    parser.add_argument(
        "--drop-tools", action="store_true",
        help='[translation] unsupported_tools = "drop": tools the upstream\'s API can\'t run '
        "are left out (Codex offers web_search and a namespace)",
    )  # fmt: skip
    args = parser.parse_args()
    agent = AGENTS[args.agent]
    if args.bin:
        agent = Agent(args.bin, agent.api, agent.source, agent.auth)
    if not Path(agent.binary).exists():
        raise SystemExit(f"no {args.agent} at {agent.binary}: see this script's docstring")
    work = Path(tempfile.mkdtemp(prefix=f"{args.agent}-check-"))
    home = Path(tempfile.mkdtemp(prefix=f"{args.agent}-home-"))
    (work / "CLAUDE.md").write_text("# Project\nAlways run the tests before you answer.\n")
    (work / "AGENTS.md").write_text("# Project\nAlways run the tests before you answer.\n")
    (work / "app.py").write_text("print('hello')\n")
    servers = {"memory": None, "redis": RedisServer, "cluster": RedisClusterServers,
               "sentinel": RedisSentinelServers}[args.store]  # fmt: skip
    store = servers(work / "redis").start() if servers is not None else None
    try:
        return run(args, agent, work, home, store.url if store is not None else "memory://")
    finally:
        if store is not None:
            store.stop()


def run(args: argparse.Namespace, agent: Agent, work: Path, home: Path, store_url: str) -> int:
    upstream_api = args.upstream_api or agent.api
    with standin_process(upstream_api) as upstream:
        auth = "x-api-key" if upstream_api == "messages" else "bearer"
        apis = f'"{upstream_api}"' if args.upstream_api else f'"chat", "{agent.api}"'
        toml = (
            f'[upstream]\nbase_url = "{upstream}/v1"\napis = [{apis}]\n'
            f'auth = "{auth}"\n'
            '[pricing."gpt-4o-mini"]\ninput_per_mtok = 0.15\noutput_per_mtok = 0.6\n'
            '[pricing."gpt-4o"]\ninput_per_mtok = 2.5\noutput_per_mtok = 10\n'
            "[budget]\nmax_session_cost_usd = 1.0\n"
        )
        if args.cap is not None:  # every model at a large model's prices (5 / 25 USD per M)
            models = ("gpt-4o-mini", "gpt-4o", "o3-mini")
            toml = (
                toml.split("[pricing.", maxsplit=1)[0]
                + "".join(
                    f'[pricing."{m}"]\ninput_per_mtok = 5\noutput_per_mtok = 25\n' for m in models
                )
                + f"[budget]\nmax_session_cost_usd = {args.cap}\nmin_output_tokens = 1024\n"
            )
        toml += f'[store]\nurl = "{store_url}"\n[server]\nworkers = {args.workers}\n'
        if args.drop_tools:
            toml += '[translation]\nunsupported_tools = "drop"\n'

        with gateway_processes(work, toml, count=1) as ports:
            gateway = f"http://127.0.0.1:{ports[0]}"
            env = {**os.environ, **agent.env(gateway, home)}
            runs = []
            prompts = ["Run the tests, then say done.", "Run the tests again, then say done."]
            if args.cap is not None:  # one conversation, continued until the cap ends it
                prompts = [f"Step {i}: run the tests, then say done." for i in range(8)]
            for i, prompt in enumerate(prompts):
                started = time.monotonic()
                resume = args.cap is not None and i > 0
                done = subprocess.run(agent.command(prompt, resume), cwd=work, env=env,
                                      capture_output=True, text=True, timeout=300, check=False,
                                      stdin=subprocess.DEVNULL)  # fmt: skip
                runs.append((done.returncode, time.monotonic() - started,
                             done.stdout.strip()[:200], done.stderr.strip()[-400:]))  # fmt: skip
            key = (
                {"x-api-key": KEY}
                if agent.auth == "x-api-key"
                else {"authorization": f"Bearer {KEY}"}
            )
            listing = httpx.get(f"{gateway}/v1/sessions", headers=key, timeout=10)
            sessions = listing.json()["sessions"]
    log = work / f"gateway-{ports[0]}.log"
    access = [
        json.loads(line)
        for line in log.read_text().splitlines()
        if line.startswith('{"event": "chat"')
    ]
    version = subprocess.run(
        [agent.binary, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(f"{args.agent}: {version}")
    for i, (code, seconds, out, err) in enumerate(runs, 1):
        print(f"conversation {i}: exit {code} in {seconds:.1f} s; said: {out!r}")
        if code != 0:
            print(f"  stderr: {err}")
    print(f"gateway requests: {len(access)}")
    for line in access:
        print(f"  session {line['session']} api={line['api']} source={line['source']} "
              f"reason={line['reason']} model={line['model']} status={line['status']} "
              f"stream={line['stream']} cost={line['cost_usd']} "
              f"output_limit={line.get('output_limit')} "
              f"translated={line.get('translated')} "
              f"dropped_tools={line.get('dropped_tools')}")  # fmt: skip
    print(f"sessions listed for this key: {len(sessions)}")
    for row in sessions:
        print(f"  {row['id']}: {row['request_count']} requests, {row['session_cost_usd']} USD")
    failures = []
    ended = [code for code, *_ in runs] if args.cap is None else [runs[0][0]]  # then the cap
    if any(code != 0 for code in ended):
        failures.append(f"a {args.agent} run failed")
    if not access:
        failures.append("no request reached the gateway")
    if any(line["api"] != agent.api or line["source"] != agent.source for line in access):
        failures.append(f"a request was not on the {agent.api} API keyed by {agent.source}")
    served = [line for line in access if line["status"] == 200]
    if args.cap is None and len(served) != len(access):
        failures.append("a request failed")
    if args.upstream_api and args.upstream_api != agent.api:
        label = f"{agent.api}->{args.upstream_api}"
        if any(line.get("translated") != label for line in served):
            failures.append(f"a request was not translated {label}")
        said = [(out + err).lower() for _, _, out, err in runs]
        if any("streaming fallback" in s or "content block not found" in s for s in said):
            failures.append("the agent's output mentions a streaming fallback")
    if any(line["cost_usd"] == "0.000000" for line in served):
        failures.append("a request was not charged")
    if args.cap is not None:
        failures += cap_failures(args.cap, access, sessions)
    elif len(sessions) != 2:  # (the log cuts ids to 8 characters: UUIDv7s share those)
        failures.append(f"expected 2 sessions, the gateway lists {len(sessions)}")
    if sum(row["request_count"] for row in sessions) != len(served):
        failures.append("the sessions do not account for every request")
    if not any(row["request_count"] >= 2 for row in sessions):
        failures.append("no conversation had several turns")
    for failure in failures:
        print(f"FAIL: {failure}")
    print("OK" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


def cap_failures(
    cap: float, access: list[dict[str, object]], sessions: list[dict[str, object]]
) -> list[str]:
    """Under a cap below the agent's worst case: turns served with lowered output limits,
    then refused (429) as final; no session past its cap."""
    failures = []
    if not any(line.get("output_limit") for line in access):
        failures.append("no request was served with a lowered output limit")
    if any(line["status"] not in (200, 429) for line in access):
        failures.append("a request failed other than by the cap")
    if not any(line["status"] == 429 for line in access):
        failures.append("the cap was never reached")
    if any(float(str(row["session_cost_usd"])) > cap for row in sessions):
        failures.append(f"a session spent more than its {cap} USD cap")
    return failures


if __name__ == "__main__":
    sys.exit(main())
