"""The operator console: a page (``GET /ui``, its assets under ``/ui/``) and what it reads.

- ``GET /v1/console/info``: who the key is (a tenant or an admin), whether the gateway
  is open to anyone (no ``--api-keys``), the cap;
- ``GET /v1/console/sessions``: the caller's live sessions (``?all=true``: every
  tenant's, admin keys only), each with a summary of its event log;
- ``GET /v1/console/overview``: the last hour, minute by minute (`Overview`);
- ``GET /v1/console/stream``: server-sent events: each turn as it is logged on this
  gateway (``turn``), and every `REFRESH_S` the sessions and the overview again
  (``sessions``, ``overview``: what other replicas did, what expired).

Keys travel in headers only: the page reads the stream with ``fetch`` (which carries
them), not ``EventSource`` (which can't), so no key or token is ever put in a URL.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from ..errors import StoreUnavailable
from ..records import SessionRow
from .rejections import Reject, rejection

if TYPE_CHECKING:
    from .gateway import Gateway

__all__ = [
    "ConsoleHub",
    "Overview",
    "asset",
    "end_streams",
    "home",
    "info",
    "overview",
    "sessions",
    "stream",
]

MINUTES = 60  # the overview's window
MAX_SCOPES = 10_000  # tenants whose last hour the overview keeps (least recent dropped)
REFRESH_S = 10.0  # the stream sends the sessions and the overview again this often
STREAM_S = 600.0  # a stream ends after this long (the page reconnects: its key checked again)
QUEUE = 1_000  # turns a slow stream may fall behind by before it is sent a full refresh
_NEAR_CAP = 0.8
_ASSETS = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "index.html": "text/html; charset=utf-8",
}
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_RESYNC = object()  # the stream fell behind, or its refresh is due: send everything again
_END = object()  # the server is shutting down: end the stream


@dataclass(slots=True)
class Minute:
    """What one minute of one tenant's turns added up to."""

    at: int  # the minute (unix seconds // 60)
    reasons: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    spend_micros: int = 0
    savings_micros: int = 0
    fallbacks: int = 0
    refusals: int = 0
    failures: int = 0

    def add(self, other: Minute) -> None:
        self.reasons.update(other.reasons)
        self.models.update(other.models)
        self.spend_micros += other.spend_micros
        self.savings_micros += other.savings_micros
        self.fallbacks += other.fallbacks
        self.refusals += other.refusals
        self.failures += other.failures


class Overview:
    """The last `MINUTES` of each tenant's turns, minute by minute, from the turns this
    gateway logged (as its Prometheus counters count them: per process)."""

    def __init__(self) -> None:
        self._scopes: OrderedDict[str, deque[Minute]] = OrderedDict()

    def add(self, scope: str, event: dict[str, Any], now_s: float) -> None:
        minute = int(now_s // 60)
        minutes = self._scopes.get(scope)
        if minutes is None:
            minutes = self._scopes[scope] = deque(maxlen=MINUTES)
            if len(self._scopes) > MAX_SCOPES:
                self._scopes.popitem(last=False)
        else:
            self._scopes.move_to_end(scope)
        if not minutes or minutes[-1].at != minute:
            minutes.append(Minute(minute))
        at = minutes[-1]
        reason = str(event.get("reason", ""))
        at.reasons[reason] += 1
        if event.get("outcome") == "served":
            at.models[str(event.get("model", ""))] += 1
        at.spend_micros += _int(event.get("cost_micros"))
        at.savings_micros += _int(event.get("cache_savings_micros"))
        at.fallbacks += reason == "fallback"
        at.refusals += event.get("outcome") == "refused"
        at.failures += event.get("outcome") == "failed"

    def series(self, scope: str | None, now_s: float) -> dict[str, Any]:
        """The last hour of `scope` (every tenant's with None): one entry per minute,
        oldest first, and the hour's totals."""
        last = int(now_s // 60)
        first = last - MINUTES + 1
        by_minute = {m: Minute(m) for m in range(first, last + 1)}
        chosen = self._scopes.values() if scope is None else [self._scopes.get(scope, deque())]
        for minutes in chosen:
            for minute in minutes:
                if minute.at >= first:
                    by_minute[minute.at].add(minute)
        total = Minute(last)
        for minute in by_minute.values():
            total.add(minute)
        return {
            "minutes": [_minute_dict(m) for m in by_minute.values()],
            "total": _minute_dict(total),
        }


def _minute_dict(minute: Minute) -> dict[str, Any]:
    return {
        "at": minute.at * 60_000,
        "requests": sum(minute.reasons.values()),
        "reasons": dict(minute.reasons),
        "models": dict(minute.models),
        "spend_micros": minute.spend_micros,
        "savings_micros": minute.savings_micros,
        "fallbacks": minute.fallbacks,
        "refusals": minute.refusals,
        "failures": minute.failures,
    }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class _Subscription:
    def __init__(self, scope: str | None) -> None:
        self.scope = scope  # None: every tenant's turns (an admin's stream)
        self.queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE)

    def put(self, item: Any) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:  # too slow a reader: it gets everything afresh instead
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(_RESYNC)


class ConsoleHub:
    """The turns this gateway logs, handed to the streams watching them and counted in
    the overview (`SessionPolicy.on_event` calls `turn`, on the event loop)."""

    def __init__(self) -> None:
        self.overview = Overview()
        self._subscriptions: set[_Subscription] = set()
        _HUBS.add(self)

    def turn(self, scope: str, session_id: str, event: dict[str, Any]) -> None:
        self.overview.add(scope, event, time.time())
        if not self._subscriptions:
            return
        for sub in self._subscriptions:
            if sub.scope is None or sub.scope == scope:
                item = {"id": session_id, "event": event}
                if sub.scope is None:
                    item["tenant"] = scope
                sub.put(item)

    @property
    def watched(self) -> bool:
        """A console is watching (a live stream is open)."""
        return bool(self._subscriptions)

    def subscribe(self, scope: str | None) -> _Subscription:
        sub = _Subscription(scope)
        self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: _Subscription) -> None:
        self._subscriptions.discard(sub)

    def end_streams(self) -> None:
        for sub in self._subscriptions:
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.queue.put_nowait(_END)


_HUBS: weakref.WeakSet[ConsoleHub] = weakref.WeakSet()


def end_streams() -> None:
    """End every console stream of this process: its server is shutting down, and a
    stream, which never ends by itself, would hold the shutdown up (the page reconnects,
    to another replica or to this one once it is back)."""
    for hub in list(_HUBS):
        hub.end_streams()


# -- the page -----------------------------------------------------------------------------


async def home(gateway: Gateway, request: Request) -> Response:
    """``GET /``: the console."""
    return RedirectResponse("/ui", 307)


async def asset(gateway: Gateway, request: Request) -> Response:
    """``GET /ui`` (the page) and ``GET /ui/{name}`` (its script and style sheet)."""
    name = request.path_params.get("name", "index.html")
    media = _ASSETS.get(name)
    if media is None:
        return rejection(Reject(404, f"the console has no {name[:64]!r}", "not_found_error"))
    body = resources.files(__package__).joinpath("ui").joinpath(name).read_bytes()
    return Response(body, media_type=media, headers=_HEADERS)


# -- what the page reads ------------------------------------------------------------------


def _audience(gateway: Gateway, request: Request) -> tuple[str, bool]:
    """The caller's scope, and whether it asked for every tenant's (an admin key only)."""
    scope = gateway.authorize(request)
    everyone = request.query_params.get("all", "false").lower() in ("1", "true")
    if everyone and not gateway.is_admin(request):
        raise Reject(
            403, "every tenant's sessions need an admin key",
            "permission_error", code="admin_key_required",
        )  # fmt: skip
    return scope, everyone


async def info(gateway: Gateway, request: Request) -> Response:
    """``GET /v1/console/info``: what the page needs to know about its key."""
    try:
        scope = gateway.authorize(request)
    except Reject as reject:
        return rejection(reject)
    settings = gateway.settings
    return JSONResponse(
        {
            "open": gateway.api_keys is None,
            "admin": gateway.is_admin(request),
            "tenant": scope,
            "cap_micros": gateway.policy.cap_micros,
            "events_kept": settings.sessions.events_kept,
            "timeout_ms": settings.sessions.timeout_ms,
            "refresh_s": REFRESH_S,
        }
    )


async def sessions(gateway: Gateway, request: Request) -> Response:
    """``GET /v1/console/sessions``: the caller's live sessions with their summaries."""
    try:
        scope, everyone = _audience(gateway, request)
        rows = await _rows(gateway, None if everyone else scope)
    except Reject as reject:
        return rejection(reject)
    return JSONResponse({"sessions": rows})


async def overview(gateway: Gateway, request: Request) -> Response:
    """``GET /v1/console/overview``: the caller's last hour (every tenant's: ``?all``)."""
    try:
        scope, everyone = _audience(gateway, request)
    except Reject as reject:
        return rejection(reject)
    return JSONResponse(gateway.console.overview.series(None if everyone else scope, time.time()))


async def stream(gateway: Gateway, request: Request) -> Response:
    """``GET /v1/console/stream``: server-sent events (see the module's doc)."""
    try:
        scope, everyone = _audience(gateway, request)
    except Reject as reject:
        return rejection(reject)
    watched = None if everyone else scope
    hub = gateway.console

    async def refresh() -> str:
        try:
            rows = await _rows(gateway, watched)
        except Reject:  # the store is down: the page keeps what it has
            rows = None
        data = "" if rows is None else _sse("sessions", {"sessions": rows})
        return data + _sse("overview", hub.overview.series(watched, time.time()))

    async def events() -> AsyncIterator[str]:
        sub = hub.subscribe(watched)
        try:
            yield "retry: 2000\n\n" + await refresh()
            ends, due = time.monotonic() + STREAM_S, time.monotonic() + REFRESH_S
            while time.monotonic() < ends:
                try:
                    item = await asyncio.wait_for(sub.queue.get(), max(due - time.monotonic(), 0))
                except asyncio.TimeoutError:
                    item = _RESYNC
                if item is _END:
                    return
                if item is _RESYNC:
                    yield await refresh()
                    due = time.monotonic() + REFRESH_S
                else:
                    yield _sse("turn", item)
        finally:
            hub.unsubscribe(sub)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _sse(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _rows(gateway: Gateway, scope: str | None) -> list[dict[str, Any]]:
    """The live sessions of `scope` (every tenant's with None), the first
    ``server.stats_limit`` of them, each with a summary of its event log."""
    store, policy = gateway.store, gateway.policy
    try:
        page = await store.list_sessions(scope, limit=max(gateway.settings.stats_limit, 1))
        logs = await asyncio.gather(*(policy.aevents(row.id, row.scope) for row in page.sessions))
    except StoreUnavailable:
        raise Reject(503, "the session store is unavailable", "server_error") from None
    return [
        _row(row, events, policy.cap_micros, scope is None)
        for row, events in zip(page.sessions, logs, strict=True)
    ]


def _row(
    row: SessionRow, events: list[dict[str, Any]], cap: int | None, tenant: bool
) -> dict[str, Any]:
    """A session as the sessions view shows it: its record and its log's summary."""
    last = events[-1] if events else {}
    cached = sum(_int(e.get("cache_read_tokens")) for e in events)
    prompt = cached + sum(
        _int(e.get("input_tokens")) + _int(e.get("cache_write_tokens")) for e in events
    )
    out: dict[str, Any] = {
        "id": row.id,
        "model": row.model,
        "tier": None if row.tier is None else row.tier.value,
        "requests": row.request_count,
        "strikes": row.strikes,
        "last_used_at": row.last_used_at,
        "cost_micros": row.cost_micros,
        "cap_micros": cap,
        "near_cap": cap is not None and cap > 0 and row.cost_micros >= cap * _NEAR_CAP,
        "api": last.get("api"),
        "agent": last.get("agent"),
        "source": last.get("source"),
        "reason": last.get("reason"),
        "cache_read_share": round(cached / prompt, 4) if prompt else None,
        "cache_savings_micros": sum(_int(e.get("cache_savings_micros")) for e in events),
    }
    if tenant:
        out["tenant"] = row.scope
    return out
