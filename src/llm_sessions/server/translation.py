"""Serving a request on an upstream that speaks another API: the request read into the
neutral form and written in the upstream's API, the answer read back and written in the
client's, a stream event by event as the upstream sends it (nothing waits for a whole
answer). Which API a model's upstream is sent is the settings' (`sends_as`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..protocols import chat_neutral, messages_neutral, responses_neutral
from ..protocols.neutral import Event, Turn, Untranslatable
from .settings import Settings
from .upstream import read_json
from .wire import CHAT, MESSAGES, RESPONSES, Wire

__all__ = [
    "FORMS",
    "WIRES",
    "StreamTranslator",
    "Translation",
    "Untranslatable",
    "untranslatable",
]

#: The wire of each API a request may go out in.
WIRES = {"chat": CHAT, "messages": MESSAGES, "responses": RESPONSES}
#: Each API's mapping to and from the neutral form.
FORMS: dict[str, Any] = {
    "chat": chat_neutral,
    "messages": messages_neutral,
    "responses": responses_neutral,
}


class _Writer(Protocol):
    def write(self, event: Event) -> bytes: ...


@dataclass(frozen=True)
class Translation:
    """A request of the `source` (the client's) API sent in the `target` API."""

    source: Wire
    target: Wire

    @property
    def label(self) -> str:
        """``messages->chat``: what ``X-Session-Translated`` and the logs say."""
        return f"{self.source.api}->{self.target.api}"

    def turn(self, body: dict[str, Any], drop_tools: bool = False) -> Turn:
        """The client's request in the neutral form; `Untranslatable` naming the field
        (tools the target can't run are left out instead with `drop_tools`)."""
        turn: Turn = FORMS[self.source.api].read_turn(body, self.target.api, drop_tools)
        return turn

    def request(
        self,
        body: dict[str, Any],
        sent_as: str,
        max_output: int | None,
        default_max: int,
        reasoning: bool = False,
        drop_tools: bool = False,
    ) -> tuple[dict[str, Any], list[str]]:
        """The upstream's request: the client's translated, with the model as the
        upstream names it and `max_output` (the limit the cap fitted) when set; reasoning
        settings only to a model known to take them (`reasoning`). With it, the tools
        left out (`drop_tools`)."""
        try:
            turn = self.turn(body, drop_tools)
        except Untranslatable as exc:
            raise Untranslatable(exc.field, self.target.api, str(exc).split(": ", 1)[-1]) from None
        turn.model = sent_as
        if turn.stop and self.target.api == "responses":
            field = "stop_sequences" if self.source.api == "messages" else "stop"
            raise Untranslatable(field, "responses", "that API has no stop sequences")
        if max_output is not None:
            turn.max_output = max_output
        if self.target.api == "messages":
            return messages_neutral.write_turn(turn, default_max, reasoning), turn.dropped_tools
        written: dict[str, Any] = FORMS[self.target.api].write_turn(turn, reasoning)
        return written, turn.dropped_tools

    def answer(self, content: bytes) -> bytes:
        """The upstream's answer (its JSON) as the client's."""
        answer = FORMS[self.target.api].read_answer(read_json(content))
        out = FORMS[self.source.api].write_answer(answer)
        return json.dumps(out, ensure_ascii=False).encode()

    def stream(self, body: dict[str, Any], model: str, prompt_tokens: int) -> StreamTranslator:
        """A translator of the upstream's stream into the client's."""
        reader = FORMS[self.target.api].StreamReader()
        writer: _Writer
        if self.source.api == "messages":
            writer = messages_neutral.StreamWriter(model, prompt_tokens)
        elif self.source.api == "chat":
            asked = (body.get("stream_options") or {}).get("include_usage") is True
            writer = chat_neutral.StreamWriter(model, asked)
        else:
            writer = responses_neutral.StreamWriter(model)
        return StreamTranslator(reader, writer)

    @staticmethod
    def error_message(content: bytes) -> str:
        """The message of an upstream's error body, in any of the APIs' shapes."""
        try:
            data = read_json(content)
        except ValueError:
            return content[:512].decode("utf-8", "replace") or "the upstream refused the request"
        error = data.get("error") if isinstance(data, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        return str(message) if message else "the upstream refused the request"


def untranslatable(settings: Settings, body: dict[str, Any], api: str) -> dict[str, Untranslatable]:
    """What keeps a request of `api` from each API some upstream would be sent it in
    instead (none: every translation it may need can be made), checked before the
    session is touched, so a request no model can take changes nothing."""
    drop = settings.translation_unsupported_tools == "drop"
    out: dict[str, Untranslatable] = {}
    for target in {up.sends_as(api) for up in settings.upstreams} - {api, None}:
        try:
            FORMS[api].read_turn(body, target, drop)
        except Untranslatable as exc:
            out[str(target)] = exc
    return out


class StreamTranslator:
    """Server-sent events of the upstream's API in, of the client's out: whole events (as
    a `StreamMeter` passes them) read into neutral events and written again."""

    def __init__(self, reader: Any, writer: _Writer) -> None:
        self.reader = reader
        self.writer = writer
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for event in data.replace(b"\r\n", b"\n").split(b"\n\n"):
            payload = b"\n".join(
                line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")
            )
            if not payload:
                continue
            if payload == b"[DONE]":
                out += [self.writer.write(e) for e in self._done()]
                continue
            try:
                parsed = read_json(payload)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                out += [self.writer.write(e) for e in self.reader.read(parsed)]
                self.finished = self.finished or bool(getattr(self.reader, "finished", False))
        return b"".join(out)

    def end(self, held: bytes) -> bytes:
        """The stream's last event (held back until the cost was recorded), and the end
        of the client's stream, which an upstream that ended without its own still gets."""
        out = self.feed(held)
        if not self.finished:
            out += b"".join(self.writer.write(e) for e in self._done())
        return out

    def _done(self) -> Iterator[Event]:
        self.finished = True
        yield from self.reader.done()
