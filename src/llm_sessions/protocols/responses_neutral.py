"""The OpenAI Responses API to and from the neutral form (`neutral`): its request as a
`Turn` and back, its response as an `Answer` and back, its stream events as neutral
events and back (with every event the official SDK's stream accumulator reads)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

from .neutral import (
    EFFORTS,
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
    effort,
    result_text,
    split_data_url,
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

API = "responses"
PROVIDER = "responses"  # whose encrypted reasoning these are
# what a Responses request may say that no other API can hold, and why
_ONLY_HERE = {
    "previous_response_id": "the upstream holds no stored responses",
    "conversation": "the upstream holds no stored conversations",
    "background": "background responses are this API's own",
    "prompt": "stored prompts are this API's own",
}


# -- requests -------------------------------------------------------------------------------


def read_turn(body: dict[str, Any], target: str, drop_tools: bool = False) -> Turn:
    """A Responses request as a turn for the `target` API; `Untranslatable` for what
    only the Responses API does (stored state, OpenAI's own tools, item references); a
    tool that is not a function is left out instead with `drop_tools` (named in
    ``dropped_tools``)."""
    for field, why in _ONLY_HERE.items():
        if body.get(field) not in (None, False, ""):
            raise Untranslatable(field, target, why)
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise Untranslatable("text.format", target, "structured outputs are this API's own")
    turn = Turn(model=str(body.get("model") or ""), messages=[])
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        turn.system = [Text(instructions)]
    given = body.get("input")
    items = [{"role": "user", "content": given}] if isinstance(given, str) else given or []
    for i, item in enumerate(items):
        _read_item(turn, item, f"input[{i}]", target)
    for i, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            if drop_tools:
                turn.dropped_tools.append(tool_name(tool))
                continue
            raise Untranslatable(f"tools[{i}]", target, f"a {kind!r} tool is OpenAI's own")
        turn.tools.append(
            Tool(
                str(tool.get("name", "")),
                tool.get("description"),
                tool.get("parameters") or {},
                tool.get("strict"),
            )
        )
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        turn.tool_choice = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        turn.tool_choice = {"name": str(choice.get("name", ""))}
    if isinstance(body.get("parallel_tool_calls"), bool):
        turn.parallel_tool_calls = body["parallel_tool_calls"]
    limit = body.get("max_output_tokens")
    turn.max_output = limit if isinstance(limit, int) and not isinstance(limit, bool) else None
    turn.temperature = body.get("temperature")
    turn.top_p = body.get("top_p")
    turn.stream = body.get("stream") is True
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    turn.reasoning_effort = effort if effort in EFFORTS else None
    user = body.get("safety_identifier") or body.get("user")
    turn.user = user if isinstance(user, str) else None
    if isinstance(body.get("metadata"), dict):
        turn.metadata = body["metadata"]
    return turn


def _read_item(turn: Turn, item: Any, where: str, target: str) -> None:
    if not isinstance(item, dict):
        raise Untranslatable(where, target, "an input item must be an object")
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        parts = _read_content(item.get("content"), where, target)
        if role in ("system", "developer"):
            texts = [p for p in parts if isinstance(p, Text)]
            if not turn.messages:
                turn.system += texts
            else:
                turn.messages.append(Message("system", list(texts)))
            return
        _append(turn, "assistant" if role == "assistant" else "user", parts)
    elif kind == "function_call":
        arguments = item.get("arguments")
        call = ToolCall(
            str(item.get("call_id", "")),
            str(item.get("name", "")),
            arguments if isinstance(arguments, str) else "{}",
        )
        _append(turn, "assistant", [call])
    elif kind == "function_call_output":
        output = item.get("output")
        parts = (
            [Text(output)]
            if isinstance(output, str)
            else [
                p
                for p in _read_content(output, where, target)
                if isinstance(p, Text | Image | File)
            ]
        )
        _append(turn, "user", [ToolResult(str(item.get("call_id", "")), parts)])  # type: ignore[arg-type]
    elif kind == "reasoning":
        summary = "".join(
            s.get("text", "") for s in item.get("summary") or [] if isinstance(s, dict)
        )
        reasoning = Reasoning(
            summary, encrypted=item.get("encrypted_content"), id=item.get("id"), provider=PROVIDER
        )
        _append(turn, "assistant", [reasoning])
    else:
        raise Untranslatable(where, target, f"a {kind!r} item is OpenAI's own")


def _append(turn: Turn, role: str, parts: list[Part]) -> None:
    """Items of one role that follow each other make one message of the others' APIs."""
    last = turn.messages[-1] if turn.messages else None
    if last is not None and last.role == role:
        last.parts += parts
    else:
        turn.messages.append(Message("assistant" if role == "assistant" else "user", parts))


def _read_content(content: Any, where: str, target: str) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [Text(content)] if content else []
    parts: list[Part] = []
    for j, part in enumerate(content if isinstance(content, list) else []):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append(Text(str(part.get("text", ""))))
        elif kind == "refusal":
            parts.append(Text(str(part.get("refusal", ""))))
        elif kind == "input_image":
            url = part.get("image_url")
            data, media = split_data_url(url) if isinstance(url, str) else (None, None)
            if data is not None:
                parts.append(Image(data=data, media_type=media))
            elif isinstance(url, str):
                parts.append(Image(url=url))
            else:
                raise Untranslatable(f"{where}.content[{j}]", target, "an uploaded image")
        elif kind == "input_file":
            given = part.get("file_data")
            data, media = split_data_url(given) if isinstance(given, str) else (None, None)
            parts.append(
                File(
                    data=data if data is not None else given if isinstance(given, str) else None,
                    url=part.get("file_url"),
                    file_id=part.get("file_id"),
                    media_type=media,
                    name=part.get("filename"),
                )
            )
        else:
            raise Untranslatable(f"{where}.content[{j}]", target, f"a {kind!r} part")
    return parts


def write_turn(turn: Turn, reasoning: bool = False) -> dict[str, Any]:
    """A turn as a Responses request, not stored upstream (nothing will continue it
    there): instructions from the system texts, messages and tool calls and results as
    items (an image in a tool result follows it in a user message), reasoning of other
    providers dropped, the reasoning effort sent only to a model known to `reasoning`."""
    items: list[dict[str, Any]] = []
    instructions = [t.text for t in turn.system]
    for message in turn.messages:
        if message.role == "system":
            text = "\n\n".join(p.text for p in message.parts if isinstance(p, Text))
            items.append(
                {
                    "type": "message",
                    "role": "developer",
                    "content": [{"type": "input_text", "text": text}],
                }
            )
            continue
        items += _write_message(message)
    body: dict[str, Any] = {"model": turn.model, "input": items, "store": False}
    if instructions:
        body["instructions"] = "\n\n".join(instructions)
    if turn.tools:
        body["tools"] = [
            {
                "type": "function",
                "name": t.name,
                "description": t.description or "",
                "parameters": t.schema or {"type": "object"},
                "strict": t.strict is True,
            }
            for t in turn.tools
        ]
    choice = turn.tool_choice
    if isinstance(choice, dict):
        body["tool_choice"] = {"type": "function", "name": choice.get("name", "")}
    elif choice is not None:
        body["tool_choice"] = choice
    if turn.parallel_tool_calls is not None and turn.tools:
        body["parallel_tool_calls"] = turn.parallel_tool_calls
    if turn.max_output is not None:
        body["max_output_tokens"] = turn.max_output
    for key, value in (("temperature", turn.temperature), ("top_p", turn.top_p)):
        if value is not None:
            body[key] = value
    if turn.stream:
        body["stream"] = True
    asked = effort(turn)
    if reasoning and asked:
        body["reasoning"] = {"effort": asked}
    if turn.user:
        body["safety_identifier"] = turn.user[:64]
    return body


def _write_message(message: Message) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []
    assistant = message.role == "assistant"

    def flush() -> None:
        if content:
            out.append({"type": "message", "role": message.role, "content": list(content)})
            content.clear()

    for part in message.parts:
        if isinstance(part, Text):
            kind = "output_text" if assistant else "input_text"
            content.append({"type": kind, "text": part.text})
        elif isinstance(part, Image | File):
            content.append(_media(part))
        elif isinstance(part, ToolCall):
            flush()
            out.append(
                {
                    "type": "function_call",
                    "call_id": part.id,
                    "name": part.name,
                    "arguments": part.arguments or "{}",
                }
            )
        elif isinstance(part, ToolResult):
            flush()
            out.append(
                {"type": "function_call_output", "call_id": part.call_id,
                 "output": result_text(part)}
            )  # fmt: skip
            moved += [_media(p) for p in part.parts if isinstance(p, Image | File)]
        elif isinstance(part, Reasoning) and part.provider == PROVIDER and part.encrypted:
            flush()
            out.append({"type": "reasoning", "summary": [], "encrypted_content": part.encrypted})
    flush()
    if moved:
        out.append({"type": "message", "role": "user", "content": moved})
    return out


def _media(part: Image | File) -> dict[str, Any]:
    if isinstance(part, Image):
        url = part.url if part.url is not None else f"data:{part.media_type};base64,{part.data}"
        return {"type": "input_image", "image_url": url, "detail": "auto"}
    out: dict[str, Any] = {"type": "input_file"}
    if part.file_id:
        out["file_id"] = part.file_id
    elif part.data is not None:
        out["file_data"] = f"data:{part.media_type or 'application/pdf'};base64,{part.data}"
        out["filename"] = part.name or "document.pdf"
    elif part.url is not None:
        out["file_url"] = part.url
    return out


# -- answers --------------------------------------------------------------------------------


def read_usage(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("input_tokens_details")
    cached = count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    out_details = usage.get("output_tokens_details")
    reasoning = count(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0
    return Usage(
        input=max(count(usage.get("input_tokens")) - cached, 0),
        output=count(usage.get("output_tokens")),
        cache_read=cached,
        reasoning=reasoning,
    )


def write_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt,
        "input_tokens_details": {"cached_tokens": usage.cache_read},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.prompt + usage.output,
    }


def _finish(response: dict[str, Any], calls: bool) -> FinishReason:
    if response.get("status") == "incomplete":
        details = response.get("incomplete_details") or {}
        return "content_filter" if details.get("reason") == "content_filter" else "length"
    if response.get("status") == "failed":
        return "error"
    return "tool_calls" if calls else "stop"


def read_answer(body: dict[str, Any]) -> Answer:
    parts: list[Text | ToolCall | Reasoning] = []
    refused = False
    for item in body.get("output") or []:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            for part in item.get("content") or []:
                if part.get("type") == "output_text":
                    parts.append(Text(str(part.get("text", ""))))
                elif part.get("type") == "refusal":
                    parts.append(Text(str(part.get("refusal", ""))))
                    refused = True
        elif kind == "function_call":
            parts.append(
                ToolCall(
                    str(item.get("call_id", "")),
                    str(item.get("name", "")),
                    str(item.get("arguments") or "{}"),
                )
            )
        elif kind == "reasoning":
            summary = "".join(s.get("text", "") for s in item.get("summary") or [])
            parts.append(
                Reasoning(
                    summary,
                    encrypted=item.get("encrypted_content"),
                    id=item.get("id"),
                    provider=PROVIDER,
                )
            )
    finish = _finish(body, any(isinstance(p, ToolCall) for p in parts))
    return Answer(
        str(body.get("id", "")),
        str(body.get("model", "")),
        parts,
        "refusal" if refused else finish,
        read_usage(body.get("usage")),
    )


def _response(rid: str, model: str, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": output,
        "usage": usage,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "store": False,
        "temperature": 1.0,
        "top_p": 1.0,
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "background": False,
        "previous_response_id": None,
    }


def write_answer(answer: Answer) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    texts = [p.text for p in answer.parts if isinstance(p, Text)]
    for part in answer.parts:
        if isinstance(part, Reasoning) and part.text:
            output.append(
                {
                    "type": "reasoning",
                    "id": "rs_" + secrets.token_hex(8),
                    "summary": [{"type": "summary_text", "text": part.text}],
                }
            )
    if texts:
        content = (
            {"type": "refusal", "refusal": "".join(texts)}
            if answer.finish == "refusal"
            else {"type": "output_text", "text": "".join(texts), "annotations": []}
        )
        output.append(
            {
                "type": "message",
                "id": "msg_" + secrets.token_hex(8),
                "status": "completed",
                "role": "assistant",
                "content": [content],
            }
        )
    for part in answer.parts:
        if isinstance(part, ToolCall):
            output.append(
                {
                    "type": "function_call",
                    "id": "fc_" + secrets.token_hex(8),
                    "call_id": part.id,
                    "name": part.name,
                    "arguments": part.arguments,
                    "status": "completed",
                }
            )
    status = "incomplete" if answer.finish in ("length", "content_filter") else "completed"
    out = _response(
        answer_id("resp_", answer.id), answer.model, status, output, write_usage(answer.usage)
    )
    if status == "incomplete":
        reason = "content_filter" if answer.finish == "content_filter" else "max_output_tokens"
        out["incomplete_details"] = {"reason": reason}
    return out


# -- streams --------------------------------------------------------------------------------


class StreamReader:
    """Responses stream events (parsed ``data``) to neutral events."""

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}  # output index -> tool call index
        self.finished = False

    def read(self, event: dict[str, Any]) -> Iterator[Event]:
        kind = event.get("type")
        if kind == "response.created":
            response = event.get("response") or {}
            yield Start(str(response.get("id", "")), str(response.get("model", "")))
        elif kind == "response.output_item.added":
            item = event.get("item") or {}
            if item.get("type") == "function_call":
                index = event.get("output_index", 0)
                self.calls[index] = len(self.calls)
                yield ToolCallStart(
                    self.calls[index], str(item.get("call_id", "")), str(item.get("name", ""))
                )
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            yield TextDelta(str(event.get("delta", "")))
        elif kind == "response.function_call_arguments.delta":
            index = self.calls.get(event.get("output_index", 0))
            if index is not None:
                yield ToolCallDelta(index, str(event.get("delta", "")))
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            yield ReasoningDelta(str(event.get("delta", "")))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = event.get("response") or {}
            usage = read_usage(response.get("usage"))
            self.finished = True
            if kind == "response.failed":
                error = response.get("error") or {}
                yield StreamError(str(error.get("message", "the response failed")))
            yield UsageEvent(usage)
            yield Finish(_finish(response, bool(self.calls)), usage)
        elif kind == "error":
            yield StreamError(str(event.get("message", "")), str(event.get("code") or "api_error"))

    def done(self) -> Iterator[Event]:
        if not self.finished:
            self.finished = True
            yield Finish("tool_calls" if self.calls else "stop")


class StreamWriter:
    """Neutral events to Responses stream events, as SSE bytes, numbered: created and
    in_progress, each output item added, its parts and deltas, done, then completed with
    the whole response (the SDK's accumulator reads every one of them)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = "resp_" + secrets.token_hex(12)
        self.sequence = 0
        self.started = False
        self.output: list[dict[str, Any]] = []  # the items so far
        self.open: dict[str, Any] | None = None  # the item being written
        self.calls: dict[int, int] = {}  # tool call index -> output index
        self.usage = Usage()

    def _event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return sse(kind, payload)

    def _response(self, status: str, usage: Any = None) -> dict[str, Any]:
        return _response(self.id, self.model, status, list(self.output), usage)

    def write(self, event: Event) -> bytes:
        out = b""
        if not self.started and not isinstance(event, StreamError):
            self.started = True
            if isinstance(event, Start) and event.id:
                self.id = answer_id("resp_", event.id)
            out += self._event("response.created", response=self._response("in_progress"))
            out += self._event("response.in_progress", response=self._response("in_progress"))
        if isinstance(event, TextDelta):
            out += self._message()
            message = self.output[-1]
            where = {"item_id": message["id"], "output_index": len(self.output) - 1,
                     "content_index": 0}  # fmt: skip
            message["content"][0]["text"] += event.text
            out += self._event("response.output_text.delta", delta=event.text, logprobs=[], **where)
        elif isinstance(event, ReasoningDelta) and event.text:
            if self.open is None or self.open["type"] != "reasoning":
                out += self._close()
                item: dict[str, Any] = {
                    "type": "reasoning",
                    "id": "rs_" + secrets.token_hex(8),
                    "summary": [{"type": "summary_text", "text": ""}],
                }
                out += self._add(item)
                out += self._event(
                    "response.reasoning_summary_part.added",
                    item_id=item["id"],
                    output_index=len(self.output) - 1,
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
            summary = self.output[-1]
            summary["summary"][0]["text"] += event.text
            out += self._event(
                "response.reasoning_summary_text.delta",
                item_id=summary["id"],
                output_index=len(self.output) - 1,
                summary_index=0,
                delta=event.text,
            )
        elif isinstance(event, ToolCallStart):
            out += self._close()
            item = {
                "type": "function_call",
                "id": "fc_" + secrets.token_hex(8),
                "call_id": event.id,
                "name": event.name,
                "arguments": "",
                "status": "in_progress",
            }
            out += self._add(item)
            self.calls[event.index] = len(self.output) - 1
        elif isinstance(event, ToolCallDelta):
            index = self.calls.get(event.index)
            if index is not None and event.arguments:
                item = self.output[index]
                item["arguments"] += event.arguments
                out += self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=event.arguments,
                )
        elif isinstance(event, UsageEvent):
            self.usage = event.usage
        elif isinstance(event, Finish):
            if event.usage is not None:
                self.usage = event.usage
            out += self._close()
            status = "incomplete" if event.reason in ("length", "content_filter") else "completed"
            response = self._response(status, write_usage(self.usage))
            if status == "incomplete":
                reason = (
                    "content_filter" if event.reason == "content_filter" else "max_output_tokens"
                )
                response["incomplete_details"] = {"reason": reason}
            out += self._event(f"response.{status}", response=response)
        elif isinstance(event, StreamError):
            out += self._event("error", code=event.kind, message=event.message, param=None)
        return out

    def _add(self, item: dict[str, Any]) -> bytes:
        self.output.append(item)
        self.open = item
        return self._event(
            "response.output_item.added",
            output_index=len(self.output) - 1,
            item=json.loads(json.dumps(item)),
        )

    def _message(self) -> bytes:
        if self.open is not None and self.open["type"] == "message":
            return b""
        out = self._close()
        item: dict[str, Any] = {
            "type": "message",
            "id": "msg_" + secrets.token_hex(8),
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        out += self._add(item)
        part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
        out += self._event(
            "response.content_part.added",
            item_id=item["id"],
            output_index=len(self.output) - 1,
            content_index=0,
            part=dict(part),
        )
        item["content"].append(part)
        return out

    def _close(self) -> bytes:
        item, self.open = self.open, None
        if item is None:
            return b""
        index = self.output.index(item)
        out = b""
        if item["type"] == "message":
            part = item["content"][0]
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out += self._event("response.output_text.done", text=part["text"], logprobs=[], **where)
            out += self._event("response.content_part.done", part=part, **where)
        elif item["type"] == "function_call":
            out += self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
        elif item["type"] == "reasoning":
            text = item["summary"][0]["text"]
            out += self._event(
                "response.reasoning_summary_text.done",
                item_id=item["id"],
                output_index=index,
                summary_index=0,
                text=text,
            )
            out += self._event(
                "response.reasoning_summary_part.done",
                item_id=item["id"],
                output_index=index,
                summary_index=0,
                part=item["summary"][0],
            )
        item["status"] = "completed"
        if item["type"] == "reasoning":
            item.pop("status")
        out += self._event("response.output_item.done", output_index=index, item=item)
        return out
