"""The gateway as an operator runs it: hot sessions over two replicas, a busy Redis pool,
caps during outages, exactly-once billing, streams that carry only what was asked for."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway_helpers import (
    Running,
    chat,
    gateway_processes,
    gateway_with_standin,
    settings_for,
    standin_process,
)
from llm_sessions import AsyncRedisSessionStore, Config, RedisSessionStore
from llm_sessions.server import Gateway
from llm_sessions.server.run import running
from llm_sessions.server.settings import ConfigError, load_settings
from llm_sessions.server.standin import StandIn

from redis_server import RedisServer

# -- 200 requests on one session over two gateway processes ---------------------------------------


async def _fire(ports: list[int], count: int, session: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            url = f"http://127.0.0.1:{ports[i % len(ports)]}/v1/chat/completions"
            body = chat(f"step {i}", max_tokens=100)
            return await client.post(url, json=body, headers={"x-session-id": session})

        return list(await asyncio.gather(*(one(i) for i in range(count))))


@pytest.mark.parametrize(("cap", "refuses"), [("1000", False), ("0.004", True)])
def test_200_requests_on_one_session_over_two_gateways(
    redis_url: str, tmp_path: Path, cap: str, refuses: bool
) -> None:
    standin = StandIn()
    standin.default.cost = 0.000123  # usage.cost, as OpenRouter reports it: 123 micro-USD
    with running(standin.app()) as upstream_url:
        toml = (
            f'[upstream]\nbase_url = "{upstream_url}/v1"\n[store]\nurl = "{redis_url}"\n'
            '[pricing."gpt-4o-mini"]\ninput_per_mtok = 1\noutput_per_mtok = 2\n'
            '[pricing."gpt-4o"]\ninput_per_mtok = 1\noutput_per_mtok = 2\n'
            f"[budget]\nmax_session_cost_usd = {cap}\n"
        )
        with gateway_processes(tmp_path, toml) as ports:
            replies = asyncio.run(_fire(ports, 200, "hot"))
            status = httpx.get(f"http://127.0.0.1:{ports[0]}/v1/sessions/hot").json()
    codes = [r.status_code for r in replies]
    assert not [c for c in codes if c >= 500], codes
    served = [r for r in replies if r.status_code == 200]
    assert {r.status_code for r in replies} <= {200, 429}
    assert (len(served) < 200) is refuses
    assert len(served) == len(standin.received)  # refusals were never forwarded
    reported = sum(round(r.json()["usage"]["cost"] * 1_000_000) for r in served)
    assert status["session_cost_micros"] == reported == 123 * len(served)
    assert status["reserved_micros"] == 0


# -- a busy pool is not an outage ------------------------------------------------------------------


def test_1000_concurrent_second_turns_on_1000_pinned_sessions(
    redis_url: str, tmp_path: Path
) -> None:
    """With the default pool (upstream.max_connections = 200), 800 callers at a time wait
    for a connection: today they fail as if Redis were down."""
    with standin_process() as upstream_url:
        toml = f'[upstream]\nbase_url = "{upstream_url}/v1"\n[store]\nurl = "{redis_url}"\n'
        with gateway_processes(tmp_path, toml, count=1) as ports:
            base = f"http://127.0.0.1:{ports[0]}"

            async def turns() -> list[httpx.Response]:
                limits = httpx.Limits(max_connections=1000)
                async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

                    async def turn(i: int) -> httpx.Response:
                        headers = {"x-session-id": f"s{i}"}
                        return await client.post(
                            "/v1/chat/completions", json=chat("hi"), headers=headers
                        )

                    await asyncio.gather(*(turn(i) for i in range(1000)))
                    return list(await asyncio.gather(*(turn(i) for i in range(1000))))

            replies = asyncio.run(turns())
            metrics = httpx.get(f"{base}/metrics").text
    reasons = [r.headers.get("x-session-reason") for r in replies]
    assert [r.status_code for r in replies] == [200] * 1000
    assert reasons == ["pinned"] * 1000
    assert "llm_sessions_store_errors 0.0" in metrics.splitlines()


# -- contention past the busy timeout: 503 session_busy ---------------------------------------------


def test_a_session_busy_past_the_timeout_is_503_session_busy(
    redis_url: str, redis_server: RedisServer
) -> None:
    with gateway_with_standin(store_url=redis_url, store_busy_timeout_ms=100) as gw:
        admin = redis_server.client()
        admin.execute_command("CLIENT", "PAUSE", "400", "ALL")  # Redis stalls every client
        results: dict[str, httpx.Response] = {}

        def send(name: str) -> None:
            with gw.http() as http:
                results[name] = http.post(
                    "/v1/chat/completions", json=chat("hi"), headers={"x-session-id": "busy"}
                )

        first = threading.Thread(target=send, args=("first",))
        first.start()  # takes the session's lock, then waits for Redis
        time.sleep(0.1)
        send("second")  # waits for the lock past busy_timeout_ms
        first.join()
        admin.close()
    busy = results["second"]
    assert busy.status_code == 503
    assert busy.json()["error"]["code"] == "session_busy"
    assert busy.headers["retry-after"] == "1"
    assert results["first"].status_code == 200
    assert len(gw.standin.received) == 1  # the busy one was never forwarded


# -- a cap holds while the store is down -----------------------------------------------------------


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


def test_a_capped_session_is_refused_while_the_store_is_down(own_server: RedisServer) -> None:
    with gateway_with_standin(store_url=own_server.url, max_session_cost_usd=0.001) as gw:
        with gw.http() as http:
            at_cap = {"x-session-id": "capped"}
            small = chat("hi", max_tokens=10)
            assert http.post("/v1/chat/completions", json=small, headers=at_cap).is_success
            own_server.kill()
            forwarded = len(gw.standin.received)
            replies = [
                http.post("/v1/chat/completions", json=small, headers=at_cap) for _ in range(50)
            ]
            health = http.get("/health")
        assert {r.status_code for r in replies} == {503}
        assert {r.json()["error"]["code"] for r in replies} == {"session_store_unavailable"}
        assert all(r.headers["retry-after"] for r in replies)
        assert len(gw.standin.received) == forwarded  # nothing forwarded
        assert health.status_code == 503
        assert health.json()["budget"]["on_store_error"] == "refuse"


def test_allow_serves_capped_requests_unbudgeted_while_the_store_is_down(
    own_server: RedisServer,
) -> None:
    with gateway_with_standin(
        store_url=own_server.url, max_session_cost_usd=0.001, budget_on_store_error="allow"
    ) as gw:
        own_server.kill()
        with gw.http() as http:
            reply = http.post("/v1/chat/completions", json=chat("hi", max_tokens=10))
            health = http.get("/health").json()
        assert reply.status_code == 200
        assert reply.headers["x-session-reason"] == "store_unavailable"
        assert health["status"] == "degraded"


# -- billed exactly once, visible right after the stream ---------------------------------------------


def test_the_cost_is_recorded_before_done_is_sent(
    redis_url: str, redis_server: RedisServer
) -> None:
    """Redis holds writes back for 300 ms as the stream ends: a [DONE] sent before the
    cost is written would let the client read the session's old cost."""
    gate = threading.Event()
    admin = redis_server.client()
    with gateway_with_standin(store_url=redis_url) as gw, gw.http() as http:
        gw.standin.set("openai/s1", gate=gate)
        for i in range(3):
            sid = f"done-{i}"
            gate.clear()
            body = chat("hi", stream=True, stream_options={"include_usage": True})
            usage = None
            with http.stream(
                "POST", "/v1/chat/completions", json=body, headers={"x-session-id": sid}
            ) as reply:
                lines = reply.iter_lines()
                assert next(lines).startswith("data: ")
                admin.execute_command("CLIENT", "PAUSE", "300", "WRITE")
                gate.set()
                for line in lines:
                    if line.startswith("data: {") and '"usage"' in line:
                        usage = json.loads(line[6:])["usage"]
                    if line == "data: [DONE]":
                        cost = http.get(f"/v1/sessions/{sid}").json()["session_cost_micros"]
                        break
            assert usage is not None
            assert cost == usage["prompt_tokens"] + 2 * usage["completion_tokens"]
    admin.close()


def test_a_cost_that_could_not_be_recorded_is_counted(own_server: RedisServer) -> None:
    gate = threading.Event()
    with gateway_with_standin(store_url=own_server.url, store_finish_retry_ms=200) as gw:
        gw.standin.set("openai/s1", gate=gate)
        with (
            gw.http() as http,
            http.stream("POST", "/v1/chat/completions", json=chat("hi", stream=True)) as reply,
        ):
            lines = reply.iter_lines()
            next(lines)
            own_server.kill()
            gate.set()
            rest = list(lines)
            metrics = http.get("/metrics").text
    assert "data: [DONE]" in rest
    line = next(m for m in metrics.splitlines() if m.startswith("llm_sessions_unrecorded_cost"))
    assert float(line.split()[-1]) > 0


# -- streams carry only what the client asked for ----------------------------------------------------


def test_the_plain_streaming_loop_works_and_usage_comes_when_asked(gw_memory: Running) -> None:
    client = gw_memory.client()
    text = ""
    for chunk in client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
    ):
        text += chunk.choices[0].delta.content or ""
    assert text.strip() == "Hello from the stand-in."
    chunks = list(
        client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert all(c.choices for c in chunks[:-1])
    # the gateway still bills from the usage it consumed, whether the client saw it or not
    with gw_memory.http() as http:
        (session,) = http.get("/v1/sessions").json()["sessions"]
    assert session["request_count"] == 2
    assert session["session_cost_usd"] != "0.000000"


@pytest.fixture
def gw_memory() -> Iterator[Running]:
    with gateway_with_standin() as running_gateway:
        yield running_gateway


# -- upstream faults and configuration ------------------------------------------------------------------


def test_an_upstream_url_with_credentials_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match=r"upstream\.base_url"):
        load_settings(upstream_url="https://user:secret@api.example.com/v1")


async def _broken_send(*args: Any, **kwargs: Any) -> Any:
    """An upstream client that fails with something other than a network error."""
    raise RuntimeError("a bug in the client, not a network error")


def test_a_non_transport_error_is_a_502_that_releases_the_reservation() -> None:
    settings = settings_for("http://127.0.0.1:9", max_session_cost_usd=1.0)
    gateway = Gateway(settings)
    gateway.upstreams["default"].send = _broken_send  # type: ignore[method-assign]
    with running(gateway.app()) as url, httpx.Client(base_url=url, timeout=30) as http:
        reply = http.post("/v1/chat/completions", json=chat("hi"), headers={"x-session-id": "b"})
        session = http.get("/v1/sessions/b").json()
    assert reply.status_code == 502
    assert reply.json()["error"]["code"] == "all_models_failed"
    assert session["reserved_micros"] == 0
    assert session["session_cost_micros"] == 0


# -- listing -------------------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def listing_gw(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Running]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    keys = tmp_path / "keys.txt"
    keys.write_text("sk-a\nsk-b\nsk-admin\n")
    admins = tmp_path / "admins.txt"
    admins.write_text("sk-admin\n")
    with gateway_with_standin(
        store_url=url, api_keys_file=str(keys), admin_keys_file=str(admins), stats_limit=50
    ) as gw:
        yield gw


def test_the_listing_is_the_callers_own_and_pages(listing_gw: Running) -> None:
    gw = listing_gw
    mine = {f"a:{i}" for i in range(7)}
    for sid in mine:
        gw.client("sk-a").chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-session-id": sid},
        )
    gw.client("sk-b").chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-session-id": "b:1"},
    )
    seen: list[str] = []
    cursor = ""
    with gw.http("sk-a") as http:
        while True:
            page = http.get("/v1/sessions", params={"limit": 3, "cursor": cursor}).json()
            assert len(page["sessions"]) <= 3
            seen += [s["id"] for s in page["sessions"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert http.get("/v1/sessions", params={"all": "true"}).status_code == 403
    assert sorted(seen) == sorted(mine)  # every one once, by its whole id, no other tenant's
    with gw.http("sk-b") as http:
        assert [s["id"] for s in http.get("/v1/sessions").json()["sessions"]] == ["b:1"]
    with gw.http("sk-admin") as http:
        everyone = http.get("/v1/sessions", params={"all": "true", "limit": 50}).json()
    assert sorted(s["id"] for s in everyone["sessions"]) == sorted([*mine, "b:1"])


@pytest.mark.parametrize("scopes", [["", "acme", "a:b", "acme:x"]])
def test_store_listing_pages_select_one_scope_exactly(
    make_store: Any, clock: Any, scopes: list[str]
) -> None:
    from llm_sessions import session_key

    store = make_store(Config(timeout_ms=10_000, cleanup_interval_ms=0))
    for scope in scopes:
        for i in range(25):
            store.set_session(session_key(f"id:{i}%", scope), f"m{i}")
    clock.advance(5_000)
    store.touch_session(session_key("id:0%", "acme"))
    clock.advance(6_000)  # all but the touched one have expired
    for scope in scopes:
        store.set_session(session_key("fresh", scope), "m")
    for scope in scopes:
        found: list[str] = []
        cursor = ""
        while True:
            page = store.list_sessions(scope, limit=4, cursor=cursor)
            assert len(page.sessions) <= 4
            assert {row.scope for row in page.sessions} <= {scope}
            found += [row.id for row in page.sessions]
            cursor = page.next_cursor
            if not cursor:
                break
        expected = ["fresh", "id:0%"] if scope == "acme" else ["fresh"]
        assert sorted(found) == expected
    assert len(store.list_sessions(None, limit=100).sessions) == len(scopes) + 1


def test_async_stores_list_too(redis_url: str) -> None:
    async def main() -> int:
        store = AsyncRedisSessionStore(redis_url, Config(cleanup_interval_ms=0))
        for i in range(10):
            await store.set_session(f"s{i}", "m")
        page = await store.list_sessions("", limit=100)
        await store.aclose()
        return len(page.sessions)

    assert asyncio.run(main()) == 10
    sync = RedisSessionStore(redis_url, Config(cleanup_interval_ms=0))
    with pytest.raises(ValueError, match="cursor"):
        sync.list_sessions("", cursor="not-a-cursor")
    sync.close()


def test_the_body_is_forwarded_exactly_but_for_the_model() -> None:
    """Integers past 64 bits, floats, escapes and non-ASCII text reach the upstream as
    they were sent (the fast JSON path must not round them)."""
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": 'h\u00e9llo \u2603 \\n "q" \U0001f600'}],
        "seed": 123456789012345678901234567890,
        "temperature": 0.1,
        "top_p": 1e-7,
        "logit_bias": {"50256": -100},
        "user": "x" * 19 + "1234567890123456789",
    }
    with gateway_with_standin() as gw, gw.http() as http:
        reply = http.post("/v1/chat/completions", content=json.dumps(body).encode())
        assert reply.status_code == 200
        small = {**body, "seed": 7, "user": "u"}  # the orjson path
        assert http.post("/v1/chat/completions", json=small).status_code == 200
    first, second = gw.standin.received
    assert {k: v for k, v in first.items() if k != "model"} == {
        k: v for k, v in body.items() if k != "model"
    }
    assert isinstance(first["seed"], int) and first["seed"] == body["seed"]
    assert {k: v for k, v in second.items() if k not in ("model", "stream_options")} == {
        k: v for k, v in small.items() if k != "model"
    }
