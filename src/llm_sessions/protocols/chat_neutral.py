"""OpenAI Chat Completions to and from the neutral form (`neutral`): its request as a
`Turn` and back, its response as an `Answer` and back, its stream chunks as neutral
events and back."""

from __future__ import annotations

import json
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

API = "chat"
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}
_FINISH_OUT = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "refusal": "content_filter",
    "error": "stop",
}
# what a Chat request may say that no other API can hold, and why
_ONLY_HERE = {
    "logprobs": "token log-probabilities",
    "top_logprobs": "token log-probabilities",
    "audio": "audio output",
    "modalities": "output modalities",
    "prediction": "predicted outputs",
    "web_search_options": "OpenAI's own web search",
    "response_format": "a response format",
    "logit_bias": "logit bias",
}


# -- requests -------------------------------------------------------------------------------


def read_turn(body: dict[str, Any], target: str, drop_tools: bool = False) -> Turn:
    """A Chat Completions request as a turn for the `target` API; `Untranslatable` for
    what that API can't do (``n`` above 1, log-probabilities, audio...); a tool that is
    not a function is left out with `drop_tools` (named in ``dropped_tools``)."""
    for field, what in _ONLY_HERE.items():
        value = body.get(field)
        if value not in (None, False) and not (
            field == "response_format" and (value or {}).get("type") == "text"
        ):
            raise Untranslatable(field, target, f"{what} are this API's own")
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise Untranslatable("n", target, "it answers one choice a request")
    turn = Turn(model=str(body.get("model") or ""), messages=[])
    for i, message in enumerate(body.get("messages") or []):
        _read_message(turn, message, f"messages[{i}]", target)
    for i, tool in enumerate(body.get("tools") or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(function, dict)
        ):
            if drop_tools:
                turn.dropped_tools.append(tool_name(tool))
                continue
            raise Untranslatable(f"tools[{i}]", target, "only function tools translate")
        turn.tools.append(
            Tool(
                str(function.get("name", "")),
                function.get("description"),
                function.get("parameters") or {},
                function.get("strict"),
            )
        )
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        turn.tool_choice = choice
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        turn.tool_choice = {"name": str(name or "")}
    if isinstance(body.get("parallel_tool_calls"), bool):
        turn.parallel_tool_calls = body["parallel_tool_calls"]
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    turn.max_output = limit if isinstance(limit, int) and not isinstance(limit, bool) else None
    turn.temperature = body.get("temperature")
    turn.top_p = body.get("top_p")
    stop = body.get("stop")
    turn.stop = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
    turn.stream = body.get("stream") is True
    effort = body.get("reasoning_effort")
    turn.reasoning_effort = effort if effort in EFFORTS else None
    user = body.get("safety_identifier") or body.get("user")
    turn.user = user if isinstance(user, str) else None
    if isinstance(body.get("metadata"), dict):
        turn.metadata = body["metadata"]
    return turn


def _read_message(turn: Turn, message: dict[str, Any], where: str, target: str) -> None:
    role = message.get("role")
    content = message.get("content")
    if role in ("system", "developer"):
        texts = [p for p in _read_content(content, where, target) if isinstance(p, Text)]
        if not turn.messages:  # instructions before the conversation
            turn.system += texts
        else:
            turn.messages.append(Message("system", list(texts)))
        return
    if role == "tool":
        result = ToolResult(
            str(message.get("tool_call_id", "")),
            [
                p
                for p in _read_content(content, where, target)
                if isinstance(p, Text | Image | File)
            ],
        )
        last = turn.messages[-1] if turn.messages else None
        if (
            last is not None
            and last.role == "user"
            and all(isinstance(p, ToolResult) for p in last.parts)
        ):
            last.parts.append(result)
        else:
            turn.messages.append(Message("user", [result]))
        return
    parts: list[Part] = []
    if role == "assistant":
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            parts.append(Reasoning(reasoning, provider="chat"))
    parts += _read_content(content, where, target)
    if role == "assistant":
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            arguments = function.get("arguments")
            parts.append(
                ToolCall(
                    str(call.get("id", "")),
                    str(function.get("name", "")),
                    arguments if isinstance(arguments, str) else "{}",
                )
            )
    turn.messages.append(Message("assistant" if role == "assistant" else "user", parts))


def _read_content(content: Any, where: str, target: str) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [Text(content)] if content else []
    parts: list[Part] = []
    for j, part in enumerate(content if isinstance(content, list) else []):
        kind = part.get("type") if isinstance(part, dict) else None
        cache = part.get("cache_control") if isinstance(part, dict) else None
        if kind == "text":
            parts.append(Text(str(part.get("text", "")), cache))
        elif kind == "image_url":
            image = part.get("image_url") or {}
            url = str(image.get("url", "") if isinstance(image, dict) else image)
            parts.append(_image_from_url(url, cache))
        elif kind == "file":
            file = part.get("file") or {}
            data, media = split_data_url(str(file.get("file_data", "")))
            parts.append(
                File(
                    data=data,
                    media_type=media,
                    file_id=file.get("file_id"),
                    name=file.get("filename"),
                    cache_control=cache,
                )
            )
        elif kind == "refusal":
            parts.append(Text(str(part.get("refusal", ""))))
        else:
            raise Untranslatable(f"{where}.content[{j}]", target, f"a {kind!r} part")
    return parts


def _image_from_url(url: str, cache: Any = None) -> Image:
    data, media = split_data_url(url)
    return (
        Image(data=data, media_type=media, cache_control=cache)
        if data
        else Image(url=url, cache_control=cache)
    )


def write_turn(turn: Turn, reasoning: bool = False) -> dict[str, Any]:
    """A turn as a Chat Completions request: instructions as a system message, tool
    results as ``tool`` messages (an image in one, which they can't hold, follows in a
    user message), reasoning history dropped (no provider takes another's back), the
    reasoning effort sent only to a model known to `reasoning`."""
    messages: list[dict[str, Any]] = []
    if turn.system:
        messages.append({"role": "system", "content": "\n\n".join(t.text for t in turn.system)})
    for message in turn.messages:
        messages += _write_message(message)
    body: dict[str, Any] = {"model": turn.model, "messages": messages}
    if turn.tools:
        body["tools"] = [_write_tool(t) for t in turn.tools]
    if turn.tool_choice is not None:
        choice = turn.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.get("name", "")}}
            if isinstance(choice, dict)
            else choice
        )
    if turn.parallel_tool_calls is not None and turn.tools:
        body["parallel_tool_calls"] = turn.parallel_tool_calls
    if turn.max_output is not None:
        body["max_completion_tokens"] = turn.max_output
    for key, value in (("temperature", turn.temperature), ("top_p", turn.top_p)):
        if value is not None:
            body[key] = value
    if turn.stop:
        body["stop"] = turn.stop[:4]  # the API takes four
    if turn.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    asked = effort(turn)
    if reasoning and asked:
        body["reasoning_effort"] = asked
    if turn.user:
        body["user"] = turn.user[:256]
    return body


def _write_message(message: Message) -> list[dict[str, Any]]:
    if message.role == "system":
        return [
            {
                "role": "system",
                "content": "\n\n".join(p.text for p in message.parts if isinstance(p, Text)),
            }
        ]
    out: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []  # images of tool results: a user message after them
    calls: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ToolResult):
            said = result_text(part)
            out.append({"role": "tool", "tool_call_id": part.call_id, "content": said})
            moved += [_content_part(p) for p in part.parts if isinstance(p, Image | File)]
        elif isinstance(part, ToolCall):
            calls.append(
                {
                    "id": part.id,
                    "type": "function",
                    "function": {"name": part.name, "arguments": part.arguments or "{}"},
                }
            )
        elif isinstance(part, Text | Image | File):
            content.append(_content_part(part))
    if moved:
        out.append({"role": "user", "content": moved})
    if message.role == "assistant":
        text = "".join(p["text"] for p in content if p.get("type") == "text")
        entry: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            entry["tool_calls"] = calls
        if text or calls:
            out.append(entry)
    elif content:
        plain = all(p.get("type") == "text" for p in content)
        out.append(
            {
                "role": "user",
                "content": "\n\n".join(p["text"] for p in content)
                if plain and len(content) == 1
                else content,
            }
        )
    return out


def _content_part(part: Text | Image | File) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, Image):
        url = part.url if part.url is not None else f"data:{part.media_type};base64,{part.data}"
        return {"type": "image_url", "image_url": {"url": url}}
    file: dict[str, Any] = {}
    if part.file_id:
        file["file_id"] = part.file_id
    elif part.data is not None:
        file["file_data"] = f"data:{part.media_type or 'application/pdf'};base64,{part.data}"
        file["filename"] = part.name or "document.pdf"
    else:
        raise Untranslatable("content", API, "a document by URL")
    return {"type": "file", "file": file}


def _write_tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.schema or {"type": "object"}}
    if tool.description:
        function["description"] = tool.description
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


# -- answers --------------------------------------------------------------------------------


def read_usage(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("prompt_tokens_details")
    cached = count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    out_details = usage.get("completion_tokens_details")
    reasoning = count(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0
    prompt = count(usage.get("prompt_tokens"))
    return Usage(
        input=max(prompt - cached, 0),
        output=count(usage.get("completion_tokens")),
        cache_read=cached,
        reasoning=reasoning,
    )


def write_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.output,
        "total_tokens": usage.prompt + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    }


def read_answer(body: dict[str, Any]) -> Answer:
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    parts: list[Text | ToolCall | Reasoning] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append(Reasoning(reasoning, provider="chat"))
    content = message.get("content")
    if isinstance(content, str) and content:
        parts.append(Text(content))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        parts.append(
            ToolCall(
                str(call.get("id", "")),
                str(function.get("name", "")),
                str(function.get("arguments") or "{}"),
            )
        )
    finish = _FINISH.get(str(choice.get("finish_reason")), "stop")
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append(Text(refusal))
        finish = "refusal"
    return Answer(
        str(body.get("id", "")),
        str(body.get("model", "")),
        parts,
        finish,
        read_usage(body.get("usage")),
    )


def write_answer(answer: Answer) -> dict[str, Any]:
    text = "".join(p.text for p in answer.parts if isinstance(p, Text))
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    calls = [p for p in answer.parts if isinstance(p, ToolCall)]
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    reasoning = "".join(p.text for p in answer.parts if isinstance(p, Reasoning))
    if reasoning:
        message["reasoning_content"] = reasoning
    if answer.finish == "refusal":
        message["refusal"], message["content"] = text, None
    return {
        "id": answer_id("chatcmpl-", answer.id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _FINISH_OUT[answer.finish],
                "logprobs": None,
            }
        ],
        "usage": write_usage(answer.usage),
    }


# -- streams --------------------------------------------------------------------------------


class StreamReader:
    """Chat Completions chunks (parsed ``data``) to neutral events; ``[DONE]`` (`done`)
    finishes the answer."""

    def __init__(self) -> None:
        self.started = False
        self.reason: FinishReason = "stop"
        self.usage: Usage | None = None
        self.calls: dict[int, int] = {}  # the chunk's tool call index -> ours
        self.finished = False

    def read(self, chunk: dict[str, Any]) -> Iterator[Event]:
        if isinstance(chunk.get("error"), dict):
            error = chunk["error"]
            yield StreamError(str(error.get("message", "")), str(error.get("type", "api_error")))
            return
        if not self.started:
            self.started = True
            yield Start(str(chunk.get("id", "")), str(chunk.get("model", "")))
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                yield ReasoningDelta(reasoning)
            content = delta.get("content")
            if isinstance(content, str) and content:
                yield TextDelta(content)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self.reason = "refusal"
                yield TextDelta(refusal)
            for call in delta.get("tool_calls") or []:
                at = call.get("index", 0)
                function = call.get("function") or {}
                if at not in self.calls:
                    self.calls[at] = len(self.calls)
                    yield ToolCallStart(
                        self.calls[at], str(call.get("id", "")), str(function.get("name", ""))
                    )
                arguments = function.get("arguments")
                if isinstance(arguments, str) and arguments:
                    yield ToolCallDelta(self.calls[at], arguments)
            if choice.get("finish_reason") and self.reason != "refusal":
                self.reason = _FINISH.get(str(choice["finish_reason"]), "stop")
        if isinstance(chunk.get("usage"), dict):
            self.usage = read_usage(chunk["usage"])
            yield UsageEvent(self.usage)

    def done(self) -> Iterator[Event]:
        if not self.finished:
            self.finished = True
            yield Finish(self.reason, self.usage)


class StreamWriter:
    """Neutral events to Chat Completions chunks, as SSE bytes, ending ``data: [DONE]``;
    the usage chunk (no choices) before it when the client asked for it."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = answer_id("chatcmpl-", "")
        self.created = int(time.time())
        self.started = False
        self.usage = Usage()

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    def write(self, event: Event) -> bytes:
        out = b""
        if not self.started and not isinstance(event, StreamError):
            self.started = True
            if isinstance(event, Start) and event.id:
                self.id = answer_id("chatcmpl-", event.id)
            out += self._chunk({"role": "assistant", "content": ""})
        if isinstance(event, TextDelta):
            out += self._chunk({"content": event.text})
        elif isinstance(event, ReasoningDelta) and event.text:
            out += self._chunk({"reasoning_content": event.text})
        elif isinstance(event, ToolCallStart):
            call = {
                "index": event.index,
                "id": event.id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            out += self._chunk({"tool_calls": [call]})
        elif isinstance(event, ToolCallDelta):
            call = {"index": event.index, "function": {"arguments": event.arguments}}
            out += self._chunk({"tool_calls": [call]})
        elif isinstance(event, UsageEvent):
            self.usage = event.usage
        elif isinstance(event, Finish):
            if event.usage is not None:
                self.usage = event.usage
            out += self._chunk({}, _FINISH_OUT[event.reason])
            if self.include_usage:
                chunk = {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": write_usage(self.usage),
                }
                out += b"data: " + json.dumps(chunk).encode() + b"\n\n"
            out += b"data: [DONE]\n\n"
        elif isinstance(event, StreamError):
            error = {"error": {"message": event.message, "type": event.kind}}
            out += b"data: " + json.dumps(error).encode() + b"\n\n"
        return out
