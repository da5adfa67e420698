"""The README's code runs as written: every Python block, with only the placeholders the
README names filled in here."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_sessions.server.run import running as serve
from llm_sessions.server.standin import StandIn

README = (Path(__file__).parent.parent / "README.md").read_text()


def python_block_after(marker: str) -> str:
    start = README.index(marker)
    match = re.search(r"```python\n(.*?)```", README[start:], re.S)
    assert match is not None
    return match.group(1)


# The heading or marker each Python block follows; a test below runs each one.
BLOCKS = [
    "## Usage",
    "## Redis: sessions shared by replicas",
    "## The routing flow: `SessionPolicy`",
    "<!-- example: fastapi -->",
    "Then any OpenAI client talks to the gateway",
]


def test_every_python_block_is_run_by_a_test() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert sorted(blocks) == sorted(python_block_after(marker) for marker in BLOCKS)


def test_redis_example(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    exec(python_block_after(BLOCKS[1]), {})
    assert capsys.readouterr().out == "openai/gpt-4o\n"


def test_policy_example_walks_the_chain_and_finishes_once() -> None:
    from llm_sessions import BudgetExceeded

    namespace: dict[str, Any] = {}
    exec(python_block_after(BLOCKS[2]), namespace)
    handle, policy = namespace["handle"], namespace["policy"]
    called: list[str] = []
    limits: list[int | None] = []

    def call_upstream(model: str, body: dict[str, Any]) -> dict[str, Any] | None:
        called.append(body["model"])
        limits.append(body.get("max_tokens"))
        if model == "anthropic/claude-sonnet-4.6":
            return None  # the primary is down
        return {"usage": {"prompt_tokens": 1000, "completion_tokens": 100}}

    body = {"model": "auto", "messages": [{"role": "user", "content": "```py\nx\n```"}]}
    assert handle({"x-session-id": "s"}, body, call_upstream) is not None
    assert called == ["anthropic/claude-sonnet-4.6", "openai/gpt-4o"]
    entry = policy.store.get_session("s")
    assert entry.model == "openai/gpt-4o"  # the fallback that served is pinned
    assert entry.reserved_micros == 0
    # a worst case over the $2 cap: sent with the largest output limit that fits
    assert handle({"x-session-id": "s"}, {**body, "max_tokens": 1_000_000}, call_upstream)
    assert called[-1] == "openai/gpt-4o"
    assert limits[-1] is not None and 1024 <= limits[-1] < 1_000_000
    with pytest.raises(BudgetExceeded):  # 1,000 answers: even at the floor, over the cap
        handle({"x-session-id": "s"}, {**body, "max_tokens": 1_000_000, "n": 1000}, call_upstream)


def test_client_example(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway_helpers import gateway_with_standin

    code = python_block_after(BLOCKS[4])
    assert '"http://127.0.0.1:8080/v1"' in code
    with gateway_with_standin() as gw:
        exec(code.replace('"http://127.0.0.1:8080/v1"', f'"{gw.url}/v1"'), {})
    assert capsys.readouterr().out == "Hello from the stand-in.\n"


def test_usage_example_routes_pins_and_escalates() -> None:
    namespace: dict[str, Any] = {}
    exec(python_block_after("## Usage"), namespace)
    route, after_call = namespace["route"], namespace["after_call"]
    messages = [{"role": "user", "content": "run the tests"}]
    models = [route({}, messages, namespace["Tier"].SIMPLE) for _ in range(3)]
    assert models == ["openai/gpt-4o-mini", "openai/gpt-4o-mini", "anthropic/claude-haiku-4.5"]
    sid = namespace["derive_session_id_from_messages"](messages)
    after_call(sid, 1234)
    assert namespace["store"].get_session_cost_micros(sid) == 1234


def test_fastapi_example(monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = StandIn()
    upstream.set("gpt-4o", status=503)
    with serve(upstream.app()) as url:
        monkeypatch.setenv("UPSTREAM_URL", f"{url}/v1")
        monkeypatch.setenv("UPSTREAM_KEY", "sk-test")
        namespace: dict[str, Any] = {}
        exec(python_block_after("<!-- example: fastapi -->"), namespace)
        app = namespace["app"]

        async def run() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                body = {"model": "auto", "messages": [{"role": "user", "content": "```py\nx\n```"}]}
                first = await client.post(
                    "/v1/chat/completions", json=body, headers={"x-session-id": "s"}
                )
                second = await client.post(
                    "/v1/chat/completions", json=body, headers={"x-session-id": "s"}
                )
                await namespace["upstream"].aclose()
                return [first, second]

        first, second = asyncio.run(run())
    assert first.status_code == 200
    assert first.headers["x-session-model"] == "gpt-4o"  # decided; gpt-4o-mini served
    assert second.headers["x-session-model"] == "gpt-4o-mini"  # the fallback is pinned
    assert upstream.models == ["gpt-4o", "gpt-4o-mini", "gpt-4o-mini"]
    assert first.json()["choices"][0]["message"]["content"]
    assert upstream.headers[0]["authorization"] == "Bearer sk-test"
