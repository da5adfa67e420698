"""The OpenAI Responses API (``POST /v1/responses``): its request as the flow's view, the
id and usage of its answer, and its stream events. Errors are OpenAI's shape, as for
chat completions."""

from __future__ import annotations

import re
from typing import Any

from ..errors import InvalidRequest
from ..fingerprint import utf8_len
from .chat import Verdict

__all__ = [
    "TERMINAL_EVENTS",
    "UNREAD_EVENTS",
    "output_item_ids",
    "read_stream_event",
    "runs_in_background",
    "still_running",
    "response_id",
    "text_bytes",
    "to_view",
]

#: The events that end a stream; the one that comes is held until the cost is recorded.
TERMINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")

# Fields the flow reads besides the messages (model, tools, the id sources).
_KEPT = ("model", "tools", "metadata", "previous_response_id", "conversation", "store",
         "prompt_cache_key")  # fmt: skip
_ITEM_ID = re.compile(r"[\x21-\x7e]{1,256}")
# Items the model produced: they make up the assistant's turn in the view.
_ASSISTANT_ITEMS = ("function_call", "custom_tool_call", "reasoning")
# Deltas of generated text, by event type: what the stream meter counts.
_DELTAS = (
    "response.output_text.delta",
    "response.refusal.delta",
    "response.function_call_arguments.delta",
    "response.custom_tool_call_input.delta",
    "response.reasoning_summary_text.delta",
    "response.reasoning_text.delta",
)

#: Stream events (by their ``event:`` name) a meter need not parse as they pass: the
#: deltas (their text is counted only when no usage comes) and what carries nothing the
#: gateway reads.
UNREAD_EVENTS = {
    **{kind.encode(): "defer" for kind in _DELTAS},
    **dict.fromkeys((b"response.in_progress", b"response.output_item.added",
                     b"response.output_item.done", b"response.content_part.added",
                     b"response.content_part.done", b"response.output_text.done",
                     b"response.function_call_arguments.done"), "pass"),
}  # fmt: skip


def to_view(body: dict[str, Any]) -> dict[str, Any]:
    """The request as the flow reads it (see `llm_sessions.protocols`): ``instructions``
    as a system message, ``input`` (a string, or items) as messages, function calls (with
    their arguments) on the assistant message of their turn, their outputs as ``tool``
    messages; `InvalidRequest` naming the field when the body is not a Responses request."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        if instructions:
            messages.append({"role": "system", "content": instructions})
    elif isinstance(instructions, list):
        messages += _items(instructions, "instructions")
    elif instructions is not None:
        raise InvalidRequest("'instructions' must be a string or an array", "instructions")
    given = body.get("input")
    references: list[str] = []
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    elif isinstance(given, list):
        messages += _items(given, "input", references)
    elif given is not None:
        raise InvalidRequest("'input' must be a string or an array of items", "input")
    if not messages:
        raise InvalidRequest("'input' is required: a string or a non-empty array", "input")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", "tools")
    view: dict[str, Any] = {"messages": messages}
    if references:  # stored state it continues, like previous_response_id
        view["item_references"] = references
    limit = body.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidRequest("'max_output_tokens' must be a positive integer",
                                 "max_output_tokens")  # fmt: skip
        view["max_tokens"] = limit
    conversation = body.get("conversation")
    ids = [("previous_response_id", body.get("previous_response_id"))]
    if isinstance(conversation, dict):
        ids.append(("conversation.id", conversation.get("id")))
    else:
        ids.append(("conversation", conversation))
    for name, value in ids:  # an id that is there names something: blank, it can't
        if isinstance(value, str) and not value.strip():
            raise InvalidRequest(f"'{name}' must not be blank", name)
    for key in _KEPT:
        if key in body:
            view[key] = body[key]
    return view


def _items(
    items: list[Any], where: str, references: list[str] | None = None
) -> list[dict[str, Any]]:
    """Input items as view messages. What the model produced in a row (reasoning, text,
    tool calls) is one assistant message, as a chat completion would have it. The ids of
    ``item_reference`` items go to `references`."""
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        here = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"'{here}' must be an object", here)
        kind = item.get("type", "message")
        if not isinstance(kind, str):
            raise InvalidRequest(f"'{here}.type' must be a string", f"{here}.type")
        if kind == "message" or (kind not in _ASSISTANT_ITEMS and "role" in item):
            role = item.get("role")
            if not isinstance(role, str):
                raise InvalidRequest(f"'{here}.role' must be a string", f"{here}.role")
            content = _content(item.get("content"), here)
            if role == "assistant":
                _assistant(out)["content"] += content
            else:
                out.append({"role": role, "content": content})
        elif kind in ("function_call", "custom_tool_call"):
            arguments = item.get("arguments") if kind == "function_call" else item.get("input")
            call = {"name": item.get("name"), "arguments": arguments}
            _assistant(out)["tool_calls"].append(
                {"id": item.get("call_id"), "type": "function", "function": call}
            )
        elif kind == "reasoning":
            summary = item.get("summary")
            if summary is not None and not isinstance(summary, list):
                raise InvalidRequest(f"'{here}.summary' must be an array", f"{here}.summary")
            texts = [s.get("text") for s in summary or () if isinstance(s, dict)]
            text = "\n".join(t for t in texts if isinstance(t, str))
            encrypted = item.get("encrypted_content")
            parts = _assistant(out)["content"]
            parts.append({"type": "text", "text": text})
            if isinstance(encrypted, str) and encrypted:  # sent back: it counts as prompt
                parts.append({"type": "reasoning", "encrypted_content": encrypted})
        elif kind.endswith("_output"):  # function_call_output and the built-in tools' outputs
            output = item.get("output")
            result = output if isinstance(output, str) else _content(output, here)
            out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": result})
        elif kind == "item_reference":  # stored upstream: nothing here to read but its id
            ident = item.get("id")
            if not isinstance(ident, str) or not _ITEM_ID.fullmatch(ident):
                raise InvalidRequest(
                    f"'{here}.id' must be an item id (1 to 256 printable ASCII characters, "
                    "no spaces)",
                    f"{here}.id",
                )
            if references is not None:
                references.append(ident)
        else:  # a built-in tool's call (web search, shell...): the model's turn, as JSON
            _assistant(out)["content"].append(dict(item))
    return out


def _assistant(out: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message at the end of `out`, opened if the last one is not one."""
    if not out or out[-1]["role"] != "assistant":
        out.append({"role": "assistant", "content": [], "tool_calls": []})
    last = out[-1]
    if not isinstance(last["content"], list):
        last["content"] = [{"type": "text", "text": last["content"]}]
    last.setdefault("tool_calls", [])
    return last


def _content(content: Any, where: str) -> list[dict[str, Any]]:
    """A message's content as view parts: text (input, output, refusals) as text parts,
    media as typed parts, anything else as it is."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if content is None:
        return []
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}.content' must be a string or an array",
                             f"{where}.content")  # fmt: skip
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise InvalidRequest(f"'{where}.content[{j}]' must be an object",
                                 f"{where}.content[{j}]")  # fmt: skip
        kind = part.get("type")
        text = part.get("text") if kind != "refusal" else part.get("refusal")
        if kind in ("input_text", "output_text", "text", "refusal", "summary_text"):
            parts.append({"type": "text", "text": text if isinstance(text, str) else ""})
        elif kind in ("input_image", "input_file", "input_audio"):
            parts.append({"type": kind})
        else:
            parts.append(dict(part))
    return parts


# -- responses -------------------------------------------------------------------------------


def response_id(data: Any) -> str | None:
    """The id of a response object (``resp_...``), if it has one."""
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def runs_in_background(body: dict[str, Any]) -> bool:
    """The request asks for a background response: answered at once (``queued``), its
    output fetched later (a retrieval, or a stream resumed)."""
    return body.get("background") is True


def still_running(data: Any) -> bool:
    """A response object whose output is still to come (``queued``, ``in_progress``)."""
    return isinstance(data, dict) and data.get("status") in ("queued", "in_progress")


def output_item_ids(data: Any) -> list[str]:
    """The ids of a response object's output items (messages, tool calls, reasoning):
    what a later ``item_reference`` names."""
    output = data.get("output") if isinstance(data, dict) else None
    if not isinstance(output, list):
        return []
    ids = (item.get("id") for item in output if isinstance(item, dict))
    return [i for i in ids if isinstance(i, str) and i]


def text_bytes(data: Any) -> int:
    """UTF-8 bytes a response generated: output text, refusals, tool-call arguments and
    reasoning summaries (to estimate its cost when no usage came)."""
    total = 0
    output = data.get("output") if isinstance(data, dict) else None
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict):
            continue
        for key in ("arguments", "input"):
            if isinstance(item.get(key), str):
                total += utf8_len(item[key])
        for part in [*(item.get("content") or ()), *(item.get("summary") or ())]:
            if isinstance(part, dict):
                for key in ("text", "refusal"):
                    if isinstance(part.get(key), str):
                        total += utf8_len(part[key])
    return total


def read_stream_event(meter: Any, event: dict[str, Any]) -> Verdict:
    """Meter one stream event (`meter` has ``usage``, ``text_bytes``, ``answer_id`` and
    ``answer_items``): the response's id from the first event that carries the response,
    its output items' ids from the terminal event, generated bytes
    from the deltas, and the usage of the terminal event (``response.completed``,
    ``response.incomplete`` or ``response.failed``), which is held back until the cost is
    recorded."""
    kind = event.get("type")
    if kind in _DELTAS:
        delta = event.get("delta")
        if isinstance(delta, str):
            meter.text_bytes += utf8_len(delta)
        return "pass"
    response = event.get("response")
    if isinstance(response, dict):
        if meter.answer_id is None:
            meter.answer_id = response_id(response)
        if kind in TERMINAL_EVENTS:
            usage = response.get("usage")
            if isinstance(usage, dict):
                meter.usage = usage
            meter.answer_items = output_item_ids(response)
            return "hold"
    return "pass"
