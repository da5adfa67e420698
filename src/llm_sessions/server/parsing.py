"""Reading a request: its body within the size limit, as strict JSON (UTF-8, no
NaN/Infinity, no lone surrogates, bounded nesting, an object), and the stream options
every LLM API shares. Anything wrong is a 4xx `Reject` naming the problem."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import orjson
from starlette.requests import Request

from .rejections import Reject

__all__ = ["MAX_JSON_DEPTH", "parse_body", "read_body", "read_stream_flag"]

#: The deepest nesting of arrays and objects a request body may have.
MAX_JSON_DEPTH = 128
_LONE_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body; 413 past `limit` bytes (declared or sent)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Reject(413, f"request body is over the {limit}-byte limit", code="body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Reject(413, f"request body is over the {limit}-byte limit", code="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def read_stream_flag(body: dict[str, Any]) -> bool:
    """``stream`` (false when absent); 400 for it or ``stream_options`` malformed."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise Reject(400, "'stream' must be true or false", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise Reject(400, "'stream_options' must be an object", param="stream_options")
    include_usage = (options or {}).get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise Reject(
            400,
            "'stream_options.include_usage' must be true or false",
            param="stream_options.include_usage",
        )
    return stream


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder, made once (json.loads with any option builds a new one on every call).
_STRICT_JSON = json.JSONDecoder(parse_constant=_no_constants)


def parse_body(raw: bytes) -> dict[str, Any]:
    """A request body as strict JSON: UTF-8, no NaN/Infinity, no lone surrogates, nested
    at most `MAX_JSON_DEPTH` deep, an object. Anything else is a 400 naming the problem.

    orjson reads it when it can read it exactly (it turns integers past 64 bits into
    floats: a body with such a float, and any it refuses, goes to the standard library's
    decoder, which also says what is wrong)."""
    body = None
    with contextlib.suppress(orjson.JSONDecodeError):
        body = orjson.loads(raw)
    if not isinstance(body, dict) or _may_hold_huge_int(body):
        try:
            body = _STRICT_JSON.decode(raw.decode("utf-8"))
        except RecursionError:
            raise Reject(400, "the request body is nested too deeply") from None
        except ValueError as exc:  # UnicodeDecodeError included
            raise Reject(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Reject(400, "the request body must be a JSON object")
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _depth(body) > MAX_JSON_DEPTH:
        raise Reject(400, f"the request body is nested more than {MAX_JSON_DEPTH} levels deep")
    if b"\\u" in raw and _LONE_SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise Reject(
                400, "the request body has a lone UTF-16 surrogate (\\ud800-\\udfff)"
            ) from None
    return body


def _may_hold_huge_int(value: Any) -> bool:
    """`value` holds a whole float of 2**63 or more: perhaps an integer orjson rounded."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is float and abs(item) >= 2.0**63 and item.is_integer():
            return True
    return False


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
