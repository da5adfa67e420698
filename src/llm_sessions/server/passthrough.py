"""The endpoints passed to an upstream without session rules: token counting (with the
model the session would use), embeddings (priced per tenant), and the model list."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import InvalidRequest, InvalidSessionId
from ..protocols import messages
from ..routing import estimate_prompt_tokens
from .access_log import log_request
from .model_routes import check_api, check_explicit_model, route, served_on
from .parsing import check_counts, parse_body, read_body
from .rejections import Reject, rejection
from .upstream import Upstream, UpstreamBroke, read_json
from .wire import MESSAGES

if TYPE_CHECKING:
    from .gateway import Gateway

__all__ = ["count_tokens", "embeddings", "model", "models"]


async def count_tokens(gateway: Gateway, request: Request) -> Response:
    """``POST /v1/messages/count_tokens``: forwarded to the upstream with the model the
    session would use (the gateway's own estimate when that upstream speaks another API);
    no session effect."""
    try:
        scope = gateway.authorize(request)
        body = parse_body(await read_body(request, gateway.settings.max_body_bytes))
        check_counts(body)
        check_api(gateway.settings, MESSAGES)
        check_explicit_model(gateway, body, MESSAGES)
        try:  # a count needs no max_tokens; the view does
            view = messages.to_view({"max_tokens": 1, **body})
            peeked = await gateway.policy.apeek(request.headers, view, scope=scope)
        except (InvalidRequest, InvalidSessionId) as exc:
            raise Reject(400, str(exc), param=exc.param) from None
        model = served_on(gateway.settings, peeked, MESSAGES)
        if model is None:
            raise Reject(
                400,
                f"the session's model {peeked[:256]!r} has no model after it that an "
                "upstream of the messages API serves",
                param="model",
            )
        if gateway.settings.sends_as(model, MESSAGES.api) != MESSAGES.api:
            # its upstream speaks another API, which counts nothing: the gateway's estimate
            estimate = estimate_prompt_tokens(view["messages"], view.get("tools"))
            headers = {"X-Session-Model": model, "X-Session-Translated": "estimated"}
            return JSONResponse({"input_tokens": estimate}, headers=headers)
        client, sent_as, headers = route(gateway, model, request, MESSAGES.forward_headers)
        payload = {**body, "model": sent_as}
        failed = "counting tokens failed upstream"
        path = "/messages/count_tokens"
        status, content, media = await _relay(client, model, payload, path, headers, failed)
    except Reject as reject:
        return rejection(reject, MESSAGES)
    return Response(content, status, media_type=media, headers={"X-Session-Model": model})


async def embeddings(gateway: Gateway, request: Request) -> Response:
    """``POST /v1/embeddings``: passed to the upstream that serves embeddings for the
    model (the model map applies), with the gateway's auth, tenancy, body limit and
    access log, and no session rules. Its cost, when priced, counts per tenant."""
    started = time.perf_counter()
    record: dict[str, Any] = {"session": None, "api": "embeddings", "reason": "passthrough"}
    try:
        scope = gateway.authorize(request)
        body = parse_body(await read_body(request, gateway.settings.max_body_bytes))
        model = body.get("model")
        if not isinstance(model, str) or not model or len(model) > 256:
            raise Reject(400, "'model' must be a model id", param="model")
        found = gateway.settings.route(model)
        if found is None or "embeddings" not in found[0].apis:
            raise Reject(
                400, f"model {model[:256]!r} does not go to an upstream that serves "
                "embeddings (upstream.apis)", param="model",
            )  # fmt: skip
        record["model"] = model
        client, sent_as, headers = route(gateway, model, request)
        status, content, media = await _relay(
            client, model, {**body, "model": sent_as}, "/embeddings", headers, "the upstream failed"
        )
        if status == 200:
            _count_embedding(gateway, model, scope, content, record)
        response: Response = Response(content, status, media_type=media)
    except Reject as reject:
        response = rejection(reject)
    log_request(gateway.metrics, record, response.status_code, started)
    return response


async def _relay(
    client: Upstream,
    model: str,
    payload: dict[str, Any],
    path: str,
    headers: dict[str, str],
    failed: str,
) -> tuple[int, bytes, str]:
    """One attempt's status, body and media type; 502 (`failed`: why) when it got none."""
    attempt = await client.attempt(model, payload, path, headers)
    if attempt.response is None:
        raise Reject(502, f"{failed}: {attempt.failure}", "upstream_error")
    try:
        content = await attempt.response.aread()
    except UpstreamBroke:
        raise Reject(502, f"{failed}: broken response", "upstream_error") from None
    finally:
        await attempt.response.aclose()
    media = attempt.response.headers.get("content-type", "application/json")
    return attempt.response.status_code, content, media


def _count_embedding(
    gateway: Gateway, model: str, scope: str, content: bytes, record: dict[str, Any]
) -> None:
    price = gateway.policy.pricing.get(model)
    if price is None:
        return
    try:
        usage = read_json(content).get("usage") or {}
        tokens = usage.get("prompt_tokens") or usage.get("total_tokens") or 0
        cost = price.cost_micros(int(tokens), 0)
    except (ValueError, AttributeError, TypeError):
        return
    record["cost"] = cost
    # a tenant is a key of the key file; without one, callers are not a bounded set
    tenant = (scope[:8] or "none") if gateway.api_keys is not None else "all"
    gateway.metrics.embeddings_cost.labels(tenant).inc(cost / 1_000_000)


async def models(gateway: Gateway, request: Request) -> Response:
    """``GET /v1/models``."""
    try:
        gateway.authorize(request)
    except Reject as reject:
        return rejection(reject)
    return JSONResponse({"object": "list", "data": list(gateway.model_objects.values())})


async def model(gateway: Gateway, request: Request) -> Response:
    """``GET /v1/models/{id}``: a profile or a routing-table model; 404 otherwise."""
    model_id = request.path_params["model_id"]
    try:
        gateway.authorize(request)
        found = gateway.model_objects.get(model_id)
        if found is None:
            raise Reject(
                404, f"the model {model_id[:256]!r} is not served by this gateway",
                "not_found_error", code="model_not_found",
            )  # fmt: skip
    except Reject as reject:
        return rejection(reject)
    return JSONResponse(found)
