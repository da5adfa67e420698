"""The gateway end to end: the official openai client, the gateway under uvicorn on a
loopback port, a stand-in upstream under uvicorn on another; memory and Redis stores."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway_helpers import Running, chat, gateway_with_standin

from redis_server import RedisServer


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def gw(store_url: str) -> Iterator[Running]:
    with gateway_with_standin(store_url=store_url) as running:
        yield running


def wait_for(predicate: Any, what: str, timeout: float = 10.0) -> None:
    """Poll until `predicate()` holds (for work the gateway finishes after a response)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# -- the happy paths --------------------------------------------------------------------------


def test_non_streaming_pins_and_reports(gw: Running) -> None:
    client = gw.client()
    messages = [{"role": "user", "content": "hello there"}]
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages)
    reply = raw.parse()
    assert reply.choices[0].message.content == "Hello from the stand-in."
    h = raw.headers
    assert (h["x-session-reason"], h["x-session-model"], h["x-session-tier"]) == (
        "new",
        "openai/s1",
        "SIMPLE",
    )
    assert h["x-session-cost-usd"] == "0.000000"
    assert gw.standin.received[-1]["model"] == "openai/s1"  # the decision went upstream
    assert "stream_options" not in gw.standin.received[-1]
    usage = reply.usage
    assert usage is not None
    session = gw.session(h["x-session-id"])
    assert session is not None
    assert session["session_cost_micros"] == usage.prompt_tokens * 1 + usage.completion_tokens * 2
    assert session["reserved_micros"] == 0
    messages += [
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "```py\nx=1\n```"},
    ]
    again = client.chat.completions.with_raw_response.create(model="auto", messages=messages)
    assert again.headers["x-session-id"] == h["x-session-id"]
    assert (again.headers["x-session-reason"], again.headers["x-session-model"]) == (
        "upgraded",
        "anthropic/c1",
    )


def test_streaming_passes_chunks_and_bills_from_usage(gw: Running) -> None:
    client = gw.client()
    gw.standin.set("openai/s1", chunks=4, text="one two three four five six seven eight")
    with client.chat.completions.with_streaming_response.create(
        model="auto", messages=[{"role": "user", "content": "stream please"}], stream=True
    ) as response:
        sid = response.headers["x-session-id"]
        assert response.headers["x-session-reason"] == "new"
        pieces = [
            c.choices[0].delta.content
            for c in response.parse()
            if c.choices and c.choices[0].delta.content
        ]
    assert "".join(pieces).split() == [
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
    ]
    forwarded = gw.standin.received[-1]
    assert forwarded["stream_options"] == {"include_usage": True}
    assert forwarded["model"] == "openai/s1"
    wait_for(lambda: (gw.session(sid) or {}).get("session_cost_micros", 0) > 0, "the stream's cost")
    session = gw.session(sid)
    assert session is not None
    prompt = len("stream please") // 4 + 1  # what the stand-in reports
    assert session["session_cost_micros"] == prompt * 1 + 8 * 2
    assert session["reserved_micros"] == 0


def test_stream_is_relayed_as_it_arrives() -> None:
    """The upstream holds its stream after the first chunk until the test has read that
    chunk through the gateway: a gateway that buffered the answer would never deliver it."""
    gate = threading.Event()
    with gateway_with_standin() as gw:
        gw.standin.set("openai/s1", chunks=3, text="a b c", gate=gate)
        with (
            gw.http() as http,
            http.stream("POST", "/v1/chat/completions", json=chat("go", stream=True)) as r,
        ):
            lines = r.iter_lines()
            first = next(line for line in lines if '"content": "a' in line)
            assert first.startswith("data: ")
            gate.set()
            rest = list(lines)
    assert [line for line in rest if line][-1] == "data: [DONE]"


def test_client_disconnect_cancels_upstream_and_bills_once(store_url: str) -> None:
    gate = threading.Event()  # never set: the upstream would stream forever
    with gateway_with_standin(store_url=store_url, max_session_cost_usd=1.0) as gw:
        gw.standin.set("openai/s1", chunks=5, text="alpha beta gamma delta epsilon", gate=gate)
        with (
            gw.http() as http,
            http.stream(
                "POST", "/v1/chat/completions", json=chat("a long answer please", stream=True)
            ) as r,
        ):
            sid = r.headers["x-session-id"]
            next(line for line in r.iter_lines() if "alpha" in line)
        # the client is gone: the upstream request is cancelled and the session billed
        wait_for(lambda: gw.standin.disconnects == 1, "the upstream to see the cancel")
        wait_for(lambda: (gw.session(sid) or {}).get("reserved_micros", 1) == 0, "the release")
        session = gw.session(sid)
        assert session is not None
        # no usage arrived: estimated from the streamed text, ceil(bytes / 3) tokens
        prompt = -(-len("a long answer please") // 3)
        assert session["session_cost_micros"] == prompt * 1 + -(-len("alpha ") // 3) * 2
        time.sleep(0.2)  # anything billing twice would have done it by now
        assert gw.session(sid)["session_cost_micros"] == session["session_cost_micros"]  # type: ignore[index]
        gate.set()


def test_upstream_breaking_mid_stream_bills_what_came(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with gateway_with_standin(store_url=store_url, max_session_cost_usd=1.0) as gw:
        gw.standin.set("openai/s1", chunks=3, text="one two three", break_stream=True)
        with (
            gw.http() as http,
            http.stream("POST", "/v1/chat/completions", json=chat("go on", stream=True)) as r,
        ):
            sid = r.headers["x-session-id"]
            lines = []
            with pytest.raises(httpx.HTTPError):  # the stream ends abruptly, as upstream's did
                lines.extend(r.iter_lines())
        wait_for(lambda: (gw.session(sid) or {}).get("reserved_micros", 1) == 0, "the release")
        session = gw.session(sid)
        assert session is not None
        assert session["session_cost_micros"] == -(-len("go on") // 3) + -(-len("one ") // 3) * 2
    assert not [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("llm_sessions")
    ]


def test_a_messages_stream_cut_before_its_usage_bills_what_was_generated(
    store_url: str,
) -> None:
    """message_start says output_tokens 1; the real count comes in message_delta, which a
    cut stream never sends: what was generated is billed, never the placeholder."""
    text = "alpha beta gamma delta epsilon zeta eta theta"
    with gateway_with_standin(store_url=store_url, max_session_cost_usd=1.0) as gw:
        gw.standin.set("anthropic/m1", text=text, break_stream=True)
        body = {"model": "anthropic/m1", "max_tokens": 100, "stream": True,
                "messages": [{"role": "user", "content": "go on"}]}  # fmt: skip
        with (
            gw.http() as http,
            http.stream("POST", "/v1/messages", json=body, headers={"x-session-id": "cut"}) as r,
        ):
            seen = b""
            with pytest.raises(httpx.HTTPError):
                for chunk in r.iter_bytes():
                    seen += chunk
        wait_for(lambda: (gw.session("cut") or {}).get("reserved_micros", 1) == 0, "the release")
        session = gw.session("cut")
    generated = [
        json.loads(line[5:])["delta"]["text"]
        for line in seen.decode().splitlines()
        if line.startswith("data:") and '"text_delta"' in line
    ]
    start = next(
        json.loads(line[5:]) for line in seen.decode().splitlines() if '"message_start"' in line
    )
    assert start["message"]["usage"]["output_tokens"] == 1  # the placeholder
    assert generated  # the cut came after some text
    assert session is not None
    # the input seen, and ceil(generated bytes / 3) tokens of output, at 1 and 2 USD/M
    out_tokens = -(-len("".join(generated).encode()) // 3)
    assert out_tokens > 1
    expected = start["message"]["usage"]["input_tokens"] * 1 + out_tokens * 2
    assert session["session_cost_micros"] == expected


# -- fallbacks -------------------------------------------------------------------------------


def test_fallback_on_503_then_repinned(gw: Running) -> None:
    gw.standin.set("anthropic/m1", status=503)
    client = gw.client()
    messages = [{"role": "user", "content": "explain the cache"}]
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages)
    assert raw.headers["x-session-model"] == "anthropic/m1"
    assert raw.headers["x-session-served-model"] == "openai/m2"
    assert gw.standin.models == ["anthropic/m1", "openai/m2"]
    assert raw.parse().model == "openai/m2"
    session = gw.session(raw.headers["x-session-id"])
    assert session is not None
    assert (session["model"], session["fallback_from"]) == ("openai/m2", "anthropic/m1")
    messages += [
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "explain more"},
    ]
    again = client.chat.completions.with_raw_response.create(model="auto", messages=messages)
    assert (again.headers["x-session-reason"], again.headers["x-session-model"]) == (
        "pinned",
        "openai/m2",
    )


def test_fallback_on_timeout_and_on_429() -> None:
    with gateway_with_standin(upstream={"timeout_s": 0.3}, reservation_ttl_ms=600_000) as gw:
        gw.standin.set("openai/s1", stall_s=2.0)
        raw = gw.client().chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.headers["x-session-served-model"] == "groq/s2"
        gw.standin.set("groq/s2", status=429, error_type="rate_limit_exceeded")
        gw.standin.set("openai/s1", status=500)
        with pytest.raises(openai.APIStatusError) as info:
            gw.client().chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "yo"}]
            )
        assert info.value.status_code == 502


def test_every_model_failing_is_a_502_that_names_them_and_charges_nothing(store_url: str) -> None:
    with gateway_with_standin(store_url=store_url, max_session_cost_usd=1.0) as gw:
        for model in ("anthropic/c1", "openai/c2", "google/c3"):
            gw.standin.set(model, status=503)
        body = chat("```x```", max_tokens=10)
        with gw.http() as http:
            r = http.post("/v1/chat/completions", json=body)
            assert r.status_code == 502
            error = r.json()["error"]
            assert error["type"] == "upstream_error"
            assert error["tried"] == ["anthropic/c1", "openai/c2", "google/c3"]
            for model in error["tried"]:
                assert model in error["message"]
            sid = r.headers["x-session-id"]
            session = gw.session(sid)
            assert session is not None
            assert (session["session_cost_micros"], session["reserved_micros"]) == (0, 0)
            # the same turn again is a retry, not a strike
            for model in ("anthropic/c1", "openai/c2", "google/c3"):
                gw.standin.set(model)
            again = http.post("/v1/chat/completions", json=body)
            assert again.headers["x-session-strikes"] == "0"


def test_unreachable_upstream_is_a_502() -> None:
    from gateway_helpers import settings_for
    from llm_sessions.server import create_app
    from llm_sessions.server.run import running

    from redis_server import free_port

    app = create_app(settings_for(f"http://127.0.0.1:{free_port()}"))
    with running(app) as url, httpx.Client(base_url=url) as http:
        r = http.post("/v1/chat/completions", json=chat("hi"))
    assert r.status_code == 502
    assert "connect error" in r.json()["error"]["message"]


def test_retries_are_bounded_and_quota_refusals_are_final() -> None:
    with gateway_with_standin(upstream={"max_attempts": 2}) as gw:
        for model in ("anthropic/c1", "openai/c2", "google/c3"):
            gw.standin.set(model, status=503)
        with gw.http() as http:
            assert http.post("/v1/chat/completions", json=chat("```a```")).status_code == 502
            assert gw.standin.models == ["anthropic/c1", "openai/c2"]
            gw.standin.received.clear()
            gw.standin.set("openai/s1", status=429, error_type="insufficient_quota")
            r = http.post("/v1/chat/completions", json=chat("plain question"))
        assert r.status_code == 429
        assert r.json()["error"]["type"] == "insufficient_quota"
        assert gw.standin.models == ["openai/s1"]  # no walk down the chain


# -- budgets ---------------------------------------------------------------------------------


def test_budget_refusal_is_final_and_nothing_is_forwarded(store_url: str) -> None:
    with gateway_with_standin(store_url=store_url, max_session_cost_usd=0.001) as gw:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="k")  # default retries on
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=100_000
            )
        error = info.value.body
        error = error.get("error", error) if isinstance(error, dict) else {}
        assert error["type"] == "budget_exceeded"
        assert error["cap_usd"] == "0.001000"
        assert error["retryable"] is False
        assert "final" in error["message"]
        assert info.value.response.headers["x-should-retry"] == "false"
        assert gw.standin.received == []
        with gw.http() as http:
            metrics = http.get("/metrics").text
        assert 'llm_sessions_responses_total{status="429"} 1.0' in metrics  # not retried
        assert "llm_sessions_budget_rejections_total 1.0" in metrics


# -- tenants and keys --------------------------------------------------------------------------


def test_tenants_never_share_sessions(gw: Running) -> None:
    a, b = gw.http("key-a"), gw.http("key-b")
    first_a = a.post("/v1/chat/completions", json=chat("hi"))
    first_b = b.post("/v1/chat/completions", json=chat("hi"))
    assert first_a.headers["x-session-id"] != first_b.headers["x-session-id"]
    assert first_b.headers["x-session-reason"] == "new"
    h = {"x-session-id": "main"}
    assert (
        a.post("/v1/chat/completions", json=chat("x"), headers=h).headers["x-session-reason"]
        == "new"
    )
    assert (
        a.post("/v1/chat/completions", json=chat("y"), headers=h).headers["x-session-reason"]
        == "pinned"
    )
    assert (
        b.post("/v1/chat/completions", json=chat("z"), headers=h).headers["x-session-reason"]
        == "new"
    )
    assert gw.session("main", "key-a") is not None
    assert gw.session(first_a.headers["x-session-id"], "key-b") is None
    assert b.delete(f"/v1/sessions/{first_a.headers['x-session-id']}").status_code == 404
    assert a.delete("/v1/sessions/main").json() == {"id": "main", "deleted": True}
    assert gw.session("main", "key-a") is None
    assert gw.session("main", "key-b") is not None
    a.close()
    b.close()


def test_api_keys_restrict_callers(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# callers\nsk-alpha\n\nsk-beta\n")
    with gateway_with_standin(api_keys_file=str(keys)) as gw:
        for key in (None, "sk-wrong"):
            with gw.http(key) as http:
                r = http.post("/v1/chat/completions", json=chat("hi"))
                assert r.status_code == 401
                assert r.json()["error"]["code"] == "invalid_api_key"
                assert http.get("/v1/models").status_code == 401
        reply = gw.client("sk-beta").chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content
        assert "sk-beta" not in json.dumps(gw.standin.headers)  # the caller key is never forwarded


def test_upstream_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-upstream-secret")
    with gateway_with_standin() as gw:
        gw.client().chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "q"}]
        )
        assert gw.standin.headers[-1]["authorization"] == "Bearer sk-upstream-secret"


# -- the other endpoints -----------------------------------------------------------------------


def test_models_health_metrics_and_stats(gw: Running) -> None:
    client = gw.client()
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "auto"
    assert {"openai/s1", "groq/s2", "anthropic/c1", "google/c3"} <= set(ids)
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "```a```"}])
    with gw.http() as http:
        health = http.get("/health").json()
        assert (health["status"], health["store"]) == ("ok", "reachable")
        assert health["store_on_error"] == "fail_open"
        assert health["budget"]["on_store_error"] == "refuse"
        metrics = http.get("/metrics")
        stats = http.get("/v1/sessions", params={"limit": 5}).json()
        assert http.get("/v1/sessions", params={"limit": "x"}).status_code == 400
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in (
        'llm_sessions_requests_total{reason="new"} 1.0',
        "llm_sessions_escalations_total",
        "llm_sessions_cache_sticky_activations_total",
        "llm_sessions_budget_rejections_total",
        "llm_sessions_upstream_errors_total",
        "llm_sessions_fallbacks_total",
        "llm_sessions_session_cost_usd_total",
        "llm_sessions_store_errors",
    ):
        assert name in metrics.text
    # the caller's own sessions, each by its whole id (here derived: 64 hex)
    assert len(stats["sessions"]) == 1
    assert len(stats["sessions"][0]["id"]) == 64
    assert stats["next_cursor"] is None


# -- bad input -----------------------------------------------------------------------------------

BAD = [
    (b"{not json", 400),
    (b"[]", 400),
    (b'"text"', 400),
    (b"{}", 400),
    (b'{"messages": []}', 400),
    (b'{"messages": "hi"}', 400),
    (b'{"messages": [{"content": "no role"}]}', 400),
    (b'{"messages": [1, 2]}', 400),
    (b'{"messages": [{"role": "user", "content": "x"}], "model": 5}', 400),
    (b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}', 400),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}', 400),
    (b'{"messages": [{"role": "user", "content": "x"}], "tools": {}}', 400),
    (b'{"messages": [{"role": "user", "content": "x"}], "stream_options": 3}', 400),
]


def test_bad_requests_get_clear_errors_and_leave_nothing(gw: Running) -> None:
    with gw.http() as http:
        for body, status in BAD:
            r = http.post(
                "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
            )
            assert r.status_code == status, body
            assert r.json()["error"]["type"] == "invalid_request_error", body
            assert r.json()["error"]["message"], body
        good = json.dumps(chat("hi")).encode()
        for header in (b"x" * 300, "café".encode(), b"tab\tinside"):
            r = http.post("/v1/chat/completions", content=good, headers={"x-session-id": header})
            assert r.status_code == 400
            assert "x-session-id" in r.json()["error"]["message"]
        # a control character: refused by the HTTP parser itself, before the app sees it
        r = http.post("/v1/chat/completions", content=good, headers={"x-session-id": b"bad\x7fid"})
        assert r.status_code == 400
        big = b'{"messages": [{"role": "user", "content": "' + b"x" * (10 * 1024 * 1024) + b'"}]}'
        assert http.post("/v1/chat/completions", content=big).status_code == 413
        assert http.get("/v1/nothing-here").status_code == 404
        assert http.get("/v1/nothing-here").json()["error"]["type"] == "not_found_error"
        assert http.get("/v1/chat/completions").status_code == 405
        assert http.get("/v1/sessions").json()["sessions"] == []
    assert gw.standin.received == []


def test_a_declared_oversize_body_is_refused_before_reading() -> None:
    with gateway_with_standin(max_body_bytes=2048) as gw, gw.http() as http:
        r = http.post("/v1/chat/completions", content=b"x" * 4096)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "body_too_large"


# -- logging -------------------------------------------------------------------------------------


def test_one_structured_log_line_per_request_without_contents_or_keys(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-upstream-secret")
    with caplog.at_level(logging.INFO, logger="llm_sessions.access"), gateway_with_standin() as gw:
        with gw.http("sk-caller-secret") as http:
            r = http.post(
                "/v1/chat/completions",
                json=chat("my secret question"),
                headers={"x-session-id": "abcdefghijkl"},
            )
            http.post("/v1/chat/completions", content=b"nope")
        lines = [
            json.loads(rec.getMessage())
            for rec in caplog.records
            if rec.name == "llm_sessions.access"
        ]
    assert r.status_code == 200
    assert len(lines) == 2
    ok, bad = lines
    assert ok["session"] == "abcdefghijkl"  # whole: time-ordered ids differ at the end
    assert (ok["reason"], ok["model"], ok["tier"], ok["status"]) == (
        "new",
        "openai/s1",
        "SIMPLE",
        200,
    )
    assert ok["latency_ms"] >= 0
    assert float(ok["cost_usd"]) > 0
    assert bad["status"] == 400
    text = caplog.text
    for secret in ("my secret question", "sk-caller-secret", "sk-upstream-secret"):
        assert secret not in text


# -- Redis: outage, and two gateway processes ------------------------------------------------------


def test_store_outage_fails_open_and_health_says_degraded(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        with gateway_with_standin(store_url=server.url) as gw, gw.http() as http:
            assert (
                http.post("/v1/chat/completions", json=chat("hi")).headers["x-session-reason"]
                == "new"
            )
            assert (
                http.post("/v1/chat/completions", json=chat("hi")).headers["x-session-reason"]
                == "pinned"
            )
            server.kill()
            r = http.post("/v1/chat/completions", json=chat("hi"))
            assert r.status_code == 200  # keeps flowing, without pinning
            health = http.get("/health").json()
            assert (health["status"], health["store"]) == ("degraded", "unreachable")
            assert "llm_sessions_store_errors" in http.get("/metrics").text
            server.start()
            assert http.get("/health").json()["status"] == "ok"
    finally:
        server.kill()


def test_a_store_lost_during_a_request_still_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    server = RedisServer(tmp_path / "redis").start()
    gate = threading.Event()
    try:
        with (
            gateway_with_standin(store_url=server.url, store_on_error="raise") as gw,
            gw.http() as http,
        ):
            gw.standin.set("openai/s1", chunks=2, text="held answer", gate=gate)
            with ThreadPoolExecutor(1) as pool:
                reply = pool.submit(http.post, "/v1/chat/completions", json=chat("hi", stream=True))
                wait_for(lambda: len(gw.standin.received) == 1, "the upstream call")
                server.kill()  # the store goes away while the answer streams
                gate.set()
                r = reply.result(timeout=30)
            assert r.status_code == 200
            assert '"content": "held ' in r.text  # the relayed stream
            assert http.post("/v1/chat/completions", json=chat("hi")).status_code == 503
            health = http.get("/health").json()
            assert (health["status"], health["store"]) == ("unavailable", "unreachable")
            assert http.get("/health").status_code == 503
        assert any("could not record" in rec.getMessage() for rec in caplog.records)
    finally:
        server.kill()


def test_two_gateway_processes_share_sessions_over_redis(redis_url: str, tmp_path: Path) -> None:
    from gateway_helpers import gateway_processes
    from llm_sessions.server.run import running
    from llm_sessions.server.standin import StandIn

    standin = StandIn()
    with running(standin.app()) as upstream_url:
        pricing = "\n".join(
            f'[pricing."{m}"]\ninput_per_mtok = 1\noutput_per_mtok = 2\n'
            for m in ("gpt-4o-mini", "gpt-4o")
        )
        toml = (
            f'[upstream]\nbase_url = "{upstream_url}/v1"\n[store]\nurl = "{redis_url}"\n{pricing}'
        )
        with gateway_processes(tmp_path, toml) as ports:
            body = chat("explain the plan")
            one = httpx.post(
                f"http://127.0.0.1:{ports[0]}/v1/chat/completions", json=body, timeout=30
            )
            body["messages"] += [
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "go on"},
            ]
            two = httpx.post(
                f"http://127.0.0.1:{ports[1]}/v1/chat/completions", json=body, timeout=30
            )
            assert one.headers["x-session-id"] == two.headers["x-session-id"]
            assert one.headers["x-session-model"] == two.headers["x-session-model"] == "gpt-4o-mini"
            assert two.headers["x-session-reason"] == "pinned"
            costs = [
                r.json()["usage"]["prompt_tokens"] + 2 * r.json()["usage"]["completion_tokens"]
                for r in (one, two)
            ]
            status = httpx.get(
                f"http://127.0.0.1:{ports[0]}/v1/sessions/{one.headers['x-session-id']}"
            ).json()
            assert status["session_cost_micros"] == sum(costs)
        lines = (tmp_path / f"gateway-{ports[1]}.log").read_text()
        assert '"reason": "pinned"' in lines  # its one access line


def test_a_refused_request_is_logged_with_what_is_known(caplog: pytest.LogCaptureFixture) -> None:
    """A budget refusal's line names the session (whole, bounded), its source, the model it
    is pinned to and why it was refused; ids longer than a log field are cut."""
    long_id = "0190b5c2-7a1e-7cc3-9f00-" + "a" * 40
    with (
        caplog.at_level(logging.INFO, logger="llm_sessions.access"),
        gateway_with_standin(max_session_cost_usd=0.01, fit_output=False) as gw,
        gw.http() as http,
    ):
        headers = {"x-session-id": long_id}
        first = http.post("/v1/chat/completions", json=chat("hi"), headers=headers)
        big = chat("hi", max_tokens=100_000)  # a worst case of 0.2 USD
        refused = http.post("/v1/chat/completions", json=big, headers=headers)
        lines = [
            json.loads(r.getMessage()) for r in caplog.records if r.name == "llm_sessions.access"
        ]
    assert (first.status_code, refused.status_code) == (200, 429)
    line = lines[-1]
    assert line["status"] == 429
    assert line["session"] == long_id
    assert (line["source"], line["reason"], line["model"]) == (
        "x-session-id",
        "refused",
        "openai/s1",
    )
