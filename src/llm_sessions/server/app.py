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
import re
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

from ..errors import (
    BudgetExceeded,
    InvalidRequest,
    InvalidSessionId,
    SessionBusy,
    StoreUnavailable,
)
from ..fingerprint import provider_from_model
from ..policy import Decision, SessionPolicy
from ..protocols import chat
from ..records import format_usd
from ..routing import token_usage
from ..stores.base import AsyncStore
from ..stores.urls import open_async_store
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .settings import Settings, redact_url
from .upstream import Attempt, RelayResponse, StreamMeter, Upstream

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("llm_sessions.access")
errors_log = logging.getLogger("llm_sessions.gateway")

#: The deepest nesting of arrays and objects a request body may have.
MAX_JSON_DEPTH = 128
MAX_LOG_FIELD = 256  # characters of any one string field of a log line
_LONE_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")


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


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder, made once (json.loads with any option builds a new one on every call).
_STRICT_JSON = json.JSONDecoder(parse_constant=_no_constants)


def parse_body(raw: bytes) -> dict[str, Any]:
    """A request body as strict JSON: UTF-8, no NaN/Infinity, no lone surrogates, nested
    at most `MAX_JSON_DEPTH` deep, an object. Anything else is a 400 naming the problem."""
    try:
        body = _STRICT_JSON.decode(raw.decode("utf-8"))
    except RecursionError:
        raise _Reject(400, "the request body is nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise _Reject(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _Reject(400, "the request body must be a JSON object")
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _depth(body) > MAX_JSON_DEPTH:
        raise _Reject(400, f"the request body is nested more than {MAX_JSON_DEPTH} levels deep")
    if b"\\u" in raw and _LONE_SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise _Reject(
                400, "the request body has a lone UTF-16 surrogate (\\ud800-\\udfff)"
            ) from None
    return body


def _depth(value: Any) -> int:
    """How deeply `value` nests arrays and objects (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            return depth
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return deepest


def _cap(value: Any) -> Any:
    """A log field, cut to `MAX_LOG_FIELD` characters when it is a string."""
    if isinstance(value, str) and len(value) > MAX_LOG_FIELD:
        return value[:MAX_LOG_FIELD] + "..."
    return value


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
                    "busy_timeout_ms": settings.store_busy_timeout_ms,
                    "max_connections": settings.store_max_connections
                    or settings.upstream.max_connections,
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
            on_store_error=settings.budget_on_store_error,
            finish_retry_ms=settings.store_finish_retry_ms,
            id_sources=settings.id_sources,
        )
        self.upstream = Upstream(settings.upstream, transport)
        self.metrics = Metrics(lambda: float(getattr(self.store, "errors", 0)))
        self.api_keys = load_api_keys(settings.api_keys_file) if settings.api_keys_file else None
        self.admin_keys = (
            load_api_keys(settings.admin_keys_file) if settings.admin_keys_file else frozenset()
        )

    # -- the app ----------------------------------------------------------------------------

    def app(self) -> Starlette:
        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            await self._check_start_up()
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

    async def _check_start_up(self) -> None:
        """Warn about what would make every request fail or go unauthenticated."""
        upstream = self.settings.upstream
        if upstream.api_key is None:
            errors_log.warning(
                "the environment variable %s (upstream.api_key_env) is not set: requests "
                "will reach %s without an Authorization header",
                upstream.api_key_env,
                redact_url(upstream.base_url),
            )
        if not await self.store.ping():
            errors_log.warning(
                "the session store %s can't be reached at start-up (store.on_error = %s)",
                redact_url(self.settings.store_url),
                self.settings.store_on_error,
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
        body = parse_body(await self._read_body(request))
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise _Reject(400, "'stream' must be true or false", param="stream")
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise _Reject(400, "'stream_options' must be an object", param="stream_options")
        include_usage = (options or {}).get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise _Reject(
                400,
                "'stream_options.include_usage' must be true or false",
                param="stream_options.include_usage",
            )
        record["stream"] = stream
        decision = await self._begin(request, body, scope, record)

        headers = {**decision.headers, "X-Session-Strikes": str(decision.strikes)}
        record.update(session=decision.session_id, reason=decision.reason, tier=decision.tier.value,
                      model=decision.model, headers=headers, source=decision.source)  # fmt: skip
        self.metrics.requests.labels(decision.reason).inc()
        if decision.reason == "escalated":
            self.metrics.escalations.inc()
        if decision.sticky_activated:
            self.metrics.cache_sticky.inc()
        try:
            return await self._forward(decision, body, stream, include_usage, record)
        finally:
            if decision.settled_total is None and not record.get("relaying"):
                # anything that ended this request before its outcome was recorded
                await self._finish(decision, None, 0)

    async def _begin(
        self, request: Request, body: dict[str, Any], scope: str, record: dict[str, Any]
    ) -> Decision:
        """`abegin`, with its refusals as error responses."""
        try:
            return await self.policy.abegin(request.headers, body, scope=scope)
        except InvalidSessionId as exc:
            param = exc.param or self.settings.sessions.header_name
            raise _Reject(400, str(exc), param=param) from None
        except InvalidRequest as exc:
            raise _Reject(400, str(exc), param=exc.param) from None
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
        except SessionBusy:
            self.metrics.store_refusals.labels("session_busy").inc()
            record["headers"] = {"retry-after": "1", "x-should-retry": "true"}
            raise _Reject(
                503,
                "this session is busy: its other requests held it longer than "
                f"store.busy_timeout_ms ({self.settings.store_busy_timeout_ms} ms); retry",
                "server_error",
                code="session_busy",
            ) from None
        except StoreUnavailable:
            self.metrics.store_refusals.labels("session_store_unavailable").inc()
            record["headers"] = {"retry-after": "2", "x-should-retry": "true"}
            capped = self.policy.cap_micros is not None
            raise _Reject(
                503,
                "the session store is unavailable"
                + (", and this session's budget can't be checked without it" if capped else ""),
                "server_error",
                code="session_store_unavailable",
            ) from None

    async def _forward(
        self,
        decision: Decision,
        body: dict[str, Any],
        stream: bool,
        include_usage: bool,
        record: dict[str, Any],
    ) -> Response:
        """Walk the decision's models until one answers; 502 when none did."""
        options = body.get("stream_options")
        tried: list[str] = []
        for model in decision.models[: self.upstream.max_attempts]:
            payload = {**body, "model": model}
            if stream:
                payload["stream_options"] = {**(options or {}), "include_usage": True}
            try:
                attempt = await self.upstream.attempt(model, payload)
                response = None
                if attempt.response is not None:
                    if model != decision.model:
                        self.metrics.fallbacks.inc()
                    response = await self._answer(
                        decision, attempt, stream, include_usage, body, record
                    )
            except Exception as exc:  # a fault of the client, not of the upstream
                errors_log.exception("upstream call to %.256s failed", model)
                tried.append(f"{model} (gateway error: {type(exc).__name__})")
                self.metrics.upstream_errors.labels("internal").inc()
                continue
            if response is not None:
                return response
            if attempt.response is None:
                tried.append(f"{model} ({attempt.failure})")
                self.metrics.upstream_errors.labels(attempt.error_kind).inc()
            else:
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
        include_usage: bool,
        body: dict[str, Any],
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
                cost = await self._charge(decision, model, meter.usage, meter.text_bytes)
                record.update(cost=cost, complete=complete)
                self._log(record, 200, started)

            record["relaying"] = True  # from here the relay records the outcome
            meter = StreamMeter(chat.stream_reader(keep_usage=include_usage))
            return RelayResponse(upstream, done, headers, meter)

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
        output = chat.text_bytes(data)
        record["cost"] = await self._charge(decision, model, usage, output)
        headers["X-Session-Cache-Read-Tokens"] = str(_cache_read(usage))
        return Response(content, 200, headers=headers, media_type="application/json")

    async def _charge(self, decision: Decision, model: str, usage: Any, output_bytes: int) -> int:
        """Bill a served request: its usage priced, else the estimate (never 0 for a priced
        model, never an exception)."""
        cost = self.policy.charge_micros(decision, model, usage, None, output_bytes)
        await self._finish(decision, model, cost)
        self.metrics.cost.inc(cost / 1_000_000)
        cached = _cache_read(usage)
        if cached:
            self.metrics.cache_read_tokens.labels(provider_from_model(model)).inc(cached)
            price = self.policy.pricing.get(model)
            if price is not None:
                self.metrics.cache_savings.inc(price.cache_savings_micros(cached) / 1_000_000)
        return cost

    async def _finish(self, decision: Decision, model: str | None, cost: int) -> None:
        """`afinish` (which retries the store for store.finish_retry_ms); a store that is
        still down then must not turn an answered request into an error: the cost that
        could not be recorded is counted and logged."""
        if decision.settled_total is not None:
            return
        try:
            await self.policy.afinish(decision, served_model=model, cost_micros=cost)
        except StoreUnavailable as exc:
            decision.settle(-1)  # given up: never tried again for this request
            self.metrics.unrecorded_cost.inc(cost / 1_000_000)
            errors_log.error(
                "could not record a request's outcome (session %s, model %s, %s USD): %s",
                _cap(decision.session_id),
                _cap(model),
                format_usd(cost),
                exc,
            )

    def _log(self, record: dict[str, Any], status: int, started: float) -> None:
        self.metrics.responses.labels(str(status)).inc()
        latency = time.perf_counter() - started
        self.metrics.latency.labels("true" if record.get("stream") else "false").observe(latency)
        session = record.get("session")
        line = {
            "event": "chat",
            "session": session[:8] if session else None,
            "source": record.get("source"),
            "reason": record.get("reason"),
            "model": _cap(record.get("model")),
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
        """The store's reachability and what an outage means here: ``"degraded"`` (200)
        while requests are still served without it, ``"unavailable"`` (503) while they
        are refused (``store.on_error = "raise"``, or a cap with ``"refuse"``)."""
        cap = self.policy.cap_micros
        capped = cap is not None
        modes = {
            "store_on_error": self.settings.store_on_error,
            "budget": {
                "max_session_cost_usd": None if cap is None else format_usd(cap),
                "mode": self.settings.budget_mode,
                "on_store_error": self.settings.budget_on_store_error,
            },
        }
        if await self.store.ping():
            return JSONResponse({"status": "ok", "store": "reachable", **modes})
        refused = self.settings.store_on_error == "raise" or (
            capped and self.settings.budget_on_store_error == "refuse"
        )
        body = {"status": "unavailable" if refused else "degraded", "store": "unreachable"}
        return JSONResponse({**body, **modes}, 503 if refused else 200)

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def sessions(self, request: Request) -> Response:
        """One page of the caller's own sessions: ``?limit=&cursor=``; ``?all=true`` lists
        every tenant's, for an admin key only."""
        params = request.query_params
        try:
            scope = self._authorize(request)
            raw = params.get("limit", str(self.settings.stats_limit))
            if not (raw.isascii() and raw.isdecimal() and 0 < len(raw) <= 9):
                raise _Reject(400, "'limit' must be a positive integer", param="limit")
            cursor = params.get("cursor", "")
            if len(cursor) > 1024 or not cursor.isascii() or not cursor.isprintable():
                raise _Reject(400, "'cursor' is not one this gateway returned", param="cursor")
            everyone = params.get("all", "false").lower() in ("1", "true")
            if everyone and not self._is_admin(request):
                raise _Reject(
                    403, "listing every tenant's sessions needs an admin key",
                    "permission_error", code="admin_key_required",
                )  # fmt: skip
            limit = min(int(raw), self.settings.stats_limit)
            if limit == 0:
                return JSONResponse({"sessions": [], "next_cursor": None})
            page = await self.store.list_sessions(
                None if everyone else scope, limit=limit, cursor=cursor
            )
        except _Reject as reject:
            return JSONResponse(error_body(str(reject), reject.kind, **reject.extra), reject.status)
        except ValueError:
            message = "'cursor' is not one this gateway returned"
            return JSONResponse(error_body(message, "invalid_request_error", param="cursor"), 400)
        except StoreUnavailable:
            return JSONResponse(error_body("the session store is unavailable", "server_error"), 503)
        body = page.to_dict()
        if everyone:
            for row, shown in zip(page.sessions, body["sessions"], strict=True):
                shown["scope"] = row.scope[:8]
        return JSONResponse(body)

    def _is_admin(self, request: Request) -> bool:
        token = _bearer(request)
        digest = hashlib.sha256((token or "").encode("utf-8", "surrogatepass")).hexdigest()
        return token is not None and digest in self.admin_keys

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


def _cache_read(usage: Any) -> int:
    """Prompt tokens a usage block says were read from the cache (0 when unreadable)."""
    try:
        return token_usage(usage).cache_read if usage is not None else 0
    except ValueError:
        return 0


def create_app(settings: Settings, **kw: Any) -> Starlette:
    """The gateway's ASGI app (see `Gateway`)."""
    return Gateway(settings, **kw).app()
