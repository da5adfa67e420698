"""The request head (request line and headers) is bounded before it is parsed: a flood
gets 431 at once and costs the gateway nothing more; every other request is served."""

from __future__ import annotations

import contextlib
import socket

import httpx
import pytest

from gateway_helpers import chat, gateway_with_standin
from llm_sessions.server.protocol import MAX_HEAD_BYTES


def _send(url: str, head: bytes, body: bytes = b"") -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        with contextlib.suppress(OSError):  # the gateway may close before reading it all
            sock.sendall(head + body)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
        return b"".join(chunks)


@pytest.mark.parametrize(
    "head",
    [
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-big: "
        + b"a" * (8 << 20)
        + b"\r\n\r\n",
        b"GET /v1/models?" + b"q" * (2 << 20) + b" HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nhost: x\r\n" + b"x-many: 1\r\n" * 200_000 + b"\r\n",
    ],
    ids=["one huge header", "a huge request line", "many headers"],
)
def test_an_oversized_head_is_431_at_once(head: bytes) -> None:
    with gateway_with_standin() as gw:
        answer = _send(gw.url, head)
        assert httpx.get(f"{gw.url}/health").status_code == 200  # still serving
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert gw.standin.received == []


def test_heads_within_the_bound_are_served_and_keep_alive_counts_each_head_anew() -> None:
    big_header = "h" * (MAX_HEAD_BYTES // 2)
    with gateway_with_standin() as gw, gw.http() as http:
        replies = [
            http.post(
                "/v1/chat/completions", json=chat("x" * 200_000), headers={"x-note": big_header}
            )
            for _ in range(4)  # bodies and heads together far past the bound: each head is fine
        ]
    assert [r.status_code for r in replies] == [200] * 4
