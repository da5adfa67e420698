"""Pooled upstream connections: an upstream that closes an idle keep-alive connection just
as the gateway sends the next request on it (the keep-alive race) costs the client
nothing, whichever API, streamed or not; a request the upstream did answer, or broke off
mid-answer, is never sent twice."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import aiohttp
import httpx
import pytest

from gateway_helpers import chat, settings_for
from llm_sessions import Pricing, routing_table
from llm_sessions.server import Gateway
from llm_sessions.server.run import running
from llm_sessions.server.standin import StandIn


@dataclass
class Closer:
    """A TCP proxy in front of an upstream that closes every connection when a second
    request arrives on it, before forwarding a byte of it: what a server whose keep-alive
    timeout ran out does to a client that reused the connection at that moment."""

    upstream_port: int
    reset: bool = False  # reset the connection (RST) instead of closing it (FIN)
    port: int = 0
    connections: int = 0
    cut: int = 0  # requests dropped unanswered
    _ready: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None

    async def _pipe(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        answered = False

        async def upstream_to_client() -> None:
            nonlocal answered
            while data := await up_r.read(65536):
                answered = True
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        back = asyncio.ensure_future(upstream_to_client())
        try:
            while data := await client_r.read(65536):
                if answered:  # a second request on this connection: drop it unanswered
                    self.cut += 1
                    if self.reset:
                        sock = client_w.get_extra_info("socket")
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        client_w.transport.abort()
                    break
                up_w.write(data)
                await up_w.drain()
        finally:
            back.cancel()
            up_w.close()
            client_w.close()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    @contextmanager
    def running(self) -> Iterator[str]:
        thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        thread.start()
        assert self._ready.wait(10)
        try:
            yield f"http://127.0.0.1:{self.port}"
        finally:
            assert self._loop is not None and self._stop is not None
            self._loop.call_soon_threadsafe(self._stop.set)
            thread.join(10)


@contextmanager
def gateway_behind_closer(reset: bool = False) -> Iterator[tuple[str, StandIn, Closer]]:
    standin = StandIn()
    with ExitStack() as stack:
        standin_url = stack.enter_context(running(standin.app()))
        closer = Closer(int(standin_url.rsplit(":", 1)[1]), reset)
        closer_url = stack.enter_context(closer.running())
        # one model per tier and no fallback: a failed attempt would be a 502
        tiers = {"SIMPLE": {"primary": "openai/s1"}}
        gateway = Gateway(
            settings_for(
                closer_url, tiers=routing_table(tiers), pricing={"openai/s1": Pricing(1, 2)}
            )
        )
        yield stack.enter_context(running(gateway.app())), standin, closer


BODIES = {
    "chat": ("/v1/chat/completions", chat("hello")),
    "messages": (
        "/v1/messages",
        {"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]},
    ),
    "responses": ("/v1/responses", {"model": "auto", "input": "hello", "store": False}),
}


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("api", list(BODIES))
def test_a_pooled_connection_closed_by_the_upstream_is_retried_on_a_fresh_one(
    api: str, stream: bool, reset: bool
) -> None:
    path, body = BODIES[api]
    with (
        gateway_behind_closer(reset) as (url, standin, closer),
        httpx.Client(
            base_url=url, headers={"authorization": "Bearer k", "x-api-key": "k"}, timeout=30
        ) as client,
    ):
        warm = [client.post(path, json={**body, "stream": stream}) for _ in range(1)]
        assert [r.status_code for r in warm] == [200]
        # the next request reuses the pooled connection, which the upstream now closes
        replies = [
            client.post(path, json={**body, "stream": stream}, headers={"x-session-id": f"s{i}"})
            for i in range(3)
        ]
        assert [r.status_code for r in replies] == [200, 200, 200], replies[0].text
        assert {r.headers["x-session-served-model"] for r in replies} == {"openai/s1"}
        # the 1st and 3rd found a pooled connection and were dropped once on it (the 2nd
        # opened a new one, since the retry's connection is not pooled)...
        assert closer.cut == 2
        assert len(standin.received) == 4  # ...and every request was answered once
        metrics = client.get("/metrics").text
    assert "llm_sessions_fallbacks_total 0.0" in metrics.splitlines()


def test_the_retry_never_takes_another_pooled_connection() -> None:
    """Several idle connections go stale together (one keep-alive timeout, one burst):
    the second try is on a new connection, not the next stale one in the pool."""
    path, body = BODIES["chat"]
    with gateway_behind_closer() as (url, standin, closer):

        async def go() -> list[httpx.Response]:
            headers = {"authorization": "Bearer k"}
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
                # four pooled connections: four requests at once
                first = await asyncio.gather(*(client.post(path, json=body) for _ in range(4)))
                assert [r.status_code for r in first] == [200] * 4
                return [await client.post(path, json=body) for _ in range(2)]

        replies = asyncio.run(go())
    assert [r.status_code for r in replies] == [200, 200]
    assert closer.connections >= 4
    assert closer.cut == 2
    assert len(standin.received) == 6  # each request answered once


def test_an_upstream_that_breaks_off_its_answer_is_not_asked_again() -> None:
    """A stream the upstream cut after its first chunk was answered: it is billed as
    cut, never sent a second time."""
    path, body = BODIES["chat"]
    with (
        gateway_behind_closer() as (url, standin, _closer),
        httpx.Client(base_url=url, headers={"authorization": "Bearer k"}, timeout=30) as client,
    ):
        standin.set("openai/s1", break_stream=True)
        with pytest.raises(httpx.RemoteProtocolError):  # cut: the client sees no end
            client.post(path, json={**body, "stream": True})
    assert len(standin.received) == 1


def test_a_5xx_is_logged_with_its_cause_and_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    path, body = BODIES["chat"]
    caplog.set_level(logging.WARNING, logger="llm_sessions.gateway")
    with (
        gateway_behind_closer() as (url, standin, _closer),
        httpx.Client(base_url=url, headers={"authorization": "Bearer k"}, timeout=30) as client,
    ):
        standin.set("openai/s1", status=503)
        reply = client.post(path, json=body, headers={"x-request-id": "req-42"})
    assert reply.status_code == 502
    [warning] = [
        r for r in caplog.records if r.name == "llm_sessions.gateway" and "502" in r.message
    ]
    assert "req-42" in warning.message
    assert "openai/s1 (HTTP 503)" in warning.message


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
def test_a_connection_closed_while_the_body_is_written_is_retried_too(reset: bool) -> None:
    """A large body is still being written when the upstream drops the connection: aiohttp
    says "Can not write request body" (an error without an errno, its cause the reset)."""
    path, body = BODIES["chat"]
    big = chat("x" * 4_000_000)
    with (
        gateway_behind_closer(reset) as (url, standin, closer),
        httpx.Client(base_url=url, headers={"authorization": "Bearer k"}, timeout=30) as client,
    ):
        assert client.post(path, json=body).status_code == 200
        reply = client.post(path, json=big)
    assert reply.status_code == 200, reply.text
    assert closer.cut == 1
    assert len(standin.received) == 2


def test_a_body_over_a_megabyte_goes_upstream_without_a_warning() -> None:
    """aiohttp warns (ResourceWarning) when it is handed more than 1 MiB as bytes; under
    warnings-as-errors, as here, that was a 502."""
    path, _ = BODIES["chat"]
    with (
        gateway_behind_closer() as (url, standin, _closer),
        httpx.Client(base_url=url, headers={"authorization": "Bearer k"}, timeout=30) as client,
    ):
        reply = client.post(path, json=chat("x" * 4_000_000))
    assert reply.status_code == 200, reply.text
    assert standin.received[0]["messages"][0]["content"] == "x" * 4_000_000


def test_which_failures_count_as_a_connection_closed_unanswered() -> None:
    """What aiohttp raises when the upstream's close reaches a pooled connection at each
    moment of a request (seen in the soak: the body's write, on a transport already
    closing, raises an error without an errno whose cause is the reset)."""
    from aiohttp.client_reqrep import ConnectionKey

    from llm_sessions.server.upstream import _closed_unanswered

    def caused(exc: aiohttp.ClientError, cause: BaseException) -> aiohttp.ClientError:
        exc.__cause__ = cause
        return exc

    key = ConnectionKey("127.0.0.1", 1, False, True, None, None, None)
    write = "Can not write request body for http://127.0.0.1:1/v1/messages"
    unanswered = [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"),
        aiohttp.ClientOSError(errno.EPIPE, "Broken pipe"),
        caused(
            aiohttp.ClientOSError(None, write),
            ConnectionResetError("Cannot write to closing transport"),
        ),
    ]
    not_so = [
        aiohttp.ClientConnectorError(key, ConnectionRefusedError(errno.ECONNREFUSED, "refused")),
        aiohttp.ClientOSError(None, write),
        aiohttp.ClientPayloadError("cut"),
        aiohttp.ClientResponseError(None, (), status=500),  # type: ignore[arg-type]
    ]
    assert [_closed_unanswered(e) for e in unanswered] == [True] * len(unanswered)
    assert [_closed_unanswered(e) for e in not_so] == [False] * len(not_so)
