"""The LLM endpoints (``POST /v1/chat/completions``, ``/v1/messages``, ``/v1/responses``),
one handler for all, told apart by their `Wire`: authorize, parse, check the model,
`abegin` (its refusals as 4xx/503 in the API's shape), forward along the decided chain
(`forwarding`), and log the request once."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import (
    BudgetExceeded,
    InvalidRequest,
    InvalidSessionId,
    SessionBusy,
    StoreUnavailable,
    UnknownState,
)
from ..policy import Decision
from ..records import format_usd
from .access_log import cap, log_request
from .forwarding import finish, forward, turn_event
from .model_routes import after, check_api, check_explicit_model
from .parsing import check_counts, parse_body, read_body, read_stream_flag
from .rejections import Reject, rejection
from .translation import untranslatable
from .upstream import RelayResponse
from .wire import Wire

if TYPE_CHECKING:
    from .gateway import Gateway

__all__ = ["serve"]

errors_log = logging.getLogger("llm_sessions.gateway")

AGENT_CHARS = 80  # of a client's User-Agent, kept with each of its turns


async def serve(gateway: Gateway, request: Request, wire: Wire) -> Response:
    """One LLM request, answered (or refused) and logged (a stream logs when it ends)."""
    started = time.perf_counter()
    record: dict[str, Any] = {"session": None, "status": 0, "stream": False, "api": wire.api,
                              "started": started}  # fmt: skip
    request_id = request.headers.get("x-request-id")
    if request_id:
        record["request_id"] = cap(request_id)
    agent = request.headers.get("user-agent")
    if agent:
        record["agent"] = agent[:AGENT_CHARS]
    try:
        response = await _handle(gateway, request, record, wire)
    except Reject as reject:
        response = rejection(reject, wire, record.pop("headers", None))
        if reject.status >= 500:  # the gateway's side of every 5xx, with its cause
            errors_log.warning(
                "%s answered %d (session %s, request id %s): %s",
                wire.path, reject.status, record.get("session"),
                record.get("request_id"), cap(str(reject)),
            )  # fmt: skip
    if not isinstance(response, RelayResponse):  # a stream logs when it ends
        log_request(gateway.metrics, record, response.status_code, started)
    return response


async def _handle(
    gateway: Gateway, request: Request, record: dict[str, Any], wire: Wire
) -> Response:
    scope = gateway.authorize(request)
    body = parse_body(await read_body(request, gateway.settings.max_body_bytes))
    check_counts(body)
    check_api(gateway.settings, wire)
    stream = read_stream_flag(body)
    record["stream"] = stream
    try:
        view = wire.view(body)
    except InvalidRequest as exc:
        raise Reject(400, str(exc), param=exc.param) from None
    check_explicit_model(gateway, body, wire)
    if gateway.policy.cap_micros is not None and wire.background(body):
        raise Reject(
            400,
            "'background' responses can't be held to the session's cost cap (their output is "
            "fetched later, out of the gateway's sight): send the request without background",
            param="background",
        )
    if gateway.translates:
        await _check_translatable(gateway, request, body, view, scope, wire)
    decision = await _begin(gateway, request, view, scope, record)

    headers = {**decision.headers, "X-Session-Strikes": str(decision.strikes)}
    record.update(session=decision.session_id, reason=decision.reason, tier=decision.tier.value,
                  model=decision.model, headers=headers, source=decision.source)  # fmt: skip
    if decision.output_limit is not None:
        record["output_limit"] = decision.output_limit
    metrics = gateway.metrics
    metrics.requests.labels(decision.reason).inc()
    if decision.reason == "escalated":
        metrics.escalations.inc()
    if decision.sticky_activated:
        metrics.cache_sticky.inc()
    try:
        return await forward(gateway, decision, body, stream, record, wire, request)
    finally:
        if decision.settled_total is None and not record.get("relaying"):
            # anything that ended this request before its outcome was recorded
            await finish(gateway, decision, None, 0, event=turn_event(record, 499))


async def _check_translatable(
    gateway: Gateway,
    request: Request,
    body: dict[str, Any],
    view: dict[str, Any],
    scope: str,
    wire: Wire,
) -> None:
    """400 naming the field when no model this request may go to can take it: each one's
    upstream would need a translation the request can't be given (server tools, stored
    state...). Before the session is touched: it changes nothing."""
    problems = untranslatable(gateway.settings, body, wire.api)
    if not problems:
        return
    settings = gateway.settings
    model = await gateway.policy.apeek(request.headers, view, scope=scope)
    for candidate in (model, *after(settings, model)):
        target = settings.sends_as(candidate, wire.api)
        if target is not None and target not in problems:
            return
    first = next(iter(problems.values()))
    raise Reject(400, str(first), param=first.field, code="untranslatable")


async def _begin(
    gateway: Gateway, request: Request, body: dict[str, Any], scope: str, record: dict[str, Any]
) -> Decision:
    """`abegin`, with its refusals as error responses."""
    try:
        # the event of a turn the budget refuses (only a cap refuses)
        logged = turn_event(record, 429) if gateway.policy.cap_micros is not None else None
        return await gateway.policy.abegin(request.headers, body, scope=scope, event=logged)
    except InvalidSessionId as exc:
        param = exc.param or gateway.settings.sessions.header_name
        raise Reject(400, str(exc), param=param) from None
    except InvalidRequest as exc:
        raise Reject(400, str(exc), param=exc.param) from None
    except UnknownState as exc:  # another tenant's state: as if it did not exist
        record["reason"] = "unknown_state"
        raise Reject(404, str(exc), "not_found_error", code=f"{exc.kind}_not_found") from None
    except BudgetExceeded as exc:
        gateway.metrics.budget_rejections.inc()
        record.update(session=exc.session_id, source=exc.source, model=exc.model)
        record["reason"] = "refused"
        record["headers"] = {"x-should-retry": "false"}  # tells OpenAI SDKs not to retry
        raise _over_budget(exc) from None
    except SessionBusy:
        gateway.metrics.store_refusals.labels("session_busy").inc()
        record["reason"] = "session_busy"
        record["headers"] = {"retry-after": "1", "x-should-retry": "true"}
        raise Reject(
            503,
            "this session is busy: its other requests held it longer than "
            f"store.busy_timeout_ms ({gateway.settings.store_busy_timeout_ms} ms); retry",
            "server_error",
            code="session_busy",
        ) from None
    except StoreUnavailable:
        gateway.metrics.store_refusals.labels("session_store_unavailable").inc()
        record["reason"] = "session_store_unavailable"
        record["headers"] = {"retry-after": "2", "x-should-retry": "true"}
        capped = gateway.policy.cap_micros is not None
        raise Reject(
            503,
            "the session store is unavailable"
            + (", and this session's budget can't be checked without it" if capped else ""),
            "server_error",
            code="session_store_unavailable",
        ) from None


def _over_budget(exc: BudgetExceeded) -> Reject:
    """The 429 of a request its session's budget refused: final, with the figures."""
    return Reject(
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
    )
