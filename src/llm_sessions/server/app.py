"""The gateway: an OpenAI-compatible ASGI app on Starlette around `SessionPolicy`.

``POST /v1/chat/completions`` runs ``abegin``, forwards the request to the upstream with
the decided model (walking the fallback chain on connect errors, timeouts, 429 and 5xx,
at most ``upstream.max_attempts`` times), relays the answer (streamed chunk by chunk when
asked), and runs ``afinish`` exactly once with what it cost. Also: ``GET /v1/models``,
``/health``, ``/metrics``, ``/v1/sessions``, and ``GET``/``DELETE /v1/sessions/{id}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import BudgetExceeded, InvalidRequest, InvalidSessionId, StoreUnavailable
from ..policy import Decision, SessionPolicy
from ..records import format_usd
from ..routing import estimate_prompt_tokens
from ..stores.base import AsyncStore
from ..stores.urls import open_async_store
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .settings import Settings
from .upstream import Attempt, RelayResponse, StreamMeter, Upstream

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("llm_sessions.access")
errors_log = logging.getLogger("llm_sessions.gateway")


class _Reject(Exception):
    """An OpenAI-style error response, raised anywhere in a handler."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.extra = extra


def error_body(message: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None, **extra}}


def _scope_of(token: str | None) -> str:
    """Callers are scoped by a hash of their bearer token; no token, no scope."""
    return (
        "" if not token else hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    )


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def load_api_keys(path: str) -> frozenset[str]:
    """SHA-256 digests of the keys in `path`, one per line (blank lines and # comments skipped)."""
    keys = set()
    for line in Path(path).read_text("utf-8").splitlines():
        key = line.strip()
        if key and not key.startswith("#"):
            keys.add(hashlib.sha256(key.encode()).hexdigest())
    return frozenset(keys)


class Gateway:
    """Everything one gateway holds: settings, store, routing flow, upstream client, metrics."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: AsyncStore | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        if store is None:
            kwargs: dict[str, Any] = {}
            if not settings.store_url.startswith("memory:"):
                kwargs = {
                    "key_prefix": settings.store_key_prefix,
                    "on_error": settings.store_on_error,
                }
            store = open_async_store(settings.store_url, settings.sessions, **kwargs)
        self.store = store
        self.policy = SessionPolicy(
            store,
            settings.tiers,
            pricing=settings.pricing,
            profiles=settings.profiles,
            max_session_cost_usd=settings.max_session_cost_usd,
            budget_mode=settings.budget_mode,
            default_max_tokens=settings.default_max_tokens,
            reservation_ttl_ms=settings.reservation_ttl_ms,
            fallback_pin_ms=settings.fallback_pin_ms,
        )
        self.upstream = Upstream(settings.upstream, transport)
        self.metrics = Metrics(lambda: float(getattr(self.store, "errors", 0)))
        self.api_keys = load_api_keys(settings.api_keys_file) if settings.api_keys_file else None

    # -- the app ----------------------------------------------------------------------------

    def app(self) -> Starlette:
        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            await self.upstream.aclose()
            await self.store.aclose()

        routes = [
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/sessions", self.sessions, methods=["GET"]),
            Route("/v1/sessions/{session_id:path}", self.session, methods=["GET", "DELETE"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
        ]
        return Starlette(
            routes=routes,
            lifespan=lifespan,
            exception_handlers={HTTPException: self._http_error, Exception: self._crash},
        )

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return JSONResponse(error_body(message, kind), exc.status_code, headers=exc.headers)

    async def _crash(self, request: Request, exc: Exception) -> Response:
        errors_log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal error", "server_error"), 500)

    def _authorize(self, request: Request) -> str:
        """The caller's scope; 401 when keys are required and this one is not among them."""
        token = _bearer(request)
        if self.api_keys is not None:
            digest = hashlib.sha256((token or "").encode("utf-8", "surrogatepass")).hexdigest()
            if token is None or digest not in self.api_keys:
                raise _Reject(401, "a valid API key is required (Authorization: Bearer ...)",
                              code="invalid_api_key")  # fmt: skip
        return _scope_of(token)

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _Reject(
                413, f"request body is over the {limit}-byte limit", code="body_too_large"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _Reject(
                    413, f"request body is over the {limit}-byte limit", code="body_too_large"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    # -- POST /v1/chat/completions ------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        started = time.perf_counter()
        record: dict[str, Any] = {"session": None, "status": 0, "stream": False}
        try:
            response = await self._chat(request, record)
        except _Reject as reject:
            body = error_body(str(reject), reject.kind, **reject.extra)
            response = JSONResponse(body, reject.status, headers=record.pop("headers", None))
        if not isinstance(response, RelayResponse):  # a stream logs when it ends
            self._log(record, response.status_code, started)
        return response

    async def _chat(self, request: Request, record: dict[str, Any]) -> Response:
        scope = self._authorize(request)
        raw = await self._read_body(request)
        try:
            body = json.loads(raw)
        except ValueError:
            raise _Reject(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _Reject(400, "the request body must be a JSON object")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise _Reject(400, "'stream' must be true or false", param="stream")
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise _Reject(400, "'stream_options' must be an object", param="stream_options")
        record["stream"] = stream
        try:
            decision = await self.policy.abegin(request.headers, body, scope=scope)
        except InvalidSessionId as exc:
            raise _Reject(400, str(exc), param=self.settings.sessions.header_name) from None
        except InvalidRequest as exc:
            raise _Reject(400, str(exc)) from None
        except BudgetExceeded as exc:
            self.metrics.budget_rejections.inc()
            record["session"] = exc.session_id
            record["headers"] = {"x-should-retry": "false"}  # tells OpenAI SDKs not to retry
            raise _Reject(
                429,
                "this request would take the session over its budget: "
                f"{format_usd(exc.spent_micros)} USD spent, {format_usd(exc.reserved_micros)} USD "
                f"reserved by requests in flight, up to {format_usd(exc.requested_micros)} USD for "
                f"this one, of a {format_usd(exc.cap_micros)} USD cap. This is final: retrying "
                "will not help; start a new session or ask for fewer max_tokens.",
                "budget_exceeded",
                code="budget_exceeded",
                spent_usd=format_usd(exc.spent_micros),
                reserved_usd=format_usd(exc.reserved_micros),
                requested_usd=format_usd(exc.requested_micros),
                cap_usd=format_usd(exc.cap_micros),
                retryable=False,
            ) from None
        except StoreUnavailable:
            raise _Reject(503, "the session store is unavailable", "server_error") from None

        headers = {**decision.headers, "X-Session-Strikes": str(decision.strikes)}
        record.update(session=decision.session_id, reason=decision.reason, tier=decision.tier.value,
                      model=decision.model, headers=headers)  # fmt: skip
        self.metrics.requests.labels(decision.reason).inc()
        if decision.reason == "escalated":
            self.metrics.escalations.inc()
        if decision.sticky_activated:
            self.metrics.cache_sticky.inc()

        messages, tools = body["messages"], body.get("tools")
        tried: list[str] = []
        for model in decision.models[: self.upstream.max_attempts]:
            payload = {**body, "model": model}
            if stream:
                payload["stream_options"] = {**(options or {}), "include_usage": True}
            attempt = await self.upstream.attempt(model, payload)
            if attempt.response is None:
                tried.append(f"{model} ({attempt.failure})")
                self.metrics.upstream_errors.labels(attempt.error_kind).inc()
                continue
            if model != decision.model:
                self.metrics.fallbacks.inc()
            response = await self._answer(decision, attempt, stream, messages, tools, record)
            if response is not None:
                return response
            tried.append(f"{model} (broken response)")
            self.metrics.upstream_errors.labels("read").inc()

        await self._finish(decision, None, 0)
        raise _Reject(
            502,
            f"every upstream attempt failed: {', '.join(tried)}",
            "upstream_error",
            code="all_models_failed",
            tried=[t.split(" (")[0] for t in tried],
        )

    async def _answer(
        self,
        decision: Decision,
        attempt: Attempt,
        stream: bool,
        messages: list[Any],
        tools: Any,
        record: dict[str, Any],
    ) -> Response | None:
        """The client's response for an attempt that reached it; None if it broke before
        a byte could be sent (then the next model is tried)."""
        upstream = attempt.response
        assert upstream is not None
        model = attempt.model
        headers = {**record["headers"], "X-Session-Served-Model": model}
        record["model"] = model
        if attempt.terminal or upstream.status_code != 200:
            # the upstream refused (quota, a bad request): the client sees it; nothing served
            if attempt.terminal:
                self.metrics.upstream_errors.labels(attempt.error_kind).inc()
            try:
                content = await upstream.aread()
            except httpx.HTTPError:
                content = json.dumps(
                    error_body("the upstream refused the request", "upstream_error")
                ).encode()
            finally:
                await upstream.aclose()
            await self._finish(decision, None, 0)
            media = upstream.headers.get("content-type", "application/json")
            return Response(content, upstream.status_code, headers=headers, media_type=media)

        if stream:
            started = time.perf_counter()

            async def done(meter: StreamMeter, complete: bool) -> None:
                usage = meter.usage or self._estimate(messages, tools, meter.text_bytes)
                cost = await self._charge(decision, model, usage)
                record.update(cost=cost, complete=complete)
                self._log(record, 200, started)

            return RelayResponse(upstream, done, headers)

        try:
            content = await upstream.aread()
        except httpx.HTTPError:
            return None
        finally:
            await upstream.aclose()
        try:
            data = json.loads(content)
        except ValueError:
            data = None
        usage = data.get("usage") if isinstance(data, dict) else None
        if not isinstance(usage, dict):
            usage = self._estimate(
                messages, tools, len(_answer_text(data).encode("utf-8", "surrogatepass"))
            )
        record["cost"] = await self._charge(decision, model, usage)
        return Response(content, 200, headers=headers, media_type="application/json")

    def _estimate(self, messages: list[Any], tools: Any, text_bytes: int) -> dict[str, int]:
        """Usage estimated like a budget reservation: UTF-8 bytes / 3, rounded up."""
        return {
            "prompt_tokens": estimate_prompt_tokens(messages, tools),
            "completion_tokens": math.ceil(text_bytes / 3),
        }

    async def _charge(self, decision: Decision, model: str, usage: dict[str, Any]) -> int:
        try:
            cost = self.policy.cost_micros(model, usage)
        except ValueError:  # an upstream usage block we can't read: estimate instead
            cost = 0
        await self._finish(decision, model, cost)
        self.metrics.cost.inc(cost / 1_000_000)
        return cost

    async def _finish(self, decision: Decision, model: str | None, cost: int) -> None:
        """`afinish`; a store that fails now must not turn an answered request into an error."""
        try:
            await self.policy.afinish(decision, served_model=model, cost_micros=cost)
        except StoreUnavailable as exc:
            errors_log.warning("could not record the outcome of a request: %s", exc)

    def _log(self, record: dict[str, Any], status: int, started: float) -> None:
        self.metrics.responses.labels(str(status)).inc()
        latency = time.perf_counter() - started
        self.metrics.latency.labels("true" if record.get("stream") else "false").observe(latency)
        session = record.get("session")
        line = {
            "event": "chat",
            "session": session[:8] if session else None,
            "reason": record.get("reason"),
            "model": record.get("model"),
            "tier": record.get("tier"),
            "status": status,
            "stream": record.get("stream", False),
            "latency_ms": round(latency * 1000, 1),
            "cost_usd": format_usd(record.get("cost", 0)),
        }
        if "complete" in record:
            line["complete"] = record["complete"]
        log.info(json.dumps(line))

    # -- the other endpoints ------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        try:
            self._authorize(request)
        except _Reject as reject:
            return JSONResponse(error_body(str(reject), reject.kind, **reject.extra), reject.status)
        created = int(time.time())
        ids = [*self.settings.profiles, *self.settings.models]
        data = [
            {"id": i, "object": "model", "created": created, "owned_by": "llm-sessions"}
            for i in ids
        ]
        return JSONResponse({"object": "list", "data": data})

    async def health(self, request: Request) -> Response:
        reachable = await self.store.ping()
        if reachable:
            return JSONResponse({"status": "ok", "store": "reachable"})
        fail_open = self.settings.store_on_error == "fail_open"
        body = {"status": "degraded" if fail_open else "unavailable", "store": "unreachable"}
        return JSONResponse(body, 200 if fail_open else 503)

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def sessions(self, request: Request) -> Response:
        try:
            self._authorize(request)
            raw = request.query_params.get("limit", str(self.settings.stats_limit))
            if not raw.isdigit():
                raise _Reject(400, "'limit' must be a non-negative integer", param="limit")
            stats = await self.store.get_stats(limit=min(int(raw), self.settings.stats_limit))
        except _Reject as reject:
            return JSONResponse(error_body(str(reject), reject.kind, **reject.extra), reject.status)
        except StoreUnavailable:
            return JSONResponse(error_body("the session store is unavailable", "server_error"), 503)
        return JSONResponse(stats.to_dict())

    async def session(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        try:
            key = self.policy.session_key(session_id, self._authorize(request))
            entry = await self.store.get_session(key)
            if entry is None:
                raise _Reject(404, f"no session {session_id!r} for this caller", "not_found_error")
            if request.method == "DELETE":
                await self.store.clear_session(key)
                return JSONResponse({"id": session_id, "deleted": True})
            sticky = await self.store.is_cache_sticky(key)
        except _Reject as reject:
            return JSONResponse(error_body(str(reject), reject.kind, **reject.extra), reject.status)
        except StoreUnavailable:
            return JSONResponse(error_body("the session store is unavailable", "server_error"), 503)
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


def _answer_text(data: Any) -> str:
    """The generated text of a non-streamed completion (for estimating its cost)."""
    if not isinstance(data, dict):
        return ""
    parts = []
    for choice in data.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            parts.append(message["content"])
    return "".join(parts)


def create_app(settings: Settings, **kw: Any) -> Starlette:
    """The gateway's ASGI app (see `Gateway`)."""
    return Gateway(settings, **kw).app()
