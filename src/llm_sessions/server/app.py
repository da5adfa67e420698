"""The ASGI app of a `Gateway`: the three LLM endpoints dispatched directly (they are the
hot path, and do their own error handling), everything else by a Starlette router; the
lifespan (start-up checks, then closing the upstream clients and the store); the
gateway's own 404/405 and 500 answers.

``POST /v1/chat/completions``, ``/v1/messages`` and ``/v1/responses`` run ``abegin``,
forward the request to the upstream with the decided model (walking the fallback chain
on connect errors, timeouts, 429 and 5xx, at most ``upstream.max_attempts`` times), relay
the answer (streamed event by event when asked), and run ``afinish`` exactly once with
what it cost. Stored responses are retrieved from the upstream that made them. Also:
models, embeddings, ``/health``, ``/metrics`` and the sessions endpoints (`ENDPOINTS`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import console, llm, operator, passthrough, stored
from .gateway import Gateway
from .rejections import error_body
from .settings import Settings, redact_url
from .wire import CHAT, LLM_PATHS, MESSAGES, RESPONSES, Wire

__all__ = ["ENDPOINTS", "Gateway", "build", "create_app"]

errors_log = logging.getLogger("llm_sessions.gateway")

#: What the gateway serves, as a 404 lists it.
ENDPOINTS = (
    "POST /v1/chat/completions",
    "POST /v1/messages",
    "POST /v1/messages/count_tokens",
    "POST /v1/responses",
    "GET|DELETE /v1/responses/{id}",
    "GET /v1/responses/{id}/input_items",
    "POST /v1/responses/{id}/cancel",
    "POST /v1/embeddings",
    "GET /v1/models",
    "GET /v1/models/{id}",
    "GET /v1/sessions",
    "GET|DELETE /v1/sessions/{id}",
    "GET /v1/sessions/{id}/events",
    "GET /health",
    "GET /metrics",
    "GET /ui (the operator console)",
)

Endpoint = Callable[[Gateway, Request], Awaitable[Response]]


def build(gateway: Gateway) -> ASGIApp:
    """The ASGI app of `gateway`."""
    routed = _router(gateway)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        wire = LLM_PATHS.get(scope["path"]) if scope["type"] == "http" else None
        if wire is None or scope["method"] != "POST":
            await routed(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await llm.serve(gateway, request, wire)
        except Exception as exc:
            response = await _crash(request, exc)
        await response(scope, receive, send)

    return app


def create_app(settings: Settings, **kw: Any) -> ASGIApp:
    """The gateway's ASGI app (see `Gateway`)."""
    return Gateway(settings, **kw).app()


def _router(gateway: Gateway) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await _check_start_up(gateway)
        yield
        for upstream in gateway.upstreams.values():
            await upstream.aclose()
        await gateway.store.aclose()

    def bind(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            return await endpoint(gateway, request)

        return handle

    def llm_endpoint(wire: Wire) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            return await llm.serve(gateway, request, wire)

        return handle

    stored_response = bind(stored.stored_response)
    routes = [
        Route("/v1/chat/completions", llm_endpoint(CHAT), methods=["POST"]),
        Route("/v1/messages", llm_endpoint(MESSAGES), methods=["POST"]),
        Route("/v1/messages/count_tokens", bind(passthrough.count_tokens), methods=["POST"]),
        Route("/v1/responses", llm_endpoint(RESPONSES), methods=["POST"]),
        Route("/v1/responses/{response_id}", stored_response, methods=["GET", "DELETE"]),
        Route("/v1/responses/{response_id}/input_items", stored_response, methods=["GET"]),
        Route("/v1/responses/{response_id}/cancel", stored_response, methods=["POST"]),
        Route("/v1/models", bind(passthrough.models), methods=["GET"]),
        Route("/v1/models/{model_id:path}", bind(passthrough.model), methods=["GET"]),
        Route("/v1/embeddings", bind(passthrough.embeddings), methods=["POST"]),
        Route("/v1/sessions", bind(operator.sessions), methods=["GET"]),
        Route("/v1/sessions/{session_id:path}/events", bind(operator.session_events),
              methods=["GET"]),
        Route("/v1/sessions/{session_id:path}", bind(operator.session), methods=["GET", "DELETE"]),
        Route("/health", bind(operator.health), methods=["GET"]),
        Route("/metrics", bind(operator.metrics), methods=["GET"]),
    ]  # fmt: skip
    if gateway.settings.console_enabled:
        routes += [
            Route("/", bind(console.home), methods=["GET"]),
            Route("/ui", bind(console.asset), methods=["GET"]),
            Route("/ui/{name}", bind(console.asset), methods=["GET"]),
            Route("/v1/console/info", bind(console.info), methods=["GET"]),
            Route("/v1/console/sessions", bind(console.sessions), methods=["GET"]),
            Route("/v1/console/overview", bind(console.overview), methods=["GET"]),
            Route("/v1/console/stream", bind(console.stream), methods=["GET"]),
        ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _crash},
    )


async def _check_start_up(gateway: Gateway) -> None:
    """Warn about what would make every request fail or go unauthenticated."""
    for upstream in gateway.settings.upstreams:
        if upstream.api_key is None and not upstream.forward_client_key:
            errors_log.warning(
                "the environment variable %s (the api_key_env of upstream %s) is not set: "
                "requests will reach %s without a key",
                upstream.api_key_env,
                upstream.name,
                redact_url(upstream.base_url),
            )
    if not await gateway.store.ping():
        errors_log.warning(
            "the session store %s can't be reached at start-up (store.on_error = %s)",
            redact_url(gateway.settings.store_url),
            gateway.settings.store_on_error,
        )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    message = f"{request.method} {request.url.path[:256]}: {exc.detail}"
    if exc.status_code == 404:
        message += f". This gateway serves: {', '.join(ENDPOINTS)}"
    return JSONResponse(error_body(message, kind), exc.status_code, headers=exc.headers)


async def _crash(request: Request, exc: Exception) -> Response:
    errors_log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("internal error", "server_error"), 500)
