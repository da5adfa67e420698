"""The README's code runs as written."""

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
