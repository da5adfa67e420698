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

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_MESSAGES",
    "MAX_PARTS",
    "MAX_TOOLS",
    "check_counts",
    "parse_body",
    "read_body",
    "read_stream_flag",
]

#: The deepest nesting of arrays and objects a request body may have.
MAX_JSON_DEPTH = 128
#: Most tools one request may offer (OpenAI's APIs allow 128; MCP-heavy agents send more).
MAX_TOOLS = 1024
#: Most messages (or Responses input items) one request may hold (the Messages API's limit).
MAX_MESSAGES = 100_000
#: Most content parts (blocks) all of a request's messages may hold together.
MAX_PARTS = 100_000
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


def check_counts(body: dict[str, Any]) -> None:
    """A 400 naming the field for more tools, messages or content parts than an LLM API
    takes: the gateway's work per request stays bounded whatever the body's shape."""
    tools = body.get("tools")
    if isinstance(tools, list) and len(tools) > MAX_TOOLS:
        raise Reject(400, f"'tools' may hold at most {MAX_TOOLS} tools", param="tools")
    for field in ("messages", "input"):
        items = body.get(field)
        if not isinstance(items, list):
            continue
        if len(items) > MAX_MESSAGES:
            raise Reject(400, f"'{field}' may hold at most {MAX_MESSAGES} items", param=field)
        parts = 0
        for item in items:
            content = item.get("content") if type(item) is dict else None
            if type(content) is list:
                parts += len(content)
        if parts > MAX_PARTS:
            raise Reject(
                400, f"'{field}' may hold at most {MAX_PARTS} content parts in all", param=field
            )


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
    floats: a body with a number of 19 digits or more, and any it refuses, goes to the
    standard library's decoder, which also says what is wrong). The checks read the bytes
    (strings cut out) at the speed of C, never every value in Python: a body's cost is
    bounded by a few passes over its bytes whatever its shape."""
    body = None
    with contextlib.suppress(orjson.JSONDecodeError):
        body = orjson.loads(raw)
    structure = None  # the body without its strings: numbers, brackets and the rest
    if isinstance(body, dict) and _long_number(raw):
        structure = _STRING.sub(b'""', raw)
    if not isinstance(body, dict) or (structure and _long_number(structure)):
        try:
            body = _STRICT_JSON.decode(raw.decode("utf-8"))
        except RecursionError:
            raise Reject(400, "the request body is nested too deeply") from None
        except ValueError as exc:  # UnicodeDecodeError included
            raise Reject(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Reject(400, "the request body must be a JSON object")
    # brackets in strings only make the bytes look deeper: exact only when they do
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _deeper_than(raw, MAX_JSON_DEPTH):
        if structure is None:
            structure = _STRING.sub(b'""', raw)
        if _deeper_than(structure, MAX_JSON_DEPTH):
            raise Reject(400, f"the request body is nested more than {MAX_JSON_DEPTH} levels deep")
    if b"\\u" in raw and _LONE_SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise Reject(
                400, "the request body has a lone UTF-16 surrogate (\\ud800-\\udfff)"
            ) from None
    return body


# A JSON string (possessive: no backtracking), the table that makes every digit a "0" (a
# run of 19 may be an integer past 64 bits: 2**63 has 19), and the one that keeps only
# brackets, as one kind.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def _long_number(text: bytes) -> bool:
    """`text` has a run of 19 digits or more (two passes of C: faster than a regex)."""
    return _LONG_RUN in text.translate(_DIGITS)


def _deeper_than(structure: bytes, limit: int) -> bool:
    """JSON text without strings (`structure`) nests arrays and objects deeper than
    `limit`: each pass removes the innermost pairs (one level), `limit` passes at most."""
    brackets = structure.translate(_BRACKETS, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)
