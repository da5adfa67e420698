"""The Anthropic Messages API (``POST /v1/messages``): its request as the flow's view, its
usage, its stream events and its error shape."""

from __future__ import annotations

import json
from typing import Any

from ..errors import InvalidRequest
from ..fingerprint import utf8_len
from .chat import Verdict

__all__ = [
    "ERROR_TYPES",
    "MIN_THINKING_BUDGET",
    "UNREAD_EVENTS",
    "error_body",
    "fit_thinking",
    "read_stream_event",
    "text_bytes",
    "to_view",
]

#: Anthropic's error type for each status the gateway answers with.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


#: Stream events (by their ``event:`` name) a meter need not parse as they pass: the text
#: deltas (counted only when no usage comes) and what carries nothing the gateway reads.
UNREAD_EVENTS = {
    b"content_block_delta": "defer",
    b"content_block_start": "pass",
    b"content_block_stop": "pass",
    b"ping": "pass",
}


def error_body(status: int, message: str, kind: str | None = None) -> dict[str, Any]:
    """``{"type": "error", "error": {"type": ..., "message": ...}}``."""
    return {
        "type": "error",
        "error": {"type": kind or ERROR_TYPES.get(status, "api_error"), "message": message},
    }


def to_view(body: dict[str, Any]) -> dict[str, Any]:
    """The request as the flow reads it (see `llm_sessions.protocols`); `InvalidRequest`
    naming the field when the body is not a Messages request."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", "messages")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequest("'max_tokens' is required: a positive integer", "max_tokens")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", "tools")
    view: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        view += _system(system)
    for i, message in enumerate(messages):
        # user and assistant, and system messages among them (Claude Code sends those)
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"'messages[{i}]' must be an object with a string 'role'", f"messages[{i}]"
            )
        view += _message(message, f"messages[{i}]")
    out: dict[str, Any] = {"messages": view, "max_tokens": max_tokens}
    for key in ("model", "tools", "metadata"):
        if key in body:
            out[key] = body[key]
    return out


def _system(system: Any) -> list[dict[str, Any]]:
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if not isinstance(system, list):
        raise InvalidRequest("'system' must be a string or an array of text blocks", "system")
    parts = [_part(block, "system") for block in system]
    return [{"role": "system", "content": [p for p in parts if p is not None]}]


def _message(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """One Messages message as view messages: its text and media parts, its tool calls,
    and each tool result as a ``tool`` message of its own (tool results first, as in the
    conversation they answer)."""
    role, content = message["role"], message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}.content' must be a string or an array", f"{where}.content")
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        here = f"{where}.content[{j}]"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InvalidRequest(f"'{here}' must be an object with a 'type'", here)
        kind = block["type"]
        if kind == "tool_use":
            function = {"name": block.get("name"), "arguments": _json(block.get("input", {}))}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        elif kind == "tool_result":
            result: dict[str, Any] = {"role": "tool", "tool_call_id": block.get("tool_use_id")}
            inner = block.get("content")
            if isinstance(inner, list):
                result["content"] = [p for p in (_part(b, here) for b in inner) if p is not None]
            else:
                result["content"] = inner if isinstance(inner, str) else ""
            if "cache_control" in block:
                result["cache_control"] = block["cache_control"]
            results.append(result)
        else:
            part = _part(block, here)
            if part is not None:
                parts.append(part)
    out: list[dict[str, Any]] = list(results)
    if parts or calls or not results:
        entry: dict[str, Any] = {"role": role, "content": parts}
        if calls:
            entry["tool_calls"] = calls
        out.append(entry)
    return out


def _part(block: Any, where: str) -> dict[str, Any] | None:
    """A content block as a view part: text (thinking included: it is sent back and
    billed) as a text part, media as a typed part, anything else as it is."""
    if not isinstance(block, dict):
        raise InvalidRequest(f"'{where}' must hold content blocks (objects)", where)
    kind = block.get("type")
    part: dict[str, Any]
    if kind == "text":
        part = {
            "type": "text",
            "text": block.get("text") if isinstance(block.get("text"), str) else "",
        }
    elif kind in ("thinking", "redacted_thinking"):
        text = block.get("thinking") or block.get("data") or ""
        part = {"type": "text", "text": text if isinstance(text, str) else ""}
    elif kind in ("image", "document"):
        part = {"type": kind}
    else:
        part = dict(block)
    if "cache_control" in block:
        part["cache_control"] = block["cache_control"]
    return part


def _json(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


# -- responses -------------------------------------------------------------------------------


#: The least thinking budget the Messages API accepts.
MIN_THINKING_BUDGET = 1024


def fit_thinking(body: dict[str, Any], limit: int) -> None:
    """Keep an extended-thinking budget within an output limit lowered to `limit` (the
    API requires ``budget_tokens < max_tokens``): scaled down with the limit, at least
    `MIN_THINKING_BUDGET`; thinking is turned off when even that does not fit."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return
    budget = thinking.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < limit:
        return
    asked = body.get("max_tokens")
    share = budget / asked if isinstance(asked, int) and asked > budget else 0.5
    scaled = max(int(limit * share), MIN_THINKING_BUDGET)
    if scaled < limit:
        body["thinking"] = {**thinking, "budget_tokens": scaled}
    else:
        body["thinking"] = {"type": "disabled"}


def text_bytes(message: Any) -> int:
    """UTF-8 bytes a Messages response generated: its text, tool inputs and thinking (to
    estimate its cost when no usage came)."""
    total = 0
    content = message.get("content") if isinstance(message, dict) else None
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        for key in ("text", "thinking"):
            if isinstance(block.get(key), str):
                total += utf8_len(block[key])
        if block.get("type") == "tool_use":
            total += utf8_len(_json(block.get("input", {})))
    return total


def read_stream_event(meter: Any, event: dict[str, Any]) -> Verdict:
    """Meter one stream event (`meter` has ``usage`` and ``text_bytes``): the usage of
    ``message_start`` updated by every ``message_delta``, and the generated bytes of the
    ``content_block_delta`` events. The event that ends the stream (``message_stop``) is
    held back until the cost is recorded."""
    kind = event.get("type")
    if kind == "message_start":
        message = event.get("message")
        usage = message.get("usage") if isinstance(message, dict) else None
        if isinstance(usage, dict):
            meter.usage = dict(usage)
    elif kind == "message_delta":
        usage = event.get("usage")
        if isinstance(usage, dict):  # cumulative counts: they replace the start's
            meter.usage = {
                **(meter.usage or {}),
                **{k: v for k, v in usage.items() if v is not None},
            }
    elif kind == "content_block_delta":
        delta = event.get("delta")
        if isinstance(delta, dict):
            for key in ("text", "partial_json", "thinking"):
                value = delta.get(key)
                if isinstance(value, str):
                    meter.text_bytes += utf8_len(value)
    elif kind == "message_stop":
        return "hold"
    return "pass"
