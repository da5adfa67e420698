"""The neutral form every API translates through: one turn (a request), one answer, and
one vocabulary of stream events. Each protocol module reads its own shapes into these
and writes them back out, so serving a client's API on an upstream that speaks another
is ``target.write(source.read(x))``: three APIs need six mappings, a fourth adds two.
(The shape follows the Vercel AI SDK's provider interface: one prompt type in, one
stream-part type out, every provider mapping to and from them.)

The form is plain data: dataclasses of str, int, dict and list. Tool-call arguments stay
JSON text, as the APIs stream them; a tool's schema, a cache marker and an image's source
are kept as the client sent them. At the end, the few rules every API's mapping shares.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "EFFORTS",
    "Answer",
    "Event",
    "File",
    "Finish",
    "Image",
    "Message",
    "Part",
    "Reasoning",
    "ReasoningDelta",
    "Start",
    "StreamError",
    "Text",
    "TextDelta",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStart",
    "ToolResult",
    "Turn",
    "Untranslatable",
    "Usage",
    "UsageEvent",
    "answer_id",
    "count",
    "effort",
    "result_text",
    "split_data_url",
    "sse",
    "tool_name",
]

#: Why an answer ended, in the neutral words (each API maps its own to and from them).
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "refusal", "error"]


class Untranslatable(ValueError):
    """A request says something the target API can't: `field` names it (the client's
    field), `target` the API it would have gone to. Never dropped silently: a 400."""

    def __init__(self, field: str, target: str, why: str) -> None:
        self.field = field
        self.target = target
        super().__init__(f"'{field}' can't be translated to the {target} API: {why}")


# -- parts of a message -------------------------------------------------------------------


@dataclass
class Text:
    text: str
    cache_control: dict[str, Any] | None = None


@dataclass
class Image:
    """An image by URL, or inline (base64 `data` of `media_type`)."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    cache_control: dict[str, Any] | None = None


@dataclass
class File:
    """A document (a PDF...): inline base64 `data`, or a `url`, or an uploaded `file_id`."""

    data: str | None = None
    url: str | None = None
    file_id: str | None = None
    media_type: str | None = None
    name: str | None = None
    cache_control: dict[str, Any] | None = None


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass
class ToolResult:
    call_id: str
    parts: list[Text | Image | File]
    is_error: bool = False
    cache_control: dict[str, Any] | None = None


@dataclass
class Reasoning:
    """A model's reasoning: its text (a summary where the provider gives one), and what
    lets the same provider take it back (`signature`, `redacted` data, `encrypted`
    content); `provider` says whose those are (they mean nothing to another)."""

    text: str = ""
    signature: str | None = None
    redacted: str | None = None
    encrypted: str | None = None
    id: str | None = None
    provider: str = ""


Part = Text | Image | File | ToolCall | ToolResult | Reasoning


@dataclass
class Message:
    """``user``, ``assistant`` or ``system`` (a system or developer message among the
    others); tool results travel in user messages, as parts."""

    role: Literal["user", "assistant", "system"]
    parts: list[Part]


@dataclass
class Tool:
    name: str
    description: str | None
    schema: dict[str, Any]
    strict: bool | None = None
    cache_control: dict[str, Any] | None = None


@dataclass
class Turn:
    """A request, everything it says: the model, instructions, the conversation, tools
    and how to use them, output limit, sampling, reasoning, and who asks."""

    model: str
    messages: list[Message]
    system: list[Text] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    # "auto", "none", "required" (any tool), or {"name": ...} (that one)
    tool_choice: str | dict[str, str] | None = None
    parallel_tool_calls: bool | None = None
    max_output: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    # "minimal" | "low" | "medium" | "high", or a token budget, when reasoning is asked for
    reasoning_effort: str | None = None
    reasoning_budget: int | None = None
    user: str | None = None  # who asks (Messages' metadata.user_id, OpenAI's user...)
    metadata: dict[str, Any] | None = None
    # tools the client offered that the target can't run, left out (`drop_tools`)
    dropped_tools: list[str] = field(default_factory=list)


# -- the answer ---------------------------------------------------------------------------


@dataclass
class Usage:
    input: int = 0  # uncached input tokens
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0  # of `output`, where the provider says

    @property
    def prompt(self) -> int:
        """Every input token, cached or not (what OpenAI's prompt_tokens counts)."""
        return self.input + self.cache_read + self.cache_write


@dataclass
class Answer:
    id: str
    model: str
    parts: list[Text | ToolCall | Reasoning]
    finish: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    refusal: str | None = None


# -- stream events ------------------------------------------------------------------------


@dataclass
class Start:
    id: str
    model: str
    usage: Usage = field(default_factory=Usage)  # the input's, where it is known this early


@dataclass
class TextDelta:
    text: str


@dataclass
class ReasoningDelta:
    text: str = ""
    signature: str | None = None  # the signature, once it comes (Messages)
    redacted: str | None = None


@dataclass
class ToolCallStart:
    index: int  # the call's place among the answer's tool calls
    id: str
    name: str


@dataclass
class ToolCallDelta:
    index: int
    arguments: str  # a fragment of the JSON arguments


@dataclass
class UsageEvent:
    usage: Usage


@dataclass
class Finish:
    reason: FinishReason
    usage: Usage | None = None


@dataclass
class StreamError:
    message: str
    kind: str = "api_error"


Event = (
    Start
    | TextDelta
    | ReasoningDelta
    | ToolCallStart
    | ToolCallDelta
    | UsageEvent
    | Finish
    | StreamError
)


# -- what every API's mapping shares -----------------------------------------------------

#: The reasoning efforts the OpenAI APIs take.
EFFORTS = ("minimal", "low", "medium", "high")
_ID_PREFIXES = ("chatcmpl-", "msg_", "resp_")


def count(value: Any) -> int:
    """A token count as an API wrote it: an int, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def split_data_url(url: str) -> tuple[str | None, str | None]:
    """``data:image/png;base64,AAAA`` -> ("AAAA", "image/png"); anything else: Nones."""
    if not url.startswith("data:"):
        return None, None
    head, _, data = url.partition(",")
    return data, head[5:].split(";")[0] or None


def effort(turn: Turn) -> str | None:
    """The reasoning effort a turn asks for: its own, else that of its token budget
    (2,048 tokens or fewer low, 8,192 medium, more high); None when it asks for none."""
    if turn.reasoning_effort:
        return turn.reasoning_effort
    budget = turn.reasoning_budget
    if not budget:
        return None
    return "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"


def result_text(result: ToolResult) -> str:
    """A tool result as the text an API that takes only text holds (its images follow in
    a user message: the caller moves them)."""
    text = "\n".join(p.text for p in result.parts if isinstance(p, Text))
    if not text and any(isinstance(p, Image | File) for p in result.parts):
        text = "(see the attached image)"
    return "Error: " + text if result.is_error else text


def answer_id(prefix: str, upstream_id: str) -> str:
    """An answer's id in the client's API (`prefix`: ``chatcmpl-``, ``msg_``, ``resp_``),
    from the upstream's (whatever API's prefix it had replaced)."""
    if upstream_id.startswith(prefix):
        return upstream_id
    for other in _ID_PREFIXES:
        upstream_id = upstream_id.replace(other, "")
    return prefix + (upstream_id or secrets.token_hex(12))


def tool_name(tool: Any) -> str:
    """What names a tool that is left out: its name, else its type."""
    if not isinstance(tool, dict):
        return "?"
    return str(tool.get("name") or tool.get("type") or "?")[:64]


def sse(kind: str, data: Any) -> bytes:
    """One named server-sent event."""
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), json.dumps(data).encode())
