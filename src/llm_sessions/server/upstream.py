"""Talking to the upstream: attempts along the fallback chain, and relaying a stream.

One `aiohttp.ClientSession` per upstream (pooled keep-alive connections, timeouts)
serves every request; the body is encoded once, here. `Upstream.attempt` opens one
attempt and classifies its outcome before a byte reaches the client; `RelayResponse`
passes a stream through chunk by chunk, watches for the client going away, and reports
what was generated exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import json
import logging
import re
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from yarl import URL

from ..protocols.chat import Verdict, stream_reader
from .settings import UpstreamSettings

__all__ = [
    "Attempt",
    "RelayResponse",
    "StreamMeter",
    "Upstream",
    "UpstreamBroke",
    "UpstreamResponse",
    "read_json",
]

log = logging.getLogger("llm_sessions.gateway")

# Upstream refusals that no other model will fix: don't walk the fallback chain for them.
_TERMINAL_CODES = ("insufficient_quota", "budget_exceeded", "billing_hard_limit_reached")
# What a broken connection, a timeout or a cut payload raises while reading.
_BROKEN = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class UpstreamBroke(Exception):
    """The upstream's answer broke off while it was being read (connection, timeout)."""


class UpstreamResponse:
    """An upstream answer whose headers have arrived; its body is read, or streamed, once."""

    def __init__(self, raw: aiohttp.ClientResponse) -> None:
        self._raw = raw
        self._body: bytes | None = None
        self.status_code = raw.status
        self.headers: CIMultiDictProxy[str] = raw.headers

    async def aread(self) -> bytes:
        """The whole body (read once; again, the same bytes)."""
        if self._body is None:
            try:
                self._body = await self._raw.read()
            except _BROKEN as exc:
                raise UpstreamBroke(f"{type(exc).__name__}: {exc}") from exc
        return self._body

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive."""
        try:
            async for chunk in self._raw.content.iter_any():
                yield chunk
        except _BROKEN as exc:
            raise UpstreamBroke(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        """Give the connection back (a body not read to its end closes it)."""
        self._raw.release()

    def abort(self) -> None:
        """Close the connection now: a read waiting on it stops (`UpstreamBroke`)."""
        self._raw.close()


@dataclass
class Attempt:
    """One upstream attempt: `response` (still open) when it should be passed on to the
    client, else `failure` says why the next model should be tried."""

    model: str
    response: UpstreamResponse | None = None
    failure: str = ""  # "connect error", "timeout", "HTTP 503"...
    error_kind: str = ""  # metrics label: "connect", "timeout" or the status code
    terminal: bool = False  # a refusal that ends the request (quota, budget)


class Upstream:
    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        headers = {"accept-encoding": "identity"}  # relay bytes as they are; parse them too
        key = None if settings.forward_client_key else settings.api_key
        if key and settings.auth == "x-api-key":
            headers["x-api-key"] = key
        elif key:
            headers["authorization"] = f"Bearer {key}"
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout_s, sock_read=settings.timeout_s
        )
        self._session: aiohttp.ClientSession | None = None  # made in the serving event loop
        self._fresh: aiohttp.ClientSession | None = None  # for retries: no pooled connection
        self.max_attempts = settings.max_attempts
        self._base = settings.base_url.rstrip("/")
        self._urls: dict[str, URL] = {}
        # HTTP(S)_PROXY / NO_PROXY, read once: looking them up per request (aiohttp's
        # trust_env) costs more than the rest of the client together
        self._proxy = _proxy_for(self._base)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pool of keep-alive connections every request goes out on first."""
        if self._session is None:
            self._session = self._client_session(force_close=False)
        return self._session

    def _client_session(self, force_close: bool) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.settings.max_connections, limit_per_host=0, force_close=force_close
        )
        return aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=self._timeout,
            auto_decompress=False,
        )

    async def aclose(self) -> None:
        for session in (self._session, self._fresh):
            if session is not None:
                await session.close()
        self._session = self._fresh = None

    def url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self._base + path)
        return url

    async def send(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        query: str = "",
    ) -> UpstreamResponse:
        """One request, open once its headers arrived; `aiohttp.ClientError` or
        `TimeoutError` when it could not be made.

        A pooled connection that the upstream closed as the request went out on it, before
        a byte came back (its keep-alive timeout ran out at that moment: the keep-alive
        race), gets the request once more, on a connection of its own: the upstream never
        read it, and another pooled connection may be just as stale."""
        url = self.url(path)
        if query:
            url = url.with_query(query)
        try:
            raw = await self.session.request(
                method, url, data=_payload(body), headers=headers, proxy=self._proxy
            )
        except aiohttp.ClientError as exc:
            if not _closed_unanswered(exc):
                raise
            if self._fresh is None:
                self._fresh = self._client_session(force_close=True)
            raw = await self._fresh.request(
                method, url, data=_payload(body), headers=headers, proxy=self._proxy
            )
        return UpstreamResponse(raw)

    def refuses_our_key(self, status: int) -> bool:
        """A 401 or 403 to the operator's key (not a caller's own): its body may name that
        key (OpenAI's says ``Incorrect API key provided: sk-proj-****WXYZ``), so it goes
        to the gateway's log, never to a tenant."""
        return status in (401, 403) and not self.settings.forward_client_key

    def log_refusal(self, asked: str, status: int, body: bytes) -> None:
        """The whole refusal, on the gateway's side; `asked` names the model or path."""
        log.warning(
            "%s refused the gateway's key (HTTP %d, %s): %s",
            self.settings.name, status, asked, body[:2000].decode(errors="replace"),
        )  # fmt: skip

    async def attempt(
        self,
        model: str,
        payload: dict[str, Any],
        path: str = "/chat/completions",
        headers: dict[str, str] | None = None,
    ) -> Attempt:
        """Send one request; return it open when it should reach the client."""
        try:
            body = orjson.dumps(payload)
        except orjson.JSONEncodeError:  # an integer past 64 bits: the standard library
            body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        sent = {"content-type": "application/json", **(headers or {})}
        try:
            response = await self.send("POST", path, sent, body)
        except asyncio.TimeoutError:
            return Attempt(model, failure="timeout", error_kind="timeout")
        except (aiohttp.ClientError, OSError) as exc:
            kind = type(exc).__name__
            # the whole error stays on the gateway's side (it may name the upstream's address)
            log.warning("%s: the request to %s failed: %r", self.settings.name, model, exc)
            return Attempt(model, failure=f"connect error ({kind})", error_kind="connect")
        status = response.status_code  # (529: Anthropic's overloaded_error, a 5xx too)
        if self.refuses_our_key(status):  # the next model may be on an upstream that won't
            self.log_refusal(model, status, await _read_quietly(response))
            failure = f"HTTP {status}: the upstream refused the gateway's key"
            return Attempt(model, failure=failure, error_kind=str(status))
        if status == 429 or status >= 500 or status == 402:
            content = await _read_quietly(response)
            terminal = status == 402 or _error_code(content) in _TERMINAL_CODES
            if terminal:  # passed on as it is: the client must see the refusal
                return Attempt(model, response=response, terminal=True, error_kind=str(status))
            return Attempt(model, failure=f"HTTP {status}", error_kind=str(status))
        return Attempt(model, response=response)


# Past this many bytes aiohttp warns (ResourceWarning) about a body handed to it whole;
# a file-like one it writes in pieces.
_LARGE_BODY = 1 << 20


def _payload(body: bytes | None) -> bytes | io.BytesIO | None:
    """`body` as aiohttp should get it: bytes, or a fresh stream over a large one."""
    return io.BytesIO(body) if body is not None and len(body) > _LARGE_BODY else body


def _closed_unanswered(exc: aiohttp.ClientError) -> bool:
    """Whether the upstream closed an open connection before answering: it disconnected,
    or reset the connection, while the request was written or its answer awaited (not a
    connection that could not be made, nor an answer broken off once it began). A reset
    met while the body is written comes as aiohttp's "Can not write request body", the
    reset as its cause (without an errno when the transport was already closing)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return False
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return True
    for error in (exc, exc.__cause__):
        if isinstance(error, (ConnectionResetError, BrokenPipeError)):
            return True
        if isinstance(error, OSError) and error.errno in (errno.ECONNRESET, errno.EPIPE):
            return True
    return False


def read_json(raw: bytes) -> Any:
    """JSON an upstream sent, read for what the gateway needs from it (usage, ids): orjson,
    else the standard library (NaN, Infinity); `ValueError` when neither reads it."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def _proxy_for(base_url: str) -> str | None:
    """The proxy the environment names for `base_url` (HTTP(S)_PROXY, NO_PROXY), if any."""
    url = URL(base_url)
    if url.host is None or urllib.request.proxy_bypass(url.host):
        return None
    return urllib.request.getproxies().get(url.scheme)


async def _read_quietly(response: UpstreamResponse) -> bytes:
    try:
        return await response.aread()
    except UpstreamBroke:
        return b""
    finally:
        await response.aclose()


def _error_code(body: bytes) -> str:
    try:
        error = read_json(body).get("error") or {}
    except (ValueError, AttributeError):
        return ""
    if not isinstance(error, dict):
        return ""
    for key in ("code", "type"):
        value = error.get(key)
        if isinstance(value, str) and value in _TERMINAL_CODES:
            return value
    return ""


_EVENT_END = re.compile(rb"\r?\n\r?\n")


@dataclass
class StreamMeter:
    """Watches an event stream go by, one whole event at a time: the protocol's `reader`
    keeps its usage and counts generated bytes (to estimate the cost when no usage
    comes), notes the id of a stored answer, and says what to do with each event. `feed`
    returns what to pass on now; an event held back (the stream's last: ``data: [DONE]``,
    ``message_stop``, ``response.completed``) waits in `held` until the relay has recorded
    the cost.

    `unread` (by the name on an event's ``event:`` line) spares the parsing of what the
    gateway needs nothing from (``"pass"``) and of the deltas of generated text
    (``"defer"``: kept, and read by `generated_bytes` only when no usage came); with
    `read_marker` (a JSON key, quoted), an event without a name is deferred unless that key
    has an object in its data (Chat Completions: only such a chunk carries usage; the
    others say ``"usage": null`` or nothing)."""

    reader: Callable[[StreamMeter, dict[str, Any]], Verdict] = field(
        default_factory=lambda: stream_reader(keep_usage=True)
    )
    unread: Mapping[bytes, str] = field(default_factory=dict)
    read_marker: bytes | None = None
    usage: dict[str, Any] | None = None
    text_bytes: int = 0
    answer_id: str | None = None  # the id of a stored answer (a Responses response)
    answer_items: list[str] = field(default_factory=list)  # the ids of its output items
    held: bytes = b""
    deferred: list[bytes] = field(default_factory=list)
    _pending: bytes = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk if self._pending else chunk
        events = _EVENT_END.split(data) if b"\r" in data else data.split(b"\n\n")
        self._pending = events.pop()
        out: list[bytes] = []
        passed = 0
        for event in events:
            verdict = self._verdict(event)
            if verdict == "pass":
                out += (event, b"\n\n")
                passed += 1
            elif verdict == "hold":
                self.held = event + b"\n\n"
        if passed == len(events) and b"\r" not in data:  # all of it, as it came
            return data[: len(data) - len(self._pending)]
        return b"".join(out)

    def rest(self) -> bytes:
        """What is left of a stream that ended without a final blank line."""
        rest, self._pending = self._pending, b""
        return rest if rest.strip() and self._verdict(rest) == "pass" else b""

    def generated_bytes(self) -> int:
        """UTF-8 bytes of generated text, the deferred deltas read now."""
        deferred, self.deferred = self.deferred, []
        for payload in deferred:
            self._read(payload)
        return self.text_bytes

    def _verdict(self, event: bytes) -> Verdict:
        if self.unread and event.startswith(b"event:"):  # "event: NAME\ndata: {...}"
            end = event.find(b"\n")
            unread = self.unread.get(event[6:end].strip()) if end > 0 else None
            if unread == "pass":
                return "pass"
            one_data_line = event.startswith(b"data:", end + 1) and event.find(b"\n", end + 1) < 0
            if unread == "defer" and one_data_line:
                self.deferred.append(event[end + 6 :].strip())
                return "pass"
        if event.startswith(b"data:") and event.find(b"\n") < 0:  # "data: {...}" alone
            name, payload = b"", event[5:].strip()
        else:
            name, lines = b"", []
            for line in event.splitlines():
                if line.startswith(b"data:"):
                    lines.append(line[5:].strip())
                elif line.startswith(b"event:"):
                    name = line[6:].strip()
            payload = b"\n".join(lines)
        if not payload:
            return "pass"
        if payload == b"[DONE]":
            return "hold"
        if name:
            unread = self.unread.get(name)
        elif self.read_marker is not None and not _holds_object(payload, self.read_marker):
            unread = "defer"
        else:
            unread = None
        if unread == "defer":
            self.deferred.append(payload)
            return "pass"
        if unread == "pass":
            return "pass"
        return self._read(payload)

    def _read(self, payload: bytes) -> Verdict:
        try:
            data = read_json(payload)
        except ValueError:
            return "pass"
        return self.reader(self, data) if isinstance(data, dict) else "pass"


def _holds_object(payload: bytes, key: bytes) -> bool:
    """Whether the JSON `payload` has the (quoted) `key` with an object as its value, read
    from the bytes: a key in a string has its quotes escaped, so it never matches."""
    at = payload.find(key)
    while at >= 0:
        after = payload[at + len(key) : at + len(key) + 32].lstrip()
        if after.startswith(b":") and after[1:].lstrip().startswith(b"{"):
            return True
        at = payload.find(key, at + 1)
    return False


class RelayResponse(Response):
    """Streams an open upstream response to the client event by event, as it arrives.

    The client going away closes the upstream connection (a task waits for it). Whatever
    happens — the stream ends, the upstream breaks, the client leaves —
    `on_done(meter, complete)` is called exactly once, shielded from cancellation, after
    the upstream connection is closed;
    only then does a complete stream's ``data: [DONE]`` reach the client, so a client that
    asks right after it sees the cost recorded.
    """

    def __init__(
        self,
        upstream: UpstreamResponse,
        on_done: Callable[[StreamMeter, bool], Awaitable[None]],
        headers: dict[str, str],
        meter: StreamMeter,
        translator: Any = None,
    ) -> None:
        self.upstream = upstream
        self.on_done = on_done
        self.meter = meter
        self.translator = translator  # the upstream's events into the client's API
        self.status_code = upstream.status_code
        self.background = None
        self.media_type = (
            upstream.headers.get("content-type", "text/event-stream")
            if translator is None
            else "text/event-stream"
        )
        self.init_headers({"cache-control": "no-cache", **headers})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        meter, upstream = self.meter, self.upstream
        left = False

        async def watch_for_disconnect() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            left = True
            upstream.abort()  # the client left: the relay below stops at once

        watcher = asyncio.ensure_future(watch_for_disconnect())
        complete = False
        try:
            start = {"type": "http.response.start", "status": self.status_code,
                     "headers": self.raw_headers}  # fmt: skip
            await send(start)
            translate = self.translator.feed if self.translator is not None else None
            async for chunk in upstream.aiter_raw():
                out = meter.feed(chunk)
                if out and translate is not None:
                    out = translate(out)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            rest = meter.rest()
            if rest and translate is not None:
                rest = translate(rest)
            if rest:
                await send({"type": "http.response.body", "body": rest, "more_body": True})
            complete = not left
        except (OSError, UpstreamBroke):
            pass  # the client's socket or the upstream broke: bill what was streamed
        finally:
            watcher.cancel()
            await _shielded(self._close(complete))
        if complete:  # the cost is recorded: now the stream may end
            held = meter.held if self.translator is None else self.translator.end(meter.held)
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": held, "more_body": False})

    async def _close(self, complete: bool) -> None:
        await self.upstream.aclose()
        await self.on_done(self.meter, complete)


async def _shielded(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` to its end even if this task is cancelled meanwhile (then re-raise)."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError
