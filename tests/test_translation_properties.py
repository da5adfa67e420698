"""Properties of translation through the neutral form (hypothesis):

- a conversation (texts, images, tool calls with JSON arguments, tool results) written in
  one API, translated to another and back, keeps every text, tool name, argument and id,
  in order;
- an answer streamed by the upstream, cut into chunks anywhere and translated event by
  event, accumulates to the same answer as the unstreamed one translated whole.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from llm_sessions.protocols import chat_neutral, messages_neutral, responses_neutral
from llm_sessions.protocols.neutral import (
    Answer,
    Finish,
    Image,
    Message,
    Start,
    Text,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    Turn,
    Usage,
)
from llm_sessions.server.translation import WIRES, Translation
from llm_sessions.server.upstream import StreamMeter

_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40)
_name = st.from_regex(r"[a-z_]{1,12}", fullmatch=True)
_id = st.from_regex(r"call_[A-Za-z0-9]{1,10}", fullmatch=True)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_name, inner, max_size=3),
    max_leaves=6,
)
_args = st.dictionaries(_name, _json, max_size=4).map(lambda d: json.dumps(d, ensure_ascii=False))
_image = st.from_regex(r"[A-Za-z0-9+/]{4,40}", fullmatch=True).map(
    lambda data: Image(data=data, media_type="image/png")
)


@st.composite
def conversations(draw: Any) -> Turn:
    """A system prompt, then turns: a user message (texts, maybe an image), and an
    assistant's answer (a text, maybe tool calls, answered by a user message of their
    results) as an agent's conversation goes."""
    messages: list[Message] = []
    for _ in range(draw(st.integers(1, 4))):
        parts: list[Any] = [Text(draw(_text))]
        if draw(st.booleans()):
            parts.append(draw(_image))
        messages.append(Message("user", parts))
        answer: list[Any] = [Text(draw(_text))]
        calls = [
            ToolCall(draw(_id), draw(_name), draw(_args)) for _ in range(draw(st.integers(0, 2)))
        ]
        ids = [c.id for c in calls]
        if len(set(ids)) != len(ids):
            calls = calls[:1]
        messages.append(Message("assistant", answer + calls))
        if calls:
            results = [ToolResult(c.id, [Text(draw(_text))]) for c in calls]
            messages.append(Message("user", list(results)))
    return Turn(model="m", messages=messages, system=[Text(draw(_text))], max_output=100)


def _atoms_of_turn(turn: Turn) -> list[tuple[Any, ...]]:
    """What must survive, in order: texts (run together where one role's follow each
    other, as the APIs may join them), images, tool calls (id, name, arguments as parsed
    JSON), tool results (id, text)."""
    out: list[tuple[Any, ...]] = [("system", "\n\n".join(t.text for t in turn.system))]
    for message in turn.messages:
        for part in message.parts:
            if isinstance(part, Text):
                if out[-1][0] == message.role:
                    out[-1] = (message.role, out[-1][1] + part.text)
                else:
                    out.append((message.role, part.text))
            elif isinstance(part, Image):
                out.append(("image", part.data))
            elif isinstance(part, ToolCall):
                out.append(("call", part.id, part.name, json.loads(part.arguments or "{}")))
            elif isinstance(part, ToolResult):
                texts = "".join(p.text for p in part.parts if isinstance(p, Text))
                out.append(("result", part.call_id, texts))
    return out


FORMS: dict[str, Any] = {"chat": chat_neutral, "messages": messages_neutral,
                         "responses": responses_neutral}  # fmt: skip
PAIRS = [(a, b) for a in FORMS for b in FORMS if a != b]


def _write(api: str, turn: Turn) -> dict[str, Any]:
    if api == "messages":
        return messages_neutral.write_turn(turn, 100)
    written: dict[str, Any] = FORMS[api].write_turn(turn)
    return written


def _read(api: str, body: dict[str, Any], target: str) -> Turn:
    turn: Turn = FORMS[api].read_turn(body, target)
    return turn


@settings(max_examples=150, deadline=None)
@given(conversations(), st.sampled_from(PAIRS))
def test_a_conversation_translated_there_and_back_keeps_everything(
    turn: Turn, pair: tuple[str, str]
) -> None:
    a, b = pair
    body_a = _write(a, turn)
    there = _write(b, _read(a, body_a, b))
    back = _read(b, there, a)
    assert _atoms_of_turn(back) == _atoms_of_turn(_read(a, body_a, b))
    assert _atoms_of_turn(_read(a, _write(a, back), b)) == _atoms_of_turn(turn)


# -- streams ----------------------------------------------------------------------------------


@st.composite
def answers(draw: Any) -> Answer:
    parts: list[Any] = []
    if draw(st.booleans()):
        parts.append(Text(draw(_text)))
    calls = draw(st.lists(st.tuples(_id, _name, _args), max_size=2, unique_by=lambda c: c[0]))
    parts += [ToolCall(*c) for c in calls]
    if not parts:
        parts.append(Text(draw(_text)))
    usage = Usage(input=draw(st.integers(1, 10_000)), output=draw(st.integers(1, 5000)),
                  cache_read=draw(st.integers(0, 5000)))  # fmt: skip
    return Answer("chatcmpl-x", "m", parts, "tool_calls" if calls else "stop", usage)


def _events(answer: Answer, pieces: Any) -> list[Any]:
    """The answer as neutral stream events: texts and arguments in pieces."""
    events: list[Any] = [Start(answer.id, answer.model)]
    calls = 0
    for part in answer.parts:
        if isinstance(part, Text):
            events += [TextDelta(t) for t in pieces(part.text)]
        elif isinstance(part, ToolCall):
            events.append(ToolCallStart(calls, part.id, part.name))
            events += [ToolCallDelta(calls, t) for t in pieces(part.arguments)]
            calls += 1
    events.append(Finish(answer.finish, answer.usage))
    return events


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[i:j] for i, j in zip([0, *points], [*points, len(data)], strict=True)]


def _accumulate_messages(sse: bytes) -> dict[str, Any]:
    """A Messages stream folded into the message it describes (as the SDKs do)."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for event in sse.split(b"\n\n"):
        data = [line[6:] for line in event.split(b"\n") if line.startswith(b"data: ")]
        if not data:
            continue
        e = json.loads(data[0])
        if e["type"] == "message_start":
            message = e["message"]
        elif e["type"] == "content_block_start":
            assert e["index"] == len(message["content"])  # indexes in order, none skipped
            message["content"].append(dict(e["content_block"]))
        elif e["type"] == "content_block_delta":
            block, delta = message["content"][e["index"]], e["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "input_json_delta":
                partial[e["index"]] = partial.get(e["index"], "") + delta["partial_json"]
        elif e["type"] == "content_block_stop":
            block = message["content"][e["index"]]
            if block["type"] == "tool_use":
                block["input"] = json.loads(partial.get(e["index"]) or "{}")
        elif e["type"] == "message_delta":
            message["stop_reason"] = e["delta"]["stop_reason"]
            message["usage"].update(e["usage"])
        elif e["type"] == "message_stop":
            message["stopped"] = True
    return message


def _accumulate_chat(sse: bytes) -> dict[str, Any]:
    """A Chat Completions stream folded into the completion it describes."""
    text, calls, finish, usage = "", {}, None, None
    for event in sse.split(b"\n\n"):
        if not event.startswith(b"data: ") or event == b"data: [DONE]":
            continue
        chunk = json.loads(event[6:])
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                slot["id"] = call.get("id") or slot["id"]
                function = call.get("function") or {}
                slot["name"] = function.get("name") or slot["name"]
                slot["arguments"] += function.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    return {"text": text, "calls": [calls[i] for i in sorted(calls)], "finish": finish,
            "usage": usage, "done": sse.rstrip().endswith(b"data: [DONE]")}  # fmt: skip


def _pieces(draw: Any) -> Any:
    def pieces(text: str) -> list[str]:
        cuts = sorted(set(draw(st.lists(st.integers(1, max(len(text) - 1, 1)), max_size=4))))
        return [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True) if text[i:j]]

    return pieces


@settings(max_examples=150, deadline=None)
@given(answers(), st.sampled_from(PAIRS), st.data())
def test_a_stream_cut_anywhere_translates_to_the_unstreamed_answer(
    answer: Answer, pair: tuple[str, str], data: Any
) -> None:
    client, upstream = pair
    translation = Translation(WIRES[client], WIRES[upstream])
    # the upstream's stream, as its own API writes it, cut into arbitrary chunks
    writer: Any = {
        "messages": lambda: messages_neutral.StreamWriter("m"),
        "chat": lambda: chat_neutral.StreamWriter("m", include_usage=True),
        "responses": lambda: responses_neutral.StreamWriter("m"),
    }[upstream]()
    sse = b"".join(writer.write(e) for e in _events(answer, _pieces(data.draw)))
    chunks = _cut(sse, data.draw(st.lists(st.integers(0, 10**6), max_size=8)))
    target = WIRES[upstream]
    meter = StreamMeter(target.reader({"stream_options": {"include_usage": True}}))
    translator = translation.stream({"stream_options": {"include_usage": True}}, "m", 0)
    out = b"".join(translator.feed(meter.feed(chunk)) for chunk in chunks)
    out += translator.feed(meter.rest()) + translator.end(meter.held)
    # the same answer unstreamed, translated whole
    body = FORMS[upstream].write_answer(answer)
    whole = json.loads(translation.answer(json.dumps(body).encode()))
    if client == "messages":
        streamed = _accumulate_messages(out)
        assert streamed.pop("stopped") is True
        for block in whole["content"]:
            if block["type"] == "tool_use":
                block["input"] = block["input"]
        assert [_block(b) for b in streamed["content"]] == [_block(b) for b in whole["content"]]
        assert streamed["stop_reason"] == whole["stop_reason"]
        assert streamed["usage"] == whole["usage"]
    elif client == "responses":
        streamed = _accumulate_responses(out)
        assert [_item(i) for i in streamed["output"]] == [_item(i) for i in whole["output"]]
        assert streamed["status"] == whole["status"]
        assert streamed["usage"] == whole["usage"]
    else:
        streamed = _accumulate_chat(out)
        message = whole["choices"][0]["message"]
        assert streamed["done"] is True
        assert streamed["text"] == (message["content"] or "")
        assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in streamed["calls"]] == [
            (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in message.get("tool_calls") or []
        ]
        assert streamed["finish"] == whole["choices"][0]["finish_reason"]
        assert streamed["usage"] == whole["usage"]
    assert meter.usage is not None  # the upstream's usage was seen: what the session is billed


def _accumulate_responses(sse: bytes) -> dict[str, Any]:
    """A Responses stream folded into its response, item by item from the deltas (and
    checked against the response the completed event carries)."""
    output: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    numbers = []
    for event in sse.split(b"\n\n"):
        data = [line[6:] for line in event.split(b"\n") if line.startswith(b"data: ")]
        if not data:
            continue
        e = json.loads(data[0])
        numbers.append(e["sequence_number"])
        if e["type"] == "response.output_item.added":
            assert e["output_index"] == len(output)
            output.append(e["item"])
        elif e["type"] == "response.content_part.added":
            output[e["output_index"]]["content"].append(e["part"])
        elif e["type"] == "response.output_text.delta":
            output[e["output_index"]]["content"][e["content_index"]]["text"] += e["delta"]
        elif e["type"] == "response.function_call_arguments.delta":
            output[e["output_index"]]["arguments"] += e["delta"]
        elif e["type"] in ("response.completed", "response.incomplete"):
            final = e["response"]
    assert numbers == list(range(len(numbers)))
    assert [_item(i) for i in output] == [_item(i) for i in final["output"]]
    return final


def _item(item: dict[str, Any]) -> tuple[Any, ...]:
    if item["type"] == "message":
        return ("message", "".join(p.get("text", "") for p in item["content"]))
    return ("call", item["call_id"], item["name"], json.loads(item["arguments"] or "{}"))


def _block(block: dict[str, Any]) -> tuple[Any, ...]:
    if block["type"] == "text":
        return ("text", block["text"])
    return ("tool_use", block["id"], block["name"], block["input"])
