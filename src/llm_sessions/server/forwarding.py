"""Forwarding a decided request along its chain of models: each attempt to the model's
upstream (with the output limit a cap reserved written in), the answer relayed (streamed
event by event through a `StreamMeter`, or whole), and the outcome billed exactly once:
the usage priced, else the estimate from what was generated."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import StoreUnavailable
from ..policy import Decision
from ..records import format_usd
from ..routing import token_usage, with_generated_output
from .access_log import cap, log_request
from .model_routes import route, serves, takes_caller
from .rejections import Reject, error_body, rejection
from .translation import WIRES, Translation, Untranslatable
from .upstream import Attempt, RelayResponse, StreamMeter, UpstreamBroke, read_json
from .wire import Wire

if TYPE_CHECKING:
    from .gateway import Gateway

__all__ = ["charge", "finish", "forward"]

errors_log = logging.getLogger("llm_sessions.gateway")

#: The ``anthropic-version`` a request translated to the Messages API is sent with.
ANTHROPIC_VERSION = "2023-06-01"


async def forward(
    gateway: Gateway,
    decision: Decision,
    body: dict[str, Any],
    stream: bool,
    record: dict[str, Any],
    wire: Wire,
    request: Request,
) -> Response:
    """Walk the decision's models until one answers; 502 when none did."""
    served = [m for m in decision.models if serves(gateway.settings, m, wire)]
    if not served:
        raise Reject(
            400,
            f"none of {decision.models} goes to an upstream that serves the {wire.api} API",
            param="model",
        )
    served = [m for m in served if takes_caller(gateway, m, request)]
    if not served:
        raise Reject(
            403,
            f"none of {decision.models} goes to an upstream that takes this caller's key",
            "permission_error",
            code="client_key_not_accepted",
        )
    tried: list[str] = []
    untranslatable: list[Untranslatable] = []
    metrics = gateway.metrics
    for model in served[: gateway.max_attempts]:
        record.pop("dropped_tools", None)
        target = WIRES.get(gateway.settings.sends_as(model, wire.api) or "", wire)
        translation = Translation(wire, target) if target is not wire else None
        client, sent_as, headers = route(gateway, model, request, target.forward_headers)
        try:
            if translation is None:
                payload = _payload(gateway, decision, body, sent_as, stream, wire)
            else:
                default = gateway.settings.default_max_tokens
                limit = decision.output_limit or _given_limit(body, wire)
                if limit is None and gateway.policy.cap_micros is not None:
                    limit = default  # the worst case the cap reserved
                settings = gateway.settings
                payload, dropped = translation.request(
                    body, sent_as, limit, default, model in settings.reasoning_models,
                    settings.translation_unsupported_tools == "drop",
                )  # fmt: skip
                if dropped:
                    record["dropped_tools"] = ",".join(dropped)
                if target.anthropic_errors:  # the Messages API wants its version named
                    headers.setdefault("anthropic-version", ANTHROPIC_VERSION)
        except Untranslatable as exc:
            untranslatable.append(exc)
            tried.append(f"{model} (can't be translated to the {target.api} API)")
            continue
        try:
            attempt = await client.attempt(model, payload, target.path, headers)
            response = None
            if attempt.response is not None:
                if model != decision.model:
                    metrics.fallbacks.inc()
                if translation is not None:
                    record["translated"] = translation.label
                else:
                    record.pop("translated", None)
                response = await _answer(
                    gateway, decision, attempt, stream, body, record, wire, translation
                )
        except Exception as exc:  # a fault of the client, not of the upstream
            errors_log.exception("upstream call to %.256s failed", model)
            tried.append(f"{model} (gateway error: {type(exc).__name__})")
            metrics.upstream_errors.labels("internal").inc()
            continue
        if response is not None:
            return response
        if attempt.response is None:
            tried.append(f"{model} ({attempt.failure})")
            metrics.upstream_errors.labels(attempt.error_kind).inc()
        else:
            tried.append(f"{model} (broken response)")
            metrics.upstream_errors.labels("read").inc()

    refused = bool(untranslatable) and len(untranslatable) == len(tried)
    await finish(gateway, decision, None, 0, event=turn_event(record, 400 if refused else 502))
    if refused:
        first = untranslatable[0]
        raise Reject(400, str(first), param=first.field, code="untranslatable")
    raise Reject(
        502,
        f"every upstream attempt failed: {', '.join(tried)}",
        "upstream_error",
        code="all_models_failed",
        tried=[t.split(" (")[0] for t in tried],
    )


def _payload(
    gateway: Gateway,
    decision: Decision,
    body: dict[str, Any],
    sent_as: str,
    stream: bool,
    wire: Wire,
) -> dict[str, Any]:
    """The body sent upstream: the model as the upstream names it; under a cap, the
    output limit lowered to fit it (`fit_output`), else the one reserved when the client
    set none (Messages requires one anyway); on a stream of an API that must ask for its
    usage, that ask."""
    payload = {**body, "model": sent_as}
    given = [k for k in wire.limits if body.get(k) is not None]
    if decision.output_limit is not None:  # lowered so the worst case fits the cap
        wire.fit_limit(payload, decision.output_limit)
        for field in given or wire.limits[:1]:
            payload[field] = decision.output_limit
    elif gateway.policy.cap_micros is not None and not given:
        payload[wire.limits[0]] = gateway.settings.default_max_tokens
    if stream and wire.asks_stream_usage:
        payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return payload


async def _answer(
    gateway: Gateway,
    decision: Decision,
    attempt: Attempt,
    stream: bool,
    body: dict[str, Any],
    record: dict[str, Any],
    wire: Wire,
    translation: Translation | None = None,
) -> Response | None:
    """The client's response for an attempt that reached it; None if it broke before
    a byte could be sent (then the next model is tried). A translated answer is read in
    the upstream's API (its usage, its generated text) and written in the client's."""
    upstream = attempt.response
    assert upstream is not None
    headers = {**record["headers"], "X-Session-Served-Model": attempt.model}
    if translation is not None:
        headers["X-Session-Translated"] = translation.label
        if "dropped_tools" in record:
            headers["X-Session-Dropped-Tools"] = record["dropped_tools"]
    record["model"] = attempt.model
    if attempt.terminal or upstream.status_code != 200:
        return await _refused(gateway, decision, attempt, headers, record, wire, translation)
    if stream:
        record["relaying"] = True  # from here the relay records the outcome
        return _relayed(gateway, decision, attempt, body, record, wire, headers, translation)
    try:
        content = await upstream.aread()
    except UpstreamBroke:
        return None
    finally:
        await upstream.aclose()
    try:
        data = read_json(content)
    except ValueError:
        data = None
    if translation is not None:
        wire = translation.target  # what the upstream's answer is read as
        if isinstance(data, dict):
            content = translation.answer(content)
    usage = data.get("usage") if isinstance(data, dict) else None
    # an answer that was not stored can't be continued (nor one translated: not stored)
    stored = body.get("store") is not False and translation is None
    answer = (wire.answer_id(data), wire.answer_items(data)) if stored else None
    if answer is not None and answer[0] is not None and wire.unfinished(data):
        # a background response, queued: billed when its output is seen (`stored`)
        logged = turn_event(record, 200)
        await finish(gateway, decision, attempt.model, 0, answer, billed_later=True, event=logged)
        record["cost"] = 0
    else:
        output = wire.text_bytes(data)
        record["cost"] = await charge(
            gateway, decision, attempt.model, usage, output, answer, record
        )
    headers["X-Session-Cache-Read-Tokens"] = str(cache_read(usage))
    return Response(content, 200, headers=headers, media_type="application/json")


def _given_limit(body: dict[str, Any], wire: Wire) -> int | None:
    """The output limit the client set, in whichever of its API's fields."""
    for field in wire.limits:
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


async def _refused(
    gateway: Gateway,
    decision: Decision,
    attempt: Attempt,
    headers: dict[str, str],
    record: dict[str, Any],
    wire: Wire,
    translation: Translation | None = None,
) -> Response:
    """The upstream refused (quota, a bad request): the client sees its answer (in the
    client's API's error shape when translated); nothing was served."""
    upstream = attempt.response
    assert upstream is not None
    if attempt.terminal:
        gateway.metrics.upstream_errors.labels(attempt.error_kind).inc()
    try:
        content = await upstream.aread()
    except UpstreamBroke:
        refused = error_body("the upstream refused the request", "upstream_error")
        content = json.dumps(refused).encode()
    finally:
        await upstream.aclose()
    await finish(gateway, decision, None, 0, event=turn_event(record, upstream.status_code))
    if translation is not None:
        message = f"the upstream refused the request: {translation.error_message(content)}"
        kind = "invalid_request_error" if upstream.status_code < 500 else "upstream_error"
        extra = {k: v for k, v in upstream.headers.items() if k.lower() == "retry-after"}
        return rejection(Reject(upstream.status_code, message, kind), wire, {**headers, **extra})
    media = upstream.headers.get("content-type", "application/json")
    return Response(content, upstream.status_code, headers=headers, media_type=media)


def _relayed(
    gateway: Gateway,
    decision: Decision,
    attempt: Attempt,
    body: dict[str, Any],
    record: dict[str, Any],
    wire: Wire,
    headers: dict[str, str],
    translation: Translation | None = None,
) -> RelayResponse:
    """A stream relayed event by event, metered; billed (and logged) when it ends, from
    its usage, else from what it generated (never less than what was seen)."""
    upstream = attempt.response
    assert upstream is not None
    started = time.perf_counter()
    stored = body.get("store") is not False and translation is None

    async def done(meter: StreamMeter, complete: bool) -> None:
        usage = meter.usage
        if not complete and usage is not None:  # its output count may be a placeholder
            usage = with_generated_output(usage, meter.generated_bytes())
        answer = (meter.answer_id, meter.answer_items) if stored else None
        record["complete"] = complete
        cost = await charge(
            gateway, decision, attempt.model, usage, meter.generated_bytes, answer, record
        )
        record["cost"] = cost
        log_request(gateway.metrics, record, 200, started)

    if translation is None:
        meter = StreamMeter(wire.reader(body), wire.unread, wire.read_marker)
        return RelayResponse(upstream, done, headers, meter)
    target = translation.target  # the meter reads the upstream's events, all of them
    meter = StreamMeter(target.reader({"stream_options": {"include_usage": True}}))
    translator = translation.stream(body, attempt.model, decision.prompt_tokens)
    return RelayResponse(upstream, done, headers, meter, translator)


async def charge(
    gateway: Gateway,
    decision: Decision,
    model: str,
    usage: Any,
    output_bytes: int | Callable[[], int],
    answer: tuple[str | None, list[str]] | None = None,
    record: dict[str, Any] | None = None,
) -> int:
    """Bill a served request: its usage priced, else the estimate (never 0 for a priced
    model, never an exception); a stored answer's id and its output items' ids are
    remembered with the session, and the turn logged with its tokens."""
    policy, metrics = gateway.policy, gateway.metrics
    cost = policy.charge_micros(decision, model, usage, None, output_bytes)
    context = policy.context_tokens(decision, usage, output_bytes)
    tokens = _tokens(usage)
    cached = tokens.get("cache_read_tokens", 0)
    price = policy.pricing.get(model)
    savings = price.cache_savings_micros(cached) if cached and price is not None else 0
    logged = None if record is None else turn_event(record, 200, tokens, savings)
    await finish(gateway, decision, model, cost, answer, context_tokens=context, event=logged)
    metrics.cost.inc(cost / 1_000_000)
    if cached:
        metrics.cache_read_tokens.labels(gateway.metric_provider(model)).inc(cached)
        metrics.cache_savings.inc(savings / 1_000_000)
    return cost


def turn_event(
    record: dict[str, Any], status: int, tokens: dict[str, int] | None = None, savings: int = 0
) -> dict[str, Any]:
    """What the gateway adds to a turn's event in its session's log (see
    `llm_sessions.flow.events`): the API, the client, the status, the latency so far and,
    for a served turn, the tokens and what the cache saved."""
    event: dict[str, Any] = {
        "api": record["api"],
        "stream": record["stream"],
        "status": status,
        "latency_ms": round((time.perf_counter() - record["started"]) * 1000, 1),
    }
    for optional in ("agent", "complete", "translated", "dropped_tools"):
        if optional in record:
            event[optional] = record[optional]
    if tokens:
        event.update(tokens)
    if savings:
        event["cache_savings_micros"] = savings
    return event


def _tokens(usage: Any) -> dict[str, int]:
    """A usage block's token counts as a turn's event keeps them ({} when unreadable)."""
    if usage is None:
        return {}
    try:
        t = token_usage(usage)
    except (TypeError, ValueError, ArithmeticError):
        return {}
    return {
        "input_tokens": t.input,
        "output_tokens": t.output,
        "cache_read_tokens": t.cache_read,
        "cache_write_tokens": t.cache_write + t.cache_write_1h,
    }


async def finish(
    gateway: Gateway,
    decision: Decision,
    model: str | None,
    cost: int,
    answer: tuple[str | None, list[str]] | None = None,
    billed_later: bool = False,
    context_tokens: int | None = None,
    event: dict[str, Any] | None = None,
) -> None:
    """`afinish` (which retries the store for store.finish_retry_ms), with `event` added
    to the turn's event; a store that is still down then must not turn an answered
    request into an error: the cost that could not be recorded is counted and logged."""
    if decision.settled_total is not None:
        return
    if decision.key is None and event is not None and gateway.policy.on_event is not None:
        # no session, no log: the turn still counts in the console's overview
        outcome = "failed" if model is None else "served"
        turn = {**event, "reason": decision.reason, "outcome": outcome,
                "model": model or decision.model, "cost_micros": cost}  # fmt: skip
        gateway.console.overview.add(decision.scope, turn, time.time())
    try:
        answer_id, items = answer if answer is not None else (None, [])
        await gateway.policy.afinish(
            decision,
            served_model=model,
            cost_micros=cost,
            response_id=answer_id,
            item_ids=items,
            billed_later=billed_later,
            context_tokens=context_tokens,
            event=event,
        )
    except StoreUnavailable as exc:
        decision.settle(-1)  # given up: never tried again for this request
        gateway.metrics.unrecorded_cost.inc(cost / 1_000_000)
        errors_log.error(
            "could not record a request's outcome (session %s, model %s, %s USD): %s",
            cap(decision.session_id),
            cap(model),
            format_usd(cost),
            exc,
        )


def cache_read(usage: Any) -> int:
    """Prompt tokens a usage block says were read from the cache (0 when unreadable)."""
    try:
        return token_usage(usage).cache_read if usage is not None else 0
    except ValueError:
        return 0
