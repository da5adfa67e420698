"""Claude Code, headless and offline, through `llm-sessions serve` to the stand-in upstream.

    npm install --prefix /opt/agents @anthropic-ai/claude-code     # once, ~800 MB
    .venv/bin/python scripts/claude_code_check.py [--claude /opt/agents/node_modules/.bin/claude]

Starts the stand-in upstream and the gateway (memory store, the Messages API enabled) on
loopback ports, runs two `claude -p` conversations in one directory with
ANTHROPIC_BASE_URL pointing at the gateway, and checks what the operator would: every
request of a conversation (a tool loop of several turns) is one session, keyed by the
X-Claude-Code-Session-Id that Claude Code sends, and the two conversations are two
sessions, although they open with the same project instructions. Prints what it saw;
exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gateway_helpers import gateway_processes, standin_process

KEY = "sk-ant-claude-code-check"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--claude", default="/opt/agents/node_modules/.bin/claude")
    args = parser.parse_args()
    if not Path(args.claude).exists():
        raise SystemExit(f"no Claude Code at {args.claude}: npm install @anthropic-ai/claude-code")
    work = Path(tempfile.mkdtemp(prefix="claude-code-check-"))
    (work / "CLAUDE.md").write_text("# Project\nAlways run the tests before you answer.\n")
    (work / "app.py").write_text("print('hello')\n")
    with standin_process() as upstream:
        toml = (
            f'[upstream]\nbase_url = "{upstream}/v1"\napis = ["chat", "messages"]\n'
            'auth = "x-api-key"\n'
            '[pricing."gpt-4o-mini"]\ninput_per_mtok = 0.15\noutput_per_mtok = 0.6\n'
            '[pricing."gpt-4o"]\ninput_per_mtok = 2.5\noutput_per_mtok = 10\n'
            "[budget]\nmax_session_cost_usd = 1.0\n"
        )
        with gateway_processes(work, toml, count=1) as ports:
            gateway = f"http://127.0.0.1:{ports[0]}"
            env = {
                **os.environ,
                "ANTHROPIC_BASE_URL": gateway,
                "ANTHROPIC_API_KEY": KEY,
                "ANTHROPIC_MODEL": "auto",  # let the gateway route (pin, escalate, cap)
                "DISABLE_TELEMETRY": "1",
                "DISABLE_AUTOUPDATER": "1",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            }
            runs = []
            for prompt in ("Run the tests, then say done.", "Run the tests again, then say done."):
                started = time.monotonic()
                done = subprocess.run(
                    [args.claude, "-p", prompt],
                    cwd=work,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=False,
                )
                runs.append((done.returncode, time.monotonic() - started,
                             done.stdout.strip()[:200], done.stderr.strip()[-400:]))  # fmt: skip
            listing = httpx.get(f"{gateway}/v1/sessions", headers={"x-api-key": KEY}, timeout=10)
            sessions = listing.json()["sessions"]
    log = work / f"gateway-{ports[0]}.log"

    access = [
        json.loads(line)
        for line in log.read_text().splitlines()
        if line.startswith('{"event": "chat"')
    ]
    version = subprocess.run(
        [args.claude, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(f"claude: {version}")
    for i, (code, seconds, out, err) in enumerate(runs, 1):
        print(f"conversation {i}: exit {code} in {seconds:.1f} s; said: {out!r}")
        if code != 0:
            print(f"  stderr: {err}")
    print(f"gateway requests: {len(access)}")
    for line in access:
        print(f"  session {line['session']} source={line['source']} reason={line['reason']} "
              f"model={line['model']} status={line['status']}")  # fmt: skip
    print(f"sessions listed for this key: {len(sessions)}")
    for row in sessions:
        print(f"  {row['id']}: {row['request_count']} requests, {row['session_cost_usd']} USD")
    failures = []
    if any(code != 0 for code, *_ in runs):
        failures.append("a claude run failed")
    if not access:
        failures.append("no request reached the gateway")
    if any(line["source"] != "x-claude-code-session-id" for line in access):
        failures.append("a request was not keyed by X-Claude-Code-Session-Id")
    conversations = {line["session"] for line in access}
    if len(conversations) != 2 or len(sessions) != 2:
        failures.append(f"expected 2 sessions, saw {len(conversations)} in the log")
    if not any(row["request_count"] >= 2 for row in sessions):
        failures.append("no conversation had several turns")
    for failure in failures:
        print(f"FAIL: {failure}")
    print("OK" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
