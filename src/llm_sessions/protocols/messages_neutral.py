"""The Anthropic Messages API to and from the neutral form (`neutral`): its request as a
`Turn` and a `Turn` as its request, its response as an `Answer` and back, its stream
events as neutral events and back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .neutral import (
    Answer,
    Event,
    File,
    Finish,
    FinishReason,
    Image,
    Message,
    Part,
    Reasoning,
    ReasoningDelta,
    Start,
    StreamError,
    Text,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    Turn,
    Untranslatable,
    Usage,
    UsageEvent,
    answer_id,
    count,
    sse,
    tool_name,
)

__all__ = [
    "API",
    "StreamReader",
    "StreamWriter",
    "read_answer",
    "read_turn",
    "write_answer",
    "write_turn",
]

API = "messages"
PROVIDER = "anthropic"  # whose reasoning signatures these are
_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "refusal",
}
_STOP_OUT = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "refusal": "refusal",
    "error": "end_turn",
}
# thinking budgets for an effort asked in another API (tokens; at least the API's 1,024)
_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}


# -- requests -------------------------------------------------------------------------------


def read_turn(body: dict[str, Any], target: str = "target", drop_tools: bool = False) -> Turn:
    """A Messages request as a turn for the `target` API (`to_view` has checked its shape
    already); `Untranslatable` for what only Anthropic's servers do (server tools, left
    out instead with `drop_tools`, named in ``dropped_tools``)."""
    turn = Turn(model=str(body.get("model") or ""), messages=[])
    system = body.get("system")
    if isinstance(system, str):
        turn.system = [Text(system)]
    elif isinstance(system, list):
        turn.system = [
            Text(b.get("text", ""), b.get("cache_control")) for b in system if isinstance(b, dict)
        ]
    for i, message in enumerate(body.get("messages") or []):
        turn.messages.append(_read_message(message, f"messages[{i}]"))
    for i, tool in enumerate(body.get("tools") or []):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or kind not in (None, "custom"):
            if drop_tools:
                turn.dropped_tools.append(tool_name(tool))
                continue
            raise Untranslatable(f"tools[{i}]", target, f"{kind!r} is a tool Anthropic runs")
        turn.tools.append(
            Tool(
                tool.get("name", ""),
                tool.get("description"),
                tool.get("input_schema") or {},
                tool.get("strict"),
                tool.get("cache_control"),
            )
        )
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        turn.tool_choice = {"auto": "auto", "any": "required", "none": "none"}.get(str(kind))
        if kind == "tool":
            turn.tool_choice = {"name": str(choice.get("name", ""))}
        if choice.get("disable_parallel_tool_use") is True:
            turn.parallel_tool_calls = False
    turn.max_output = body.get("max_tokens")
    turn.temperature = body.get("temperature")
    turn.top_p = body.get("top_p")
    stops = body.get("stop_sequences")
    turn.stop = [s for s in stops if isinstance(s, str)] if isinstance(stops, list) else []
    turn.stream = body.get("stream") is True
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        turn.reasoning_budget = budget if isinstance(budget, int) else _BUDGETS["medium"]
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        turn.user = metadata["user_id"]
    return turn


def _read_message(message: dict[str, Any], where: str) -> Message:
    role = message.get("role")
    content = message.get("content")
    if isinstance(content, str):
        parts: list[Part] = [Text(content)]
    else:
        parts = [
            p
            for j, b in enumerate(content or [])
            if (p := _read_block(b, f"{where}.content[{j}]")) is not None
        ]
    return Message(
        "assistant" if role == "assistant" else "system" if role == "system" else "user", parts
    )


def _read_block(block: dict[str, Any], where: str) -> Part | None:
    kind = block.get("type")
    cache = block.get("cache_control")
    if kind == "text":
        return Text(str(block.get("text", "")), cache)
    if kind == "image":
        image: Image = _read_source(block.get("source") or {}, cache, Image)
        return image
    if kind == "document":
        source = block.get("source") or {}
        if source.get("type") == "text":
            return Text(str(source.get("data", "")), cache)
        file: File = _read_source(source, cache, File, name=block.get("title"))
        return file
    if kind == "tool_use":
        arguments = json.dumps(block.get("input", {}), ensure_ascii=False)
        return ToolCall(str(block.get("id", "")), str(block.get("name", "")), arguments)
    if kind == "tool_result":
        inner = block.get("content")
        parts: list[Text | Image | File] = []
        if isinstance(inner, str):
            parts = [Text(inner)]
        elif isinstance(inner, list):
            for k, b in enumerate(inner):
                part = _read_block(b, f"{where}.content[{k}]") if isinstance(b, dict) else None
                if isinstance(part, Text | Image | File):
                    parts.append(part)
        return ToolResult(
            str(block.get("tool_use_id", "")), parts, block.get("is_error") is True, cache
        )
    if kind == "thinking":
        return Reasoning(str(block.get("thinking", "")), block.get("signature"), provider=PROVIDER)
    if kind == "redacted_thinking":
        return Reasoning(redacted=str(block.get("data", "")), provider=PROVIDER)
    raise Untranslatable(where, "target", f"a {kind!r} block is Anthropic's own")


def _read_source(source: dict[str, Any], cache: Any, kind: Any, **extra: Any) -> Any:
    if source.get("type") == "base64":
        return kind(
            data=source.get("data"),
            media_type=source.get("media_type"),
            cache_control=cache,
            **extra,
        )
    if source.get("type") == "url":
        return kind(url=source.get("url"), cache_control=cache, **extra)
    if source.get("type") == "file" and kind is File:
        return File(file_id=source.get("file_id"), cache_control=cache, **extra)
    raise Untranslatable("source", "target", f"a {source.get('type')!r} source")


def write_turn(turn: Turn, default_max_tokens: int, reasoning: bool = True) -> dict[str, Any]:
    """A turn as a Messages request: system and developer messages to the top-level
    system, tool results in user messages, reasoning of other providers dropped (its
    signatures mean nothing here), ``max_tokens`` (required) from `default_max_tokens`
    when the turn sets none; thinking when asked for and `reasoning` allows it."""
    system = [_text_block(t) for t in turn.system]
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(turn.messages):
        if message.role == "system":
            system += [_text_block(p) for p in message.parts if isinstance(p, Text)]
            continue
        blocks = [b for p in message.parts if (b := _write_part(p, f"messages[{i}]")) is not None]
        if not blocks:
            continue
        if messages and messages[-1]["role"] == message.role:  # the API alternates roles
            messages[-1]["content"] += blocks
        else:
            messages.append({"role": message.role, "content": blocks})
    body: dict[str, Any] = {
        "model": turn.model,
        "messages": messages,
        "max_tokens": turn.max_output or default_max_tokens,
    }
    if system:
        body["system"] = system
    choice = _write_choice(turn)
    if turn.tools:
        body["tools"] = [_write_tool(t) for t in turn.tools]
    else:  # the API wants the tools of the calls in its history defined: none may be called
        called = {p.name for m in turn.messages for p in m.parts if isinstance(p, ToolCall)}
        if called:
            body["tools"] = [
                {"name": n, "input_schema": {"type": "object"}} for n in sorted(called)
            ]
            choice = {"type": "none"}
    if choice is not None:
        body["tool_choice"] = choice
    for key, value in (("temperature", turn.temperature), ("top_p", turn.top_p)):
        if value is not None:
            body[key] = value
    if turn.stop:
        body["stop_sequences"] = turn.stop
    if turn.stream:
        body["stream"] = True
    budget = turn.reasoning_budget or _BUDGETS.get(turn.reasoning_effort or "")
    if budget and reasoning:
        budget = max(1024, min(budget, body["max_tokens"] - 1))
        if budget < body["max_tokens"]:
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if turn.user:
        body["metadata"] = {"user_id": turn.user}
    return body


def _text_block(text: Text) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text.text}
    if text.cache_control is not None:
        block["cache_control"] = text.cache_control
    return block


def _write_part(part: Part, where: str) -> dict[str, Any] | None:
    block: dict[str, Any]
    if isinstance(part, Text):
        return _text_block(part) if part.text or part.cache_control else None
    if isinstance(part, Image | File):
        kind = "image" if isinstance(part, Image) else "document"
        if part.data is not None:
            media = part.media_type or ("application/pdf" if kind == "document" else None)
            source = {"type": "base64", "media_type": media, "data": part.data}
        elif part.url is not None:
            source = {"type": "url", "url": part.url}
        else:
            raise Untranslatable(where, API, "an uploaded file of another provider")
        block = {"type": kind, "source": source}
        if part.cache_control is not None:
            block["cache_control"] = part.cache_control
        return block
    if isinstance(part, ToolCall):
        try:
            arguments = json.loads(part.arguments) if part.arguments.strip() else {}
        except ValueError:
            arguments = {"arguments": part.arguments}  # kept, not lost
        return {
            "type": "tool_use",
            "id": part.id,
            "name": part.name,
            "input": arguments if isinstance(arguments, dict) else {"value": arguments},
        }
    if isinstance(part, ToolResult):
        content = [b for p in part.parts if (b := _write_part(p, where)) is not None]
        block = {"type": "tool_result", "tool_use_id": part.call_id, "content": content}
        if part.is_error:
            block["is_error"] = True
        if part.cache_control is not None:
            block["cache_control"] = part.cache_control
        return block
    if isinstance(part, Reasoning):
        if part.provider != PROVIDER:
            return None  # another provider's: it can't be replayed here
        if part.redacted:
            return {"type": "redacted_thinking", "data": part.redacted}
        if not part.signature:
            return None  # unsigned thinking is refused
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    return None


def _write_tool(tool: Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name, "input_schema": tool.schema or {"type": "object"}}
    if tool.description:
        out["description"] = tool.description
    if tool.cache_control is not None:
        out["cache_control"] = tool.cache_control
    return out


def _write_choice(turn: Turn) -> dict[str, Any] | None:
    choice = turn.tool_choice
    out: dict[str, Any] | None
    if isinstance(choice, dict):
        out = {"type": "tool", "name": choice.get("name", "")}
    elif choice == "required":
        out = {"type": "any"}
    elif choice in ("auto", "none"):
        out = {"type": choice}
    else:
        out = None
    if turn.parallel_tool_calls is False and turn.tools:
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


# -- answers --------------------------------------------------------------------------------


def read_usage(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    return Usage(
        input=count(usage.get("input_tokens")),
        output=count(usage.get("output_tokens")),
        cache_read=count(usage.get("cache_read_input_tokens")),
        cache_write=count(usage.get("cache_creation_input_tokens")),
    )


def write_usage(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input,
        "output_tokens": usage.output,
        "cache_read_input_tokens": usage.cache_read,
        "cache_creation_input_tokens": usage.cache_write,
    }


def read_answer(body: dict[str, Any]) -> Answer:
    parts: list[Text | ToolCall | Reasoning] = []
    for block in body.get("content") or []:
        part = _read_block(block, "content") if isinstance(block, dict) else None
        if isinstance(part, Text | ToolCall | Reasoning):
            parts.append(part)
    reason = _STOP.get(str(body.get("stop_reason")), "stop")
    return Answer(
        str(body.get("id", "")),
        str(body.get("model", "")),
        parts,
        reason,
        read_usage(body.get("usage")),
    )


def write_answer(answer: Answer) -> dict[str, Any]:
    content = [b for p in answer.parts if (b := _answer_block(p)) is not None]
    return {
        "id": answer_id("msg_", answer.id),
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": content,
        "stop_reason": _STOP_OUT[answer.finish],
        "stop_sequence": None,
        "usage": write_usage(answer.usage),
    }


def _answer_block(part: Text | ToolCall | Reasoning) -> dict[str, Any] | None:
    if isinstance(part, Reasoning):  # shown, with the signature only its provider gave
        if part.redacted and part.provider == PROVIDER:
            return {"type": "redacted_thinking", "data": part.redacted}
        signature = part.signature if part.provider == PROVIDER else ""
        return {"type": "thinking", "thinking": part.text, "signature": signature or ""}
    return _write_part(part, "content")


# -- streams --------------------------------------------------------------------------------


class StreamReader:
    """Messages stream events (parsed ``data``) to neutral events."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.reason: FinishReason = "stop"
        self.blocks: dict[int, str] = {}  # index -> block type
        self.tools: dict[int, int] = {}  # block index -> tool call index
        self.finished = False

    def read(self, event: dict[str, Any]) -> Iterator[Event]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.usage = read_usage(message.get("usage"))
            yield Start(str(message.get("id", "")), str(message.get("model", "")), self.usage)
        elif kind == "content_block_start":
            index, block = event.get("index", 0), event.get("content_block") or {}
            self.blocks[index] = block.get("type", "")
            if block.get("type") == "tool_use":
                self.tools[index] = len(self.tools)
                yield ToolCallStart(
                    self.tools[index], str(block.get("id", "")), str(block.get("name", ""))
                )
            elif block.get("type") == "redacted_thinking":
                yield ReasoningDelta(redacted=str(block.get("data", "")))
            elif block.get("type") == "text" and block.get("text"):
                yield TextDelta(block["text"])
        elif kind == "content_block_delta":
            index, delta = event.get("index", 0), event.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                yield TextDelta(str(delta.get("text", "")))
            elif dtype == "input_json_delta" and index in self.tools:
                yield ToolCallDelta(self.tools[index], str(delta.get("partial_json", "")))
            elif dtype == "thinking_delta":
                yield ReasoningDelta(str(delta.get("thinking", "")))
            elif dtype == "signature_delta":
                yield ReasoningDelta(signature=str(delta.get("signature", "")))
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            if delta.get("stop_reason"):
                self.reason = _STOP.get(str(delta["stop_reason"]), "stop")
            usage = event.get("usage")
            if isinstance(usage, dict):
                merged = {
                    **write_usage(self.usage),
                    **{k: v for k, v in usage.items() if v is not None},
                }
                self.usage = read_usage(merged)
                yield UsageEvent(self.usage)
        elif kind == "message_stop":
            self.finished = True
            yield Finish(self.reason, self.usage)
        elif kind == "error":
            error = event.get("error") or {}
            yield StreamError(str(error.get("message", "")), str(error.get("type", "api_error")))

    def done(self) -> Iterator[Event]:
        """The end of a stream that ended without ``message_stop``."""
        if not self.finished:
            self.finished = True
            yield Finish(self.reason, self.usage)


class StreamWriter:
    """Neutral events to Messages stream events, as SSE bytes: every event the official
    SDKs' accumulators look for, in order, block indexes counted here. ``message_start``
    carries the whole usage block (Claude Code reads it), with the input's tokens as the
    upstream gave them so far (`prompt_tokens` when none yet); ``message_delta`` the final
    counts."""

    def __init__(self, model: str, prompt_tokens: int = 0) -> None:
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.started = False
        self.index = -1  # the open block's index; -1: none yet
        self.open: str | None = None  # its type
        self.usage = Usage()
        self.tool_blocks: dict[int, int] = {}  # tool call index -> block index

    def write(self, event: Event) -> bytes:
        out: list[tuple[str, dict[str, Any]]] = []
        if isinstance(event, Start):
            self.usage = event.usage
            out += self._start(event.id)
        elif not self.started and not isinstance(event, StreamError):
            out += self._start("")
        if isinstance(event, TextDelta):
            out += self._block("text", {"type": "text", "text": ""})
            out.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self.index,
                        "delta": {"type": "text_delta", "text": event.text},
                    },
                )
            )
        elif isinstance(event, ReasoningDelta):
            if event.redacted is not None:
                out += self._close()
                out += self._block(
                    "redacted_thinking", {"type": "redacted_thinking", "data": event.redacted}
                )
            else:
                out += self._block(
                    "thinking", {"type": "thinking", "thinking": "", "signature": ""}
                )
                delta = (
                    {"type": "signature_delta", "signature": event.signature}
                    if event.signature is not None
                    else {"type": "thinking_delta", "thinking": event.text}
                )
                out.append(
                    (
                        "content_block_delta",
                        {"type": "content_block_delta", "index": self.index, "delta": delta},
                    )
                )
        elif isinstance(event, ToolCallStart):
            out += self._close()
            block = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
            out += self._block("tool_use", block, new=True)
            self.tool_blocks[event.index] = self.index
        elif isinstance(event, ToolCallDelta):
            index = self.tool_blocks.get(event.index)
            if index is not None and event.arguments:
                out.append(
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": event.arguments},
                        },
                    )
                )
        elif isinstance(event, UsageEvent):
            self.usage = event.usage
        elif isinstance(event, Finish):
            if event.usage is not None:
                self.usage = event.usage
            out += self._close()
            out.append(
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": _STOP_OUT[event.reason], "stop_sequence": None},
                        "usage": write_usage(self.usage),
                    },
                )
            )
            out.append(("message_stop", {"type": "message_stop"}))
        elif isinstance(event, StreamError):
            out.append(
                (
                    "error",
                    {"type": "error", "error": {"type": event.kind, "message": event.message}},
                )
            )
        return b"".join(sse(name, data) for name, data in out)

    def _start(self, upstream_id: str) -> list[tuple[str, dict[str, Any]]]:
        self.started = True
        usage = write_usage(self.usage)
        if not usage["input_tokens"] and not usage["cache_read_input_tokens"]:
            usage["input_tokens"] = self.prompt_tokens
        message: dict[str, Any] = {
            "id": answer_id("msg_", upstream_id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _block(
        self, kind: str, block: dict[str, Any], new: bool = False
    ) -> list[tuple[str, dict[str, Any]]]:
        if self.open == kind and not new:
            return []
        out = self._close()
        self.index += 1
        self.open = kind
        out.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": self.index, "content_block": block},
            )
        )
        return out

    def _close(self) -> list[tuple[str, dict[str, Any]]]:
        if self.open is None:
            return []
        self.open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index})]
