"""The stored-response endpoints of the Responses API (``GET``/``DELETE
/v1/responses/{id}``, ``GET .../input_items``, ``POST .../cancel``): passed to the upstream
that made that response, for the tenant whose session it is; 404 for anyone else and for
ids the gateway did not serve."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp
from starlette.requests import Request
from starlette.responses import Response

from ..errors import StoreUnavailable
from ..protocols import responses
from .access_log import log_request
from .callers import headers_for
from .parsing import read_body
from .rejections import Reject, rejection
from .upstream import UpstreamBroke, read_json

if TYPE_CHECKING:
    from .gateway import Gateway

__all__ = ["stored_response"]

errors_log = logging.getLogger("llm_sessions.gateway")


async def stored_response(gateway: Gateway, request: Request) -> Response:
    """One request about a stored response, relayed to the upstream holding it."""
    started = time.perf_counter()
    record: dict[str, Any] = {"session": None, "api": "responses", "reason": "passthrough"}
    response_id = request.path_params["response_id"]
    try:
        scope = gateway.authorize(request)
        try:
            found = await gateway.policy.aresponse_session(response_id, scope)
        except StoreUnavailable:
            raise Reject(503, "the session store is unavailable", "server_error") from None
        upstream = gateway.upstreams.get(found[1]) if found is not None else None
        if found is None or upstream is None:
            raise Reject(
                404, f"no response {response_id[:256]!r} for this caller",
                "not_found_error", code="response_not_found",
            )  # fmt: skip
        record["session"] = found[0]
        headers = headers_for(upstream.settings, request)
        path = request.url.path.removeprefix("/v1")
        body = None
        if request.method == "POST":
            body = await read_body(request, gateway.settings.max_body_bytes)
        try:
            answer = await upstream.send(request.method, path, headers, body, request.url.query)
            try:
                content = await answer.aread()
            finally:
                await answer.aclose()
        except (aiohttp.ClientError, TimeoutError, UpstreamBroke) as exc:
            raise Reject(
                502, f"the upstream failed: {type(exc).__name__}", "upstream_error"
            ) from None
        if upstream.refuses_our_key(answer.status_code):
            upstream.log_refusal(path, answer.status_code, content)
            raise Reject(502, "the upstream refused the gateway's key", "upstream_error")
        if answer.status_code == 200 and not path.endswith("/input_items"):
            record["cost"] = await _bill_if_done(gateway, response_id, scope, content)
        media = answer.headers.get("content-type", "application/json")
        result: Response = Response(content, answer.status_code, media_type=media)
    except Reject as reject:
        result = rejection(reject)
    log_request(gateway.metrics, record, result.status_code, started)
    return result


async def _bill_if_done(gateway: Gateway, response_id: str, scope: str, content: bytes) -> int:
    """A background response seen done (or cancelled) with its usage: billed to its
    session, once (`SessionPolicy.abill_response`). What was charged."""
    try:
        data = read_json(content)
    except ValueError:
        return 0
    if not isinstance(data, dict) or data.get("background") is not True:
        return 0
    usage = data.get("usage")
    if not isinstance(usage, dict) or responses.still_running(data):
        return 0
    try:
        cost = await gateway.policy.abill_response(response_id, usage, scope)
    except StoreUnavailable as exc:
        errors_log.error("could not bill background response %.256s: %s", response_id, exc)
        return 0
    gateway.metrics.cost.inc(cost / 1_000_000)
    return cost
