"""``llm-sessions demo``: the gateway and a stand-in upstream on loopback, and a scripted
agent conversation through them over HTTP (httpx, as any OpenAI client would), one table
row per turn. It needs only the ``server`` extra.

``llm-sessions demo --watch`` serves the demo's gateway on a port of its own with a key,
waits for the operator console (``/ui``) to open with it, plays the conversation at a
pace one can follow there, then keeps serving until interrupted."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from .routing import Pricing, routing_table
from .server.gateway import Gateway
from .server.run import running
from .server.settings import ModelRoute, Settings, UpstreamSettings
from .server.standin import StandIn

__all__ = ["run_demo"]

TIERS = routing_table(
    {
        "SIMPLE": {"primary": "openai/gpt-4o-mini", "fallback": ["groq/llama-3.1-8b"]},
        "MEDIUM": {"primary": "anthropic/claude-haiku-4.5", "fallback": ["openai/gpt-4o-mini"]},
        "COMPLEX": {"primary": "anthropic/claude-sonnet-4.6", "fallback": ["openai/gpt-4o"]},
        "REASONING": {"primary": "openai/o3", "fallback": ["anthropic/claude-opus-4.1"]},
    }
)
PRICES = {
    "openai/gpt-4o-mini": Pricing(0.15, 0.6),
    "groq/llama-3.1-8b": Pricing(0.05, 0.08),
    "anthropic/claude-haiku-4.5": Pricing(1, 5),
    "anthropic/claude-sonnet-4.6": Pricing(3, 15),
    "openai/gpt-4o": Pricing(2.5, 10),
    "openai/o3": Pricing(2, 8),
    "anthropic/claude-opus-4.1": Pricing(15, 75),
}
LOG = "".join(
    f"2026-11-24T10:{i // 60:02d}:{i % 60:02d} DEBUG auth.refresh token={i:08x}\n"
    for i in range(260)
)


#: The key the watched demo's console asks for.
WATCH_KEY = "demo-key"


def run_demo(
    out: Callable[[str], None] = print,
    *,
    watch: bool = False,
    port: int = 8080,
    pace_s: float = 1.5,
    wait_s: float = 600.0,
) -> None:
    """The demo; with `watch`, on `port` with the console, `pace_s` between turns, after
    waiting up to `wait_s` for a console to open (then it plays anyway)."""
    logging.getLogger("llm_sessions.access").setLevel(logging.WARNING)
    os.environ.setdefault("DEMO_UPSTREAM_KEY", "demo")  # the stand-in takes any key
    openai_style, anthropic_style = StandIn(), StandIn()  # one upstream of each kind
    with (
        running(openai_style.app(("chat", "responses"))) as openai_url,
        running(anthropic_style.app(("messages",))) as anthropic_url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        anthropic = UpstreamSettings(
            name="anthropic",
            base_url=f"{anthropic_url}/v1",
            api_key_env="DEMO_UPSTREAM_KEY",
            auth="x-api-key",
            apis=("messages",),
        )
        settings = Settings(
            upstream=UpstreamSettings(
                base_url=f"{openai_url}/v1",
                api_key_env="DEMO_UPSTREAM_KEY",
                apis=("chat", "responses"),
            ),
            named_upstreams=(anthropic,),
            model_routes={
                m: ModelRoute("anthropic", m) for m in PRICES if m.startswith("anthropic/")
            },
            tiers=TIERS,
            pricing=PRICES,
            max_session_cost_usd=0.50,
        )
        serving: dict[str, Any] = {}
        if watch:
            keys = Path(tmp) / "keys"
            keys.write_text(WATCH_KEY + "\n")
            settings = replace(settings, api_keys_file=str(keys), port=port)
            serving["port"] = port
        gateway = Gateway(settings)
        with (
            running(gateway.app(), **serving) as gateway_url,
            httpx.Client(
                base_url=f"{gateway_url}/v1",
                headers={"authorization": f"Bearer {WATCH_KEY}"},
                timeout=30,
            ) as client,
        ):
            pause: Callable[[], None] = lambda: None  # noqa: E731
            if watch:
                out(f"The operator console: {gateway_url}/ui (key: {WATCH_KEY})")
                _wait_for_console(gateway, wait_s, out)

                def pause() -> None:
                    time.sleep(pace_s)

            _conversation(client, anthropic_style, out, pause)
            anthropic_style.behaviour.clear()  # the primary the chat part took down is back
            _messages_session(client, anthropic_style, out, pause)
            _responses_session(client, out, pause)
            if watch:
                out(f"\nStill serving {gateway_url} (Ctrl-C to stop).")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass


def _wait_for_console(gateway: Gateway, wait_s: float, out: Callable[[str], None]) -> None:
    """Until a console opens its live stream (or `wait_s` passes)."""
    out("Waiting for the console to open (paste the key there)...")
    deadline = time.monotonic() + wait_s
    while not gateway.console.watched and time.monotonic() < deadline:
        time.sleep(0.2)
    out("")


def _conversation(
    client: httpx.Client,
    standin: StandIn,
    out: Callable[[str], None],
    pause: Callable[[], None] = lambda: None,
) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a coding agent working in a git repository."}
    ]
    header = (
        f"{'turn':>4}  {'reason':<16} {'model':<28} {'tier':<9} {'strikes':>7} "
        f"{'cost USD':>10}  what happened"
    )
    out(header)
    out("-" * len(header))
    turn = 0

    def ask(note: str, **extra: Any) -> None:
        nonlocal turn
        turn += 1
        pause()
        raw = client.post(
            "/chat/completions", json={"model": "auto", "messages": messages, **extra}
        )
        if raw.status_code != 200:
            error = raw.json().get("error", {})
            out(f"{turn:>4}  {'(refused)':<16} {'-':<28} {'-':<9} {'-':>7} "
                f"{error.get('spent_usd', '-'):>10}  HTTP {raw.status_code} {error.get('type')}: "
                f"over the ${error.get('cap_usd')} cap, final")  # fmt: skip
            return
        h = raw.headers
        if "x-session-output-limit" in h:
            note += f": sent with max_tokens {h['x-session-output-limit']}"
        reply = raw.json()["choices"][0]["message"]["content"]
        messages.append({"role": "assistant", "content": reply})
        cost = client.get(f"/sessions/{h['x-session-id']}").json()["session_cost_usd"]
        _row(out, turn, h, cost, note)

    def user(text: str) -> None:
        messages.append({"role": "user", "content": text})

    def tool_result(text: str, call: int) -> None:
        function = {"name": "run_tests", "arguments": "{}"}
        tool_call = {"id": f"call_{call}", "type": "function", "function": function}
        messages.append({"role": "assistant", "content": None, "tool_calls": [tool_call]})
        messages.append({"role": "tool", "tool_call_id": f"call_{call}", "content": text})

    user("The login test fails on main. Find the cause.")
    ask("a new session, classified SIMPLE and pinned")
    user("Show me the failing assertion.")
    ask("same session: the pinned model")
    user("Explain the race between token refresh and logout.")
    ask("classified MEDIUM: upgraded (never down)")
    for call in range(3):
        tool_result("FAILED tests/test_login.py::test_refresh - AssertionError: 401 != 200", call)
        ask(["the agent runs the tests", "the same tool result again: strike 1",
             "third identical turn: escalated one tier"][call])  # fmt: skip
    user("Here is the full debug log:\n" + LOG)
    ask("a large paste: the session turns cache-sticky")
    user("Prove the fix cannot deadlock.")
    ask("classified REASONING, but the prompt cache is warm")
    standin.set("anthropic/claude-sonnet-4.6", status=503)
    user("Apply the patch and rerun the suite.")
    ask("Anthropic 503 on the primary: an OpenAI model served (*), natively")
    user("Commit it.")
    ask("the fallback is pinned for now")
    user("Now write an exhaustive property-based test suite for the auth module.")
    ask("worst case over the $0.50 cap", max_tokens=100_000)  # the output limit that fits
    ask("", max_tokens=100_000, n=64)  # 64 answers: even at the floor, over the cap
    out("\n* served by a fallback. Every row went through the gateway over HTTP.")


def _row(out: Callable[[str], None], turn: int, h: Any, cost: str, note: str) -> None:
    """One turn's row: the served model (``*`` when a fallback served), the translation."""
    served = h["x-session-served-model"]
    model = served if served == h["x-session-model"] else f"{served}*"
    if "x-session-translated" in h:
        note += f" [{h['x-session-translated']}]"
    out(f"{turn:>4}  {h['x-session-reason']:<16} {model:<28} {h['x-session-tier']:<9} "
        f"{h['x-session-strikes']:>7} {cost:>10}  {note}")  # fmt: skip


def _messages_session(
    client: httpx.Client,
    anthropic: StandIn,
    out: Callable[[str], None],
    pause: Callable[[], None] = lambda: None,
) -> None:
    """A few turns of an agent on the Anthropic Messages API, as Claude Code sends them:
    Anthropic is overloaded at the first, so an OpenAI-style model serves the session."""
    out("\nThe same gateway on the Anthropic Messages API, as Claude Code calls it:\n")
    headers = {"x-claude-code-session-id": "7d1c0a52-8f4e-4b1b-9c1e-0e4f2b7a9d10"}
    schema = {"type": "object", "properties": {"path": {"type": "string"}}}
    tools = [{"name": "run_tests", "description": "Run the test suite", "input_schema": schema}]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Run the tests, fix what fails."}]
    notes = ["Claude Code; Anthropic overloaded (529): an OpenAI-style model serves",
             "the tool result goes back: the fallback stays pinned",
             "the next step: same session, same model"]  # fmt: skip
    anthropic.set("anthropic/claude-sonnet-4.6", status=529)
    for turn, note in enumerate(notes, 1):
        pause()
        raw = client.post(
            "/messages",
            json={"model": "auto", "max_tokens": 1024, "tools": tools, "messages": messages},
            headers=headers,
        )
        anthropic.behaviour.clear()
        h, reply = raw.headers, raw.json()
        cost = client.get(f"/sessions/{h['x-session-id']}").json()["session_cost_usd"]
        _row(out, turn, h, cost, note)
        messages.append({"role": "assistant", "content": reply["content"]})
        block = reply["content"][0]
        if block["type"] == "tool_use":
            result = {"type": "tool_result", "tool_use_id": block["id"], "content": "1 failed"}
            messages.append({"role": "user", "content": [result]})
        else:
            messages.append({"role": "user", "content": "Now commit it."})


def _responses_session(
    client: httpx.Client, out: Callable[[str], None], pause: Callable[[], None] = lambda: None
) -> None:
    """An agent on the OpenAI Responses API sending its whole input each turn, as Codex
    does (nothing stored upstream), served by an Anthropic model."""
    out("\nAnd on the OpenAI Responses API, the whole input each turn, as Codex sends it:\n")
    schema = {"type": "object", "properties": {"path": {"type": "string"}}}
    tools = [{"type": "function", "name": "read_file", "parameters": schema}]
    items: list[dict[str, Any]] = [{"role": "user", "content": "What is in notes.txt?"}]
    headers = {"session_id": "0199a7c2-codex-demo"}
    notes = ["a Codex-style session: keyed by its session_id header",
             "the tool's output goes back", "the next step: same session, same model"]  # fmt: skip
    for turn, note in enumerate(notes, 1):
        pause()
        body = {"model": "auto", "tools": tools, "input": items, "store": False}
        raw = client.post("/responses", json=body, headers=headers)
        h, reply = raw.headers, raw.json()
        cost = client.get(f"/sessions/{h['x-session-id']}").json()["session_cost_usd"]
        _row(out, turn, h, cost, note)
        item = reply["output"][0]
        if item["type"] == "function_call":
            call = {"type": "function_call", "call_id": item["call_id"], "name": item["name"],
                    "arguments": item["arguments"]}  # fmt: skip
            items += [call, {"type": "function_call_output", "call_id": item["call_id"],
                             "output": "hi"}]  # fmt: skip
        else:
            answer = {"role": "assistant", "content": item["content"][0]["text"]}
            items += [answer, {"role": "user", "content": "Summarise it in one line."}]
