"""The operator console's endpoints over real sockets: each turn's event as the gateway
logs it (every API, streamed or not), ``GET /v1/sessions/{id}/events`` scoped like the
other session endpoints, the console's sessions, overview and live stream, the page and
its assets, and the console switched off."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from gateway_helpers import PRICES, Running, chat, gateway_with_standin
from llm_sessions import Pricing

KEYS = ("sk-a", "sk-b", "sk-admin")
CACHED_PRICE = Pricing(1, 2, 0.1)  # cache reads at a tenth of the input price


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Running]:
    keys, admins = tmp_path / "keys", tmp_path / "admins"
    keys.write_text("\n".join(KEYS) + "\n")
    admins.write_text("sk-admin\n")
    with gateway_with_standin(
        api_keys_file=str(keys), admin_keys_file=str(admins), max_session_cost_usd=0.01,
        fit_output=False, pricing={**PRICES, "openai/s1": CACHED_PRICE},
    ) as running:  # fmt: skip
        yield running


def events(gw: Running, session_id: str, key: str = "sk-a", **params: str) -> Any:
    with gw.http(key) as http:
        return http.get(f"/v1/sessions/{session_id}/events", params=params)


def turn(gw: Running, session_id: str, text: str, key: str = "sk-a", **extra: Any) -> Any:
    with gw.http(key) as http:
        return http.post(
            "/v1/chat/completions",
            json=chat(text, **{"max_tokens": 50, **extra}),
            headers={"x-session-id": session_id, "user-agent": "test-agent/1.0"},
        )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
def test_each_turn_is_logged_with_what_the_gateway_saw(gw: Running, api: str, stream: bool) -> None:
    """Every API, streamed or not: the session's events say the API, the client, the
    status, the tokens, the cost and the latency of each turn, in order."""
    gw.standin.set("openai/s1", cached_tokens=1000)
    headers = {"x-session-id": "s", "user-agent": "test-agent/1.0"}
    with gw.http("sk-a") as http:
        for i in range(2):
            text = f"turn {i}"
            if api == "chat":
                body: dict[str, Any] = chat(text, max_tokens=50, stream=stream)
                path = "/v1/chat/completions"
            elif api == "messages":
                body = {"model": "auto", "max_tokens": 50, "stream": stream,
                        "messages": [{"role": "user", "content": text}]}  # fmt: skip
                path = "/v1/messages"
            else:
                body = {"model": "auto", "input": text, "max_output_tokens": 50,
                        "stream": stream}  # fmt: skip
                path = "/v1/responses"
            reply = http.post(path, json=body, headers=headers)
            assert reply.status_code == 200, reply.text
    log = events(gw, "s").json()["events"]
    assert [e["reason"] for e in log] == ["new", "pinned"]
    for e in log:
        assert e["api"] == api and e["stream"] is stream and e["status"] == 200
        assert e["agent"] == "test-agent/1.0" and e["source"] == "x-session-id"
        assert e["outcome"] == "served" and e["model"] == "openai/s1"
        assert e["input_tokens"] > 0 and e["output_tokens"] > 0
        assert e["cache_read_tokens"] == 1000
        assert e["cache_savings_micros"] == CACHED_PRICE.cache_savings_micros(1000) > 0
        assert e["cost_micros"] > 0 and e["latency_ms"] > 0
    assert log[1]["total_micros"] == log[0]["cost_micros"] + log[1]["cost_micros"]
    session = gw.session("s", "sk-a")
    assert session is not None
    assert round(float(session["session_cost_usd"]) * 1e6) == log[1]["total_micros"]


def test_escalation_fallback_refusal_and_failure_are_logged(gw: Running) -> None:
    for _ in range(3):
        assert turn(gw, "loop", "same again").status_code == 200
    gw.standin.set("openai/s1", status=500)
    assert turn(gw, "fb", "hello").status_code == 200  # groq/s2 answers
    assert turn(gw, "fb", "hello there", max_tokens=100_000).status_code == 429
    gw.standin.set("groq/s2", status=400, error_type="invalid_request_error")
    assert turn(gw, "fb", "and now").status_code == 400
    loop = [e["reason"] for e in events(gw, "loop").json()["events"]]
    assert loop == ["new", "pinned", "escalated"]
    fb = events(gw, "fb").json()["events"]
    assert [(e["reason"], e["outcome"], e["status"]) for e in fb] == [
        ("fallback", "served", 200), ("refused", "refused", 429), ("pinned", "failed", 400),
    ]  # fmt: skip
    assert fb[0]["model"] == "groq/s2" and fb[0]["decided"] == "openai/s1"
    assert fb[1]["cost_micros"] == 0 and fb[1]["requested_micros"] > 10_000


def test_the_events_endpoint_is_scoped_like_the_sessions(gw: Running) -> None:
    assert turn(gw, "mine", "hello").status_code == 200
    assert events(gw, "mine").status_code == 200
    assert events(gw, "mine", key="sk-b").status_code == 404  # another tenant's: not there
    assert events(gw, "nothing").status_code == 404
    assert events(gw, "mine", key="sk-wrong").status_code == 401
    with gw.http("sk-admin") as http:
        rows = http.get("/v1/console/sessions", params={"all": "true"}).json()["sessions"]
    tenant = next(r["tenant"] for r in rows if r["id"] == "mine")
    assert events(gw, "mine", key="sk-b", tenant=tenant).status_code == 403
    assert events(gw, "mine", key="sk-admin", tenant="not hex").status_code == 400
    by_admin = events(gw, "mine", key="sk-admin", tenant=tenant)
    assert by_admin.status_code == 200 and len(by_admin.json()["events"]) == 1
    with gw.http("sk-admin") as http:  # the admin deletes it, as the console's button does
        assert http.delete("/v1/sessions/mine", params={"tenant": tenant}).status_code == 200
    assert events(gw, "mine").status_code == 404


def test_console_sessions_and_overview_per_tenant_and_for_admins(gw: Running) -> None:
    gw.standin.set("openai/s1", cached_tokens=3)
    assert turn(gw, "a1", "hello").status_code == 200
    assert turn(gw, "b1", "hello", key="sk-b").status_code == 200
    assert turn(gw, "b1", "hello", key="sk-b", max_tokens=100_000).status_code == 429
    with gw.http("sk-a") as http:
        rows = http.get("/v1/console/sessions").json()["sessions"]
        assert [r["id"] for r in rows] == ["a1"] and "tenant" not in rows[0]
        row = rows[0]
        assert row["api"] == "chat" and row["reason"] == "new" and row["requests"] == 1
        assert row["agent"] == "test-agent/1.0" and row["tier"] == "SIMPLE"
        assert 0 < row["cache_read_share"] < 1 and row["cap_micros"] == 10_000
        assert http.get("/v1/console/sessions", params={"all": "true"}).status_code == 403
        mine = http.get("/v1/console/overview").json()["total"]
        assert mine["requests"] == 1 and mine["refusals"] == 0
        info = http.get("/v1/console/info").json()
        assert info["open"] is False and info["admin"] is False
    with gw.http("sk-admin") as http:
        rows = http.get("/v1/console/sessions", params={"all": "true"}).json()["sessions"]
        assert sorted(r["id"] for r in rows) == ["a1", "b1"]
        assert len({r["tenant"] for r in rows}) == 2
        every = http.get("/v1/console/overview", params={"all": "true"}).json()["total"]
        assert every["requests"] == 3 and every["refusals"] == 1
        assert every["reasons"] == {"new": 2, "refused": 1}
        assert every["models"] == {"openai/s1": 2} and every["spend_micros"] > 0
        assert http.get("/v1/console/info").json()["admin"] is True


def read_sse(response: httpx.Response, wanted: str, found: list[dict[str, Any]]) -> None:
    kind = ""
    for line in response.iter_lines():
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:") and kind == wanted:
            found.append(json.loads(line[5:]))
            return


def test_the_stream_pushes_each_turn_to_its_tenant_only(gw: Running) -> None:
    pushed: dict[str, list[dict[str, Any]]] = {"sk-a": [], "sk-b": []}
    auth = [{"authorization": f"Bearer {key}"} for key in pushed]
    with (
        httpx.Client(base_url=gw.url, timeout=30) as http,
        http.stream("GET", "/v1/console/stream", headers=auth[0]) as a,
        http.stream("GET", "/v1/console/stream", headers=auth[1]) as b,
    ):
        assert a.status_code == b.status_code == 200
        assert a.headers["content-type"].startswith("text/event-stream")
        readers = [
            threading.Thread(target=read_sse, args=(a, "turn", pushed["sk-a"])),
            threading.Thread(target=read_sse, args=(b, "turn", pushed["sk-b"])),
        ]
        for reader in readers:
            reader.start()
        assert turn(gw, "live", "hello").status_code == 200
        readers[0].join(10)
        assert turn(gw, "live-b", "hello", key="sk-b").status_code == 200
        readers[1].join(10)
    assert [p["id"] for p in pushed["sk-a"]] == ["live"]
    assert [p["id"] for p in pushed["sk-b"]] == ["live-b"]
    assert pushed["sk-a"][0]["event"]["reason"] == "new" and "tenant" not in pushed["sk-a"][0]
    with gw.http("sk-wrong") as http:
        assert http.get("/v1/console/stream").status_code == 401


def test_the_page_is_served_with_its_assets_and_a_strict_policy(gw: Running) -> None:
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        home = http.get("/")
        assert home.status_code == 307 and home.headers["location"] == "/ui"
        page = http.get("/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset in ("/ui/console.js", "/ui/console.css"):
            assert http.get(asset).status_code == 200
        assert http.get("/ui/../settings.py").status_code == 404
        assert http.get("/ui/nothing.js").status_code == 404


def test_the_console_can_be_switched_off() -> None:
    with gateway_with_standin(console_enabled=False) as gw, gw.http() as http:
        for path in ("/", "/ui", "/v1/console/sessions", "/v1/console/stream"):
            assert http.get(path).status_code == 404
        assert turn(gw, "s", "hello").status_code == 200
        assert len(events(gw, "s").json()["events"]) == 1  # the log is kept all the same


def test_an_open_gateway_says_so(tmp_path: Path) -> None:
    with gateway_with_standin() as gw, gw.http(None) as http:
        assert http.get("/v1/console/info").json()["open"] is True


def test_the_anthropic_sdk_turns_show_in_the_log(gw: Running) -> None:
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-a", max_retries=0)
    try:
        with client.messages.stream(
            model="auto", max_tokens=50, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-session-id": "sdk"},
        ) as stream:  # fmt: skip
            stream.get_final_message()
    finally:
        client.close()
    (event,) = events(gw, "sdk").json()["events"]
    assert event["api"] == "messages" and event["stream"] is True and event["complete"] is True


def test_a_shutdown_ends_the_console_streams() -> None:
    """A stream never ends by itself: a graceful shutdown ends it instead of waiting."""
    ended = threading.Event()

    def watch(url: str) -> None:
        with httpx.stream("GET", url + "/v1/console/stream", timeout=60) as reply:
            for _ in reply.iter_lines():
                pass
        ended.set()

    with gateway_with_standin() as gw:
        watcher = threading.Thread(target=watch, args=(gw.url,), daemon=True)
        watcher.start()
        subscribed = gw.gateway.console._subscriptions
        for _ in range(1000):
            if subscribed:
                break
            threading.Event().wait(0.01)
        assert subscribed
    assert ended.wait(30)  # the server stopped, and the stream ended cleanly with it
