"""The operator's endpoints: the caller's sessions (``GET /v1/sessions``, ``GET|DELETE
/v1/sessions/{id}``, ``GET /v1/sessions/{id}/events``; every tenant's with an admin key),
``/health`` and ``/metrics``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import StoreUnavailable
from ..records import format_usd
from .metrics import CONTENT_TYPE_LATEST
from .rejections import Reject, rejection

if TYPE_CHECKING:
    from .gateway import Gateway

__all__ = ["health", "metrics", "session", "session_events", "session_scope", "sessions"]

_STORE_DOWN = Reject(503, "the session store is unavailable", "server_error")
_BAD_CURSOR = "'cursor' is not one this gateway returned"


async def sessions(gateway: Gateway, request: Request) -> Response:
    """One page of the caller's own sessions: ``?limit=&cursor=``; ``?all=true`` lists
    every tenant's, for an admin key only."""
    params = request.query_params
    try:
        scope = gateway.authorize(request)
        raw = params.get("limit", str(gateway.settings.stats_limit))
        if not (raw.isascii() and raw.isdecimal() and 0 < len(raw) <= 9):
            raise Reject(400, "'limit' must be a positive integer", param="limit")
        cursor = params.get("cursor", "")
        if len(cursor) > 1024 or not cursor.isascii() or not cursor.isprintable():
            raise Reject(400, _BAD_CURSOR, param="cursor")
        everyone = params.get("all", "false").lower() in ("1", "true")
        if everyone and not gateway.is_admin(request):
            raise Reject(
                403, "listing every tenant's sessions needs an admin key",
                "permission_error", code="admin_key_required",
            )  # fmt: skip
        limit = min(int(raw), gateway.settings.stats_limit)
        if limit == 0:
            return JSONResponse({"sessions": [], "next_cursor": None})
        try:
            page = await gateway.store.list_sessions(
                None if everyone else scope, limit=limit, cursor=cursor
            )
        except ValueError:
            raise Reject(400, _BAD_CURSOR, param="cursor") from None
        except StoreUnavailable:
            raise _STORE_DOWN from None
    except Reject as reject:
        return rejection(reject)
    body = page.to_dict()
    if everyone:
        for row, shown in zip(page.sessions, body["sessions"], strict=True):
            shown["scope"] = row.scope[:8]
    return JSONResponse(body)


def session_scope(gateway: Gateway, request: Request) -> str:
    """The scope of the session a request names: the caller's own, or with an admin key
    the tenant's that ``?tenant=`` names (a scope, as the console's rows show it)."""
    scope = gateway.authorize(request)
    tenant = request.query_params.get("tenant")
    if tenant is None:
        return scope
    if not gateway.is_admin(request):
        raise Reject(
            403, "another tenant's session needs an admin key",
            "permission_error", code="admin_key_required",
        )  # fmt: skip
    if len(tenant) > 64 or not all(c in "0123456789abcdef" for c in tenant):
        raise Reject(400, "'tenant' must be a scope as the console lists it", param="tenant")
    return tenant


async def session(gateway: Gateway, request: Request) -> Response:
    """``GET /v1/sessions/{id}``: one of the caller's sessions; ``DELETE`` ends it."""
    session_id = request.path_params["session_id"]
    try:
        key = gateway.policy.session_key(session_id, session_scope(gateway, request))
        try:
            entry = await gateway.store.get_session(key)
            if entry is None:
                raise Reject(404, f"no session {session_id!r} for this caller", "not_found_error")
            if request.method == "DELETE":
                await gateway.store.clear_session(key)
                return JSONResponse({"id": session_id, "deleted": True})
            sticky = await gateway.store.is_cache_sticky(key)
        except StoreUnavailable:
            raise _STORE_DOWN from None
    except Reject as reject:
        return rejection(reject)
    return JSONResponse(
        {
            "id": session_id,
            **entry.to_dict(),
            "cache_sticky_active": sticky,
            "reserved_micros": entry.reserved_micros,
            "explicit_model": entry.explicit_model or None,
            "fallback_from": entry.flow.fallback_from or None,
            "session_cost_usd": format_usd(entry.session_cost_micros),
        }
    )


async def session_events(gateway: Gateway, request: Request) -> Response:
    """``GET /v1/sessions/{id}/events``: the turns of one of the caller's sessions, as
    its event log keeps them (the newest ``sessions.events_kept``), oldest first."""
    session_id = request.path_params["session_id"]
    try:
        scope = session_scope(gateway, request)
        key = gateway.policy.session_key(session_id, scope)
        try:
            if await gateway.store.get_session(key) is None:
                raise Reject(404, f"no session {session_id!r} for this caller", "not_found_error")
            events = await gateway.policy.aevents(session_id, scope)
        except StoreUnavailable:
            raise _STORE_DOWN from None
    except Reject as reject:
        return rejection(reject)
    return JSONResponse({"id": session_id, "events": events})


async def health(gateway: Gateway, request: Request) -> Response:
    """The store's reachability and what an outage means here: ``"degraded"`` (200)
    while requests are still served without it, ``"unavailable"`` (503) while they
    are refused (``store.on_error = "raise"``, or a cap with ``"refuse"``)."""
    settings, cap = gateway.settings, gateway.policy.cap_micros
    modes = {
        "store_on_error": settings.store_on_error,
        "budget": {
            "max_session_cost_usd": None if cap is None else format_usd(cap),
            "mode": settings.budget_mode,
            "on_store_error": settings.budget_on_store_error,
        },
    }
    if await gateway.store.ping():
        return JSONResponse({"status": "ok", "store": "reachable", **modes})
    refused = settings.store_on_error == "raise" or (
        cap is not None and settings.budget_on_store_error == "refuse"
    )
    body = {"status": "unavailable" if refused else "degraded", "store": "unreachable"}
    return JSONResponse({**body, **modes}, 503 if refused else 200)


async def metrics(gateway: Gateway, request: Request) -> Response:
    """``GET /metrics``: Prometheus' text format (an admin key needed when
    ``server.metrics_admin_only``)."""
    if gateway.settings.metrics_admin_only and not gateway.is_admin(request):
        return rejection(Reject(403, "/metrics needs an admin key", "permission_error"))
    return Response(gateway.metrics.render(), media_type=CONTENT_TYPE_LATEST)
