"""A stand-in upstream, for the demo and the tests: it answers OpenAI chat completions,
Anthropic messages and OpenAI responses (streamed or not, with usage; a request that
offers tools is answered with a call of the first tool until a tool result comes back),
keeps the responses it made (``previous_response_id`` to one it does not hold is a 404,
as upstream), counts tokens, records what it receives, and can be told, per model, to
fail with a status, to stall, or to stream slowly; `app(apis)` serves some APIs only."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["Behaviour", "StandIn"]


@dataclass
class Behaviour:
    status: int = 200  # answer with this status (and an OpenAI-style error when >= 400)
    error_type: str = "server_error"
    error_message: str = ""  # the error's message (default: "stand-in STATUS")
    stall_s: float = 0.0  # wait this long before answering
    chunk_delay_s: float = 0.0  # between streamed chunks
    chunks: int = 3  # streamed content chunks
    text: str = "Hello from the stand-in."
    cost: float | None = None  # report usage.cost (USD), as OpenRouter does
    usage: bool = True  # include usage (in the final chunk when streaming)
    cached_tokens: int = 0  # report this many prompt tokens as read from the prompt cache
    gate: threading.Event | None = None  # when streaming, hold after the first chunk until set
    break_stream: bool = False  # when streaming, drop the connection after the first chunk
    break_after: int = 1  # ... after this many chunks (a Messages stream's are words)


@dataclass
class StandIn:
    """``StandIn().app()`` is the ASGI app; `set(model, ...)` changes one model's
    `Behaviour`; `received` holds every request body, in order."""

    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    behaviour: dict[str, Behaviour] = field(default_factory=dict)
    default: Behaviour = field(default_factory=Behaviour)
    disconnects: int = 0
    refuse_retrieval: tuple[int, str] | None = None  # answer GET /responses/{id} so
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)  # responses by id
    inputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # their input items
    # tokens of context each stored response (and conversation) leaves: billed again as
    # input by a request continuing it
    context: dict[str, int] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _prefix: str = field(default_factory=lambda: secrets.token_hex(4))

    def set(self, model: str, **kw: Any) -> None:
        self.behaviour[model] = Behaviour(**kw)

    @property
    def models(self) -> list[str]:
        return [r.get("model", "") for r in self.received]

    def app(self, apis: tuple[str, ...] = ("chat", "messages", "responses")) -> Starlette:
        """The stand-in serving `apis` (and embeddings): an upstream of one API alone
        answers 404 to the others, as a real one would."""
        routes = [Route("/v1/embeddings", self.embeddings, methods=["POST"])]
        if "chat" in apis:
            routes.append(Route("/v1/chat/completions", self.chat, methods=["POST"]))
        if "messages" in apis:
            routes += [
                Route("/v1/messages", self.messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", self.count_tokens, methods=["POST"]),
            ]
        if "responses" in apis:
            routes += [
                Route("/v1/responses", self.responses, methods=["POST"]),
                Route("/v1/responses/{rid}", self.response, methods=["GET", "DELETE"]),
                Route("/v1/responses/{rid}/input_items", self.input_items, methods=["GET"]),
                Route("/v1/responses/{rid}/cancel", self.cancel, methods=["POST"]),
            ]
        return Starlette(routes=routes)

    async def embeddings(self, request: Request) -> Response:
        body, _ = await self._take(request)
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        tokens = sum(len(str(t)) // 4 + 1 for t in texts)
        data = [
            {"object": "embedding", "index": i, "embedding": [0.1 * (i + 1), 0.2, 0.3]}
            for i in range(len(texts))
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse(
            {"object": "list", "data": data, "model": body.get("model"), "usage": usage}
        )

    async def count_tokens(self, request: Request) -> Response:
        body, _ = await self._take(request)
        return JSONResponse({"input_tokens": len(json.dumps(body.get("messages", []))) // 4 + 1})

    async def _take(self, request: Request) -> tuple[dict[str, Any], Behaviour]:
        """Record a request; its model's behaviour, after any stall it asks for."""
        body = await request.json()
        self.received.append(body)
        self.headers.append(dict(request.headers))
        b = self.behaviour.get(body.get("model", ""), self.default)
        if b.stall_s:
            await asyncio.sleep(b.stall_s)
        limits = [body.get(k) for k in ("max_tokens", "max_completion_tokens", "max_output_tokens")]
        limit = min((v for v in limits if isinstance(v, int) and v > 0), default=None)
        words = b.text.split(" ")
        if limit is not None and len(words) > limit:  # as upstreams do: cut at the limit
            b = replace(b, text=" ".join(words[:limit]))
        return body, b

    async def messages(self, request: Request) -> Response:
        body, b = await self._take(request)
        model = body.get("model", "")
        if b.status >= 400:
            kind = "overloaded_error" if b.status == 529 else b.error_type
            return JSONResponse(
                {
                    "type": "error",
                    "error": {"type": kind, "message": b.error_message or f"stand-in {b.status}"},
                },
                status_code=b.status,
            )
        prompt = [body.get("system"), body.get("tools"), body.get("messages", [])]
        usage: dict[str, Any] = {
            # the whole prompt, as Anthropic counts it: system prompt, tools and messages
            "input_tokens": len(json.dumps(prompt)) // 4 + 1,
            "output_tokens": len(b.text.split(" ")),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": b.cached_tokens,
        }
        tools = body.get("tools") or []
        last = (body.get("messages") or [{}])[-1]
        answered = isinstance(last.get("content"), list) and any(
            isinstance(block, dict) and block.get("type") == "tool_result"
            for block in last["content"]
        )
        if tools and not answered:
            call_id = f"toolu_{len(self.received)}"
            block: dict[str, Any] = {
                "type": "tool_use", "id": call_id, "name": tools[0]["name"], "input": {"path": "t"}
            }  # fmt: skip
            stop = "tool_use"
        else:
            block, stop = {"type": "text", "text": b.text}, "end_turn"
        message = {"id": f"msg_{len(self.received)}", "type": "message", "role": "assistant",
                   "model": model, "content": [block], "stop_reason": stop,
                   "stop_sequence": None, "usage": usage}  # fmt: skip
        if not b.usage:
            del message["usage"]
        if not body.get("stream"):
            return JSONResponse(message)

        async def events() -> AsyncIterator[str]:
            def event(kind: str, data: dict[str, Any]) -> str:
                return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

            start = {**message, "content": [], "stop_reason": None}
            if b.usage:
                start["usage"] = {**usage, "output_tokens": 1}
            yield event("message_start", {"message": start})
            empty = (
                {"type": "text", "text": ""} if block["type"] == "text" else {**block, "input": {}}
            )
            yield event("content_block_start", {"index": 0, "content_block": empty})
            yield event("ping", {})
            if block["type"] == "text":
                for sent, piece in enumerate(_pieces(b.text), 1):
                    if b.chunk_delay_s:
                        await asyncio.sleep(b.chunk_delay_s)
                    delta = {"type": "text_delta", "text": piece}
                    yield event("content_block_delta", {"index": 0, "delta": delta})
                    if b.break_stream and sent >= b.break_after:
                        raise ConnectionAbortedError("the stand-in drops the stream")
            else:
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
                yield event("content_block_delta", {"index": 0, "delta": delta})
            yield event("content_block_stop", {"index": 0})
            end = {"stop_reason": stop, "stop_sequence": None}
            output = {"usage": {"output_tokens": usage["output_tokens"]}} if b.usage else {}
            yield event("message_delta", {"delta": end, **output})
            yield event("message_stop", {})

        return StreamingResponse(events(), media_type="text/event-stream")

    async def chat(self, request: Request) -> Response:
        body, b = await self._take(request)
        model = body.get("model", "")
        if b.status >= 400:
            return JSONResponse(
                {
                    "error": {
                        "message": b.error_message or f"stand-in {b.status}",
                        "type": b.error_type,
                    }
                },
                status_code=b.status,
            )
        prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4 + 1
        words = b.text.split(" ")
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": len(words),
            "total_tokens": prompt + len(words),
        }
        if b.cost is not None:
            usage["cost"] = b.cost
        if b.cached_tokens:
            usage["prompt_tokens"] += b.cached_tokens
            usage["total_tokens"] += b.cached_tokens
            usage["prompt_tokens_details"] = {"cached_tokens": b.cached_tokens}
        created = int(time.time())
        tools = body.get("tools")
        first = tools[0] if isinstance(tools, list) and tools else None
        declared = first.get("function") if isinstance(first, dict) else None
        name = declared.get("name") if isinstance(declared, dict) else None
        messages = body.get("messages")
        last = messages[-1] if isinstance(messages, list) and messages else None
        answered = isinstance(last, dict) and last.get("role") == "tool"
        call: dict[str, Any] | None = None
        if isinstance(name, str) and not answered:  # a call of the first tool, until answered
            function = {"name": name, "arguments": '{"path": "t"}'}
            call = {"id": f"call_{len(self.received)}", "type": "function", "function": function}
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": b.text}
            if call is not None:
                message = {"role": "assistant", "content": None, "tool_calls": [call]}
            payload: dict[str, Any] = {
                "id": "chatcmpl-standin",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "stop" if call is None else "tool_calls",
                    }
                ],
            }
            if b.usage:
                payload["usage"] = usage
            return JSONResponse(payload)

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events() -> AsyncIterator[str]:
            def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
                data = {
                    "id": "chatcmpl-standin",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                return f"data: {json.dumps(data)}\n\n"

            try:
                yield chunk({"role": "assistant", "content": ""})
                if call is not None:
                    function = call["function"]
                    start = {**call, "index": 0, "function": {**function, "arguments": ""}}
                    yield chunk({"tool_calls": [start]})
                    for piece in (function["arguments"][:5], function["arguments"][5:]):
                        yield chunk(
                            {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                        )
                    yield chunk({}, "tool_calls")
                    words.clear()
                per = max(1, len(words) // max(1, b.chunks))
                for i in range(0, len(words), per):
                    if b.chunk_delay_s:
                        await asyncio.sleep(b.chunk_delay_s)
                    yield chunk({"content": " ".join(words[i : i + per]) + " "})
                    while b.gate is not None and not b.gate.is_set():
                        await asyncio.sleep(0.005)
                    if b.break_stream and i // per + 1 >= b.break_after:
                        raise ConnectionAbortedError("the stand-in drops the stream")
                if call is None:
                    yield chunk({}, "stop")
                if include_usage and b.usage:
                    final = {
                        "id": "chatcmpl-standin",
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    }
                    yield f"data: {json.dumps(final)}\n\n"
                yield "data: [DONE]\n\n"
            except asyncio.CancelledError:
                self.disconnects += 1
                raise

        return StreamingResponse(events(), media_type="text/event-stream")

    # -- the Responses API ------------------------------------------------------------------

    def _new_id(self, kind: str) -> str:
        return f"{kind}_{self._prefix}{next(self._ids):04d}"

    async def responses(self, request: Request) -> Response:
        body, b = await self._take(request)
        if b.status >= 400:
            return _openai_error(b.error_message or f"stand-in {b.status}", b.error_type, b.status)
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.stored:
            message = f"Previous response with id '{previous}' not found."
            return _openai_error(message, "invalid_request_error", 404, "previous_response_id")
        given = body.get("input")
        items = [{"role": "user", "content": given}] if isinstance(given, str) else given or []
        tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
        answered = bool(items) and items[-1].get("type") == "function_call_output"
        if tools and not answered:
            item: dict[str, Any] = {
                "type": "function_call", "id": self._new_id("fc"), "call_id": self._new_id("call"),
                "name": tools[0]["name"], "arguments": json.dumps({"path": "t"}),
                "status": "completed",
            }  # fmt: skip
        else:
            text = {"type": "output_text", "text": b.text, "annotations": []}
            item = {"type": "message", "id": self._new_id("msg"), "status": "completed",
                    "role": "assistant", "content": [text]}  # fmt: skip
        prompt = len(json.dumps([body.get("instructions"), items])) // 4 + 1 + b.cached_tokens
        conversation = body.get("conversation")
        if isinstance(conversation, dict):
            conversation = conversation.get("id")
        # what a real upstream bills: the stored context it continues, sent again
        if previous is not None:
            prompt += self.context.get(previous, 0)
        elif isinstance(conversation, str):
            prompt += self.context.get(f"conversation:{conversation}", 0)
        output = len(b.text.split(" "))
        usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": b.cached_tokens},
                 "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": prompt + output}  # fmt: skip
        response = {
            "id": self._new_id("resp"), "object": "response", "created_at": int(time.time()),
            "status": "completed", "model": body.get("model", ""), "output": [item],
            "usage": usage if b.usage else None, "error": None, "incomplete_details": None,
            "instructions": body.get("instructions"), "metadata": body.get("metadata") or {},
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": body.get("tools") or [],
            "previous_response_id": previous, "store": body.get("store", True),
            "temperature": 1.0, "top_p": 1.0, "text": {"format": {"type": "text"}},
            "truncation": "disabled", "background": bool(body.get("background")),
        }  # fmt: skip
        if body.get("store", True):
            self.context[response["id"]] = prompt + output
            if isinstance(conversation, str):
                self.context[f"conversation:{conversation}"] = prompt + output
            self.stored[response["id"]] = response
            self.inputs[response["id"]] = [
                {"id": self._new_id("item"), "type": "message", **i} for i in items
            ]
        if body.get("background") and not body.get("stream"):  # done at once, told later
            return JSONResponse({**response, "status": "queued", "output": [], "usage": None})
        if not body.get("stream"):
            return JSONResponse(response)
        return StreamingResponse(self._response_events(response, item, b),
                                 media_type="text/event-stream")  # fmt: skip

    async def _response_events(
        self, response: dict[str, Any], item: dict[str, Any], b: Behaviour
    ) -> AsyncIterator[str]:
        numbers = itertools.count()

        def event(kind: str, **data: Any) -> str:
            payload = {"type": kind, "sequence_number": next(numbers), **data}
            return f"event: {kind}\ndata: {json.dumps(payload)}\n\n"

        started = {**response, "status": "in_progress", "output": [], "usage": None}
        yield event("response.created", response=started)
        yield event("response.in_progress", response=started)
        if item["type"] == "function_call":
            yield event("response.output_item.added", output_index=0,
                        item={**item, "arguments": "", "status": "in_progress"})  # fmt: skip
            yield event("response.function_call_arguments.delta", item_id=item["id"],
                        output_index=0, delta=item["arguments"])  # fmt: skip
            yield event("response.function_call_arguments.done", item_id=item["id"],
                        output_index=0, arguments=item["arguments"])  # fmt: skip
        else:
            where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
            yield event("response.output_item.added", output_index=0,
                        item={**item, "content": [], "status": "in_progress"})  # fmt: skip
            empty = {"type": "output_text", "text": "", "annotations": []}
            yield event("response.content_part.added", part=empty, **where)
            for piece in _pieces(b.text):
                if b.chunk_delay_s:
                    await asyncio.sleep(b.chunk_delay_s)
                yield event("response.output_text.delta", delta=piece, logprobs=[], **where)
            yield event("response.output_text.done", text=b.text, logprobs=[], **where)
            yield event("response.content_part.done", part=item["content"][0], **where)
        yield event("response.output_item.done", output_index=0, item=item)
        yield event("response.completed", response=response)

    def _stored(self, request: Request) -> dict[str, Any] | None:
        self.received.append({"path": request.url.path, "method": request.method})
        self.headers.append(dict(request.headers))
        return self.stored.get(request.path_params["rid"])

    async def response(self, request: Request) -> Response:
        found = self._stored(request)
        if self.refuse_retrieval is not None:
            status, message = self.refuse_retrieval
            return _openai_error(message, "invalid_request_error", status)
        if found is None:
            return _openai_error("No response found.", "invalid_request_error", 404)
        if request.method == "DELETE":
            del self.stored[found["id"]]
            return JSONResponse({"id": found["id"], "object": "response", "deleted": True})
        return JSONResponse(found)

    async def input_items(self, request: Request) -> Response:
        found = self._stored(request)
        if found is None:
            return _openai_error("No response found.", "invalid_request_error", 404)
        data = self.inputs.get(found["id"], [])
        first, last = (data[0].get("id"), data[-1].get("id")) if data else (None, None)
        page = {"object": "list", "data": data, "first_id": first, "last_id": last,
                "has_more": False}  # fmt: skip
        return JSONResponse(page)

    async def cancel(self, request: Request) -> Response:
        found = self._stored(request)
        if found is None:
            return _openai_error("No response found.", "invalid_request_error", 404)
        return JSONResponse({**found, "status": "cancelled"})


def _pieces(text: str) -> list[str]:
    """`text` in word-sized deltas that join back to exactly `text`."""
    words = text.split(" ")
    return [words[0], *(" " + w for w in words[1:])]


def _openai_error(message: str, kind: str, status: int, param: str | None = None) -> Response:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": None}}, status
    )
