"""Bad input, table-driven: each malformed request gets a 4xx with an OpenAI-style JSON error
(naming the field where there is one), leaves the store exactly as it was, and never
reaches the upstream."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway_helpers import Running, gateway_with_standin
from llm_sessions import Config, RedisSessionStore

OK_MESSAGES = [{"role": "user", "content": "hi"}]
VICTIM = {"x-session-id": "victim"}


def body(**fields: Any) -> bytes:
    return json.dumps({"model": "auto", "messages": OK_MESSAGES, **fields}).encode()


def raw_with(fragment: str) -> bytes:
    """A body whose JSON text carries `fragment` verbatim as the value of "extra"."""
    return b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "extra": ' + (
        fragment.encode() + b"}"
    )


def nested(depth: int) -> bytes:
    return b'{"messages": [{"role": "user", "content": "hi"}], "x": ' + (
        b"[" * depth + b"]" * depth + b"}"
    )


# (name, method, path, body bytes, extra headers, status, param or None)
Case = tuple[str, str, str, bytes, dict[str, Any], int, str | None]
CASES: list[Case] = [
    ("not json", "POST", "/v1/chat/completions", b"{not json", {}, 400, None),
    ("empty body", "POST", "/v1/chat/completions", b"", {}, 400, None),
    ("array", "POST", "/v1/chat/completions", b"[]", {}, 400, None),
    ("string", "POST", "/v1/chat/completions", b'"text"', {}, 400, None),
    ("null", "POST", "/v1/chat/completions", b"null", {}, 400, None),
    ("number", "POST", "/v1/chat/completions", b"12", {}, 400, None),
    ("trailing garbage", "POST", "/v1/chat/completions", body() + b" x", {}, 400, None),
    ("invalid utf-8", "POST", "/v1/chat/completions", b'{"messages": "\xff\xfe"}', {}, 400, None),
    ("no messages", "POST", "/v1/chat/completions", b"{}", {}, 400, "messages"),
    ("empty messages", "POST", "/v1/chat/completions", body(messages=[]), {}, 400, "messages"),
    ("messages string", "POST", "/v1/chat/completions", body(messages="hi"), {}, 400, "messages"),
    ("messages null", "POST", "/v1/chat/completions", body(messages=None), {}, 400, "messages"),
    ("messages object", "POST", "/v1/chat/completions", body(messages={"role": "user"}), {}, 400,
     "messages"),
    ("message without role", "POST", "/v1/chat/completions", body(messages=[{"content": "x"}]),
     {}, 400, "messages[0]"),
    ("message numbers", "POST", "/v1/chat/completions", body(messages=[1, 2]), {}, 400,
     "messages[0]"),
    ("role number", "POST", "/v1/chat/completions", body(messages=[{"role": 5}]), {}, 400,
     "messages[0]"),
    ("role null", "POST", "/v1/chat/completions", body(messages=[{"role": None}]), {}, 400,
     "messages[0]"),
    ("second message bad", "POST", "/v1/chat/completions",
     body(messages=[*OK_MESSAGES, "x"]), {}, 400, "messages[1]"),
    ("model number", "POST", "/v1/chat/completions", body(model=5), {}, 400, "model"),
    ("model list", "POST", "/v1/chat/completions", body(model=["a"]), {}, 400, "model"),
    ("model object", "POST", "/v1/chat/completions", body(model={"a": 1}), {}, 400, "model"),
    ("model true", "POST", "/v1/chat/completions", body(model=True), {}, 400, "model"),
    ("model LF", "POST", "/v1/chat/completions", body(model="a\nb"), {}, 400, "model"),
    ("model CR", "POST", "/v1/chat/completions", body(model="a\rb"), {}, 400, "model"),
    ("model CRLF header", "POST", "/v1/chat/completions",
     body(model="m\r\nX-Evil: 1"), {}, 400, "model"),
    ("model NUL", "POST", "/v1/chat/completions", body(model="a\x00b"), {}, 400, "model"),
    ("model tab", "POST", "/v1/chat/completions", body(model="a\tb"), {}, 400, "model"),
    ("model DEL", "POST", "/v1/chat/completions", body(model="a\x7fb"), {}, 400, "model"),
    ("model latin-1", "POST", "/v1/chat/completions", body(model="modèle"), {}, 400, "model"),
    ("model emoji", "POST", "/v1/chat/completions", body(model="m\U0001f600"), {}, 400, "model"),
    ("model 257 chars", "POST", "/v1/chat/completions", body(model="m" * 257), {}, 400, "model"),
    ("model 1 MB", "POST", "/v1/chat/completions", body(model="m" * 1_000_000), {}, 400, "model"),
    ("model lone surrogate", "POST", "/v1/chat/completions",
     b'{"model": "\\ud83d", "messages": [{"role": "user", "content": "hi"}]}', {}, 400, None),
    ("NaN", "POST", "/v1/chat/completions", raw_with("NaN"), {}, 400, None),
    ("Infinity", "POST", "/v1/chat/completions", raw_with("Infinity"), {}, 400, None),
    ("-Infinity", "POST", "/v1/chat/completions", raw_with("-Infinity"), {}, 400, None),
    ("NaN in temperature", "POST", "/v1/chat/completions",
     b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', {}, 400, None),
    ("lone high surrogate", "POST", "/v1/chat/completions", raw_with('"\\ud800"'), {}, 400, None),
    ("lone low surrogate", "POST", "/v1/chat/completions", raw_with('"\\udc00"'), {}, 400, None),
    ("surrogate in content", "POST", "/v1/chat/completions",
     b'{"messages": [{"role": "user", "content": "a\\uDBFFb"}]}', {}, 400, None),
    ("200k nested brackets", "POST", "/v1/chat/completions", nested(200_000), {}, 400, None),
    ("1000 nested brackets", "POST", "/v1/chat/completions", nested(1000), {}, 400, None),
    ("129 nested brackets", "POST", "/v1/chat/completions", nested(129), {}, 400, None),
    ("stream string", "POST", "/v1/chat/completions", body(stream="yes"), {}, 400, "stream"),
    ("stream number", "POST", "/v1/chat/completions", body(stream=1), {}, 400, "stream"),
    ("stream_options string", "POST", "/v1/chat/completions", body(stream_options="x"), {}, 400,
     "stream_options"),
    ("include_usage string", "POST", "/v1/chat/completions",
     body(stream=True, stream_options={"include_usage": "yes"}), {}, 400,
     "stream_options.include_usage"),
    ("max_tokens 0", "POST", "/v1/chat/completions", body(max_tokens=0), {}, 400, "max_tokens"),
    ("max_tokens -1", "POST", "/v1/chat/completions", body(max_tokens=-1), {}, 400, "max_tokens"),
    ("max_tokens string", "POST", "/v1/chat/completions", body(max_tokens="10"), {}, 400,
     "max_tokens"),
    ("max_tokens float", "POST", "/v1/chat/completions", body(max_tokens=1.5), {}, 400,
     "max_tokens"),
    ("max_tokens bool", "POST", "/v1/chat/completions", body(max_tokens=True), {}, 400,
     "max_tokens"),
    ("max_completion_tokens 0", "POST", "/v1/chat/completions", body(max_completion_tokens=0), {},
     400, "max_completion_tokens"),
    ("n 0", "POST", "/v1/chat/completions", body(n=0), {}, 400, "n"),
    ("n -3", "POST", "/v1/chat/completions", body(n=-3), {}, 400, "n"),
    ("n string", "POST", "/v1/chat/completions", body(n="2"), {}, 400, "n"),
    ("n float", "POST", "/v1/chat/completions", body(n=1.5), {}, 400, "n"),
    ("tools string", "POST", "/v1/chat/completions", body(tools="x"), {}, 400, "tools"),
    ("tools object", "POST", "/v1/chat/completions", body(tools={}), {}, 400, "tools"),
    ("session id too long", "POST", "/v1/chat/completions", body(), {"x-session-id": "s" * 300},
     400, "x-session-id"),
    ("session id latin-1", "POST", "/v1/chat/completions", body(),
     {"x-session-id": "caf\xe9".encode("latin-1")}, 400, "x-session-id"),
    ("too large", "POST", "/v1/chat/completions", b"{" + b" " * 2_000_000 + b"}", {}, 413, None),
    ("GET chat", "GET", "/v1/chat/completions", b"", {}, 405, None),
    ("PUT chat", "PUT", "/v1/chat/completions", body(), {}, 405, None),
    ("unknown path", "POST", "/v1/nothing-here", body(), {}, 404, None),
    ("limit superscript", "GET", "/v1/sessions?limit=%C2%B2", b"", {}, 400, "limit"),
    ("limit negative", "GET", "/v1/sessions?limit=-1", b"", {}, 400, "limit"),
    ("limit word", "GET", "/v1/sessions?limit=ten", b"", {}, 400, "limit"),
    ("limit huge", "GET", "/v1/sessions?limit=99999999999999999999", b"", {}, 400, "limit"),
    ("cursor control chars", "GET", "/v1/sessions?cursor=%01%02", b"", {}, 400, "cursor"),
    ("all without admin", "GET", "/v1/sessions?all=true", b"", {}, 403, None),
    ("unknown session", "GET", "/v1/sessions/nobody", b"", {}, 404, None),
    ("delete unknown session", "DELETE", "/v1/sessions/nobody", b"", {}, 404, None),
    ("responses not json", "POST", "/v1/responses", b"{not json", {}, 400, None),
    ("responses no input", "POST", "/v1/responses", b'{"model": "auto"}', {}, 400, "input"),
    ("responses input object", "POST", "/v1/responses", b'{"input": {"a": 1}}', {}, 400,
     "input"),
    ("responses item string", "POST", "/v1/responses", b'{"input": ["x"]}', {}, 400, "input[0]"),
    ("responses content number", "POST", "/v1/responses",
     b'{"input": [{"role": "user", "content": 5}]}', {}, 400, "input[0].content"),
    ("responses max_output_tokens", "POST", "/v1/responses",
     b'{"input": "x", "max_output_tokens": -1}', {}, 400, "max_output_tokens"),
    ("responses previous id object", "POST", "/v1/responses",
     b'{"input": "x", "previous_response_id": {}}', {}, 400, "previous_response_id"),
    ("responses previous id too long", "POST", "/v1/responses",
     b'{"input": "x", "previous_response_id": "' + b"r" * 300 + b'"}', {}, 400,
     "previous_response_id"),
    ("responses previous id blank", "POST", "/v1/responses",
     b'{"input": "x", "previous_response_id": "  "}', {}, 400, "previous_response_id"),
    ("responses previous id empty", "POST", "/v1/responses",
     b'{"input": "x", "previous_response_id": ""}', {}, 400, "previous_response_id"),
    ("responses conversation blank", "POST", "/v1/responses",
     b'{"input": "x", "conversation": {"id": ""}}', {}, 400, "conversation.id"),
    ("responses model newline", "POST", "/v1/responses", b'{"model": "a\\nb", "input": "x"}',
     {}, 400, "model"),
    ("responses reasoning summary number", "POST", "/v1/responses",
     b'{"input": [{"type": "reasoning", "summary": 5}]}', {}, 400, "input[0].summary"),
    ("responses reasoning summary string", "POST", "/v1/responses",
     b'{"input": [{"type": "reasoning", "summary": "x"}]}', {}, 400, "input[0].summary"),
    ("responses reasoning summary object", "POST", "/v1/responses",
     b'{"input": [{"type": "reasoning", "summary": {"text": "x"}}]}', {}, 400,
     "input[0].summary"),
    ("GET responses", "GET", "/v1/responses", b"", {}, 405, None),
    ("retrieve unknown response", "GET", "/v1/responses/resp_nobody", b"", {}, 404, None),
    ("delete unknown response", "DELETE", "/v1/responses/resp_nobody", b"", {}, 404, None),
]  # fmt: skip


@pytest.fixture(params=["memory", "redis"], scope="module")
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # module-scoped: on Redis, the run's server, not flushed between cases
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_server").url
    with gateway_with_standin(store_url=url, max_body_bytes=1_500_000) as running:
        with running.http() as http:
            http.post("/v1/chat/completions", content=body(), headers=VICTIM).raise_for_status()
        yield running, url


def _state(running: Running, url: str) -> tuple[int, Any]:
    if url == "memory://":
        store = running.gateway.store._sync  # type: ignore[attr-defined]
        return store.get_stats().count, store.get_session("victim")
    sync = RedisSessionStore(url, Config(cleanup_interval_ms=0))
    try:
        return sync.get_stats().count, sync.get_session("victim")
    finally:
        sync.close()


def test_there_are_at_least_60_cases() -> None:
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_malformed_request_is_refused_and_changes_nothing(
    gw: tuple[Running, str], case: Case
) -> None:
    running, url = gw
    _, method, path, content, headers, status, param = case
    before = _state(running, url)
    forwarded = len(running.standin.received)
    with running.http() as http:
        reply = http.request(
            method,
            path,
            content=content,
            headers={"content-type": "application/json", **VICTIM, **headers},
        )
    assert reply.status_code == status, reply.text[:300]
    error = reply.json()["error"]
    assert isinstance(error["message"], str)
    assert error["message"]
    assert len(error["message"]) < 2000  # never the whole offending value echoed back
    assert error["type"]
    if param is not None:
        assert error["param"] == param, error
    assert _state(running, url) == before
    assert len(running.standin.received) == forwarded
    # and the session still works afterwards
    with running.http() as http:
        ok = http.post("/v1/chat/completions", content=body(), headers=VICTIM)
        assert ok.status_code == 200
        assert ok.headers["x-session-id"] == "victim"


def test_a_pinned_session_is_never_poisoned_by_a_bad_model(gw: tuple[Running, str]) -> None:
    running, _ = gw
    with running.http() as http:
        for bad in ("x\ny", "é", "m" * 300):
            assert (
                http.post(
                    "/v1/chat/completions", content=body(model=bad), headers={"x-session-id": "p"}
                ).status_code
                == 400
            )
        for stream in (False, True):
            reply = http.post(
                "/v1/chat/completions",
                content=body(stream=stream),
                headers={"x-session-id": "p"},
            )
            assert reply.status_code == 200
        session = http.get("/v1/sessions/p").json()
    assert session["reserved_micros"] == 0
    assert session["model"] == "openai/s1"


@pytest.mark.parametrize("value", [b"a\x00b", b"a\x7fb", b"a\x01b"])
def test_control_characters_in_a_header_are_refused_before_the_app(
    gw: tuple[Running, str], value: bytes
) -> None:
    """uvicorn answers these with a plain-text 400 before the app runs (the one refusal
    that is not JSON; clients such as httpx won't even send them); nothing is stored or
    forwarded."""
    running, url = gw
    before = _state(running, url)
    forwarded = len(running.standin.received)
    host, port = running.url.removeprefix("http://").split(":")
    content = body()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"x-session-id: " + value + b"\r\ncontent-length: %d\r\n\r\n" % len(content) + content
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400")
    assert _state(running, url) == before
    assert len(running.standin.received) == forwarded


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab1'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=3),
    max_leaves=40,
)  # fmt: skip


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


@given(value=JSON_VALUES, wrap=st.integers(0, 6), limit=st.integers(1, 10))
def test_the_nesting_check_reads_the_bytes_as_the_parser_does(
    value: Any, wrap: int, limit: int
) -> None:
    """The byte-level check (strings cut out, innermost pairs peeled a level a pass) says
    exactly what a walk of the parsed value says, brackets inside strings included."""
    from llm_sessions.server.parsing import _STRING, _deeper_than

    for _ in range(wrap):
        value = [value] if wrap % 2 else {"k": value}
    raw = json.dumps({"v": value}).encode()
    assert _deeper_than(_STRING.sub(b'""', raw), limit) == (depth_of({"v": value}) > limit)
