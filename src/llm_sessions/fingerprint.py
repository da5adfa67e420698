"""Request fingerprints and size estimates: pure functions of a request's content."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from .messages import message_role, message_text, utf8

__all__ = [
    "CACHE_STICKY_MESSAGE_TOKENS",
    "CACHE_STICKY_TOTAL_TOKENS",
    "HASH_PREFIX_CHARS",
    "hash_request_content",
    "normalized_head",
    "normalized_tail",
    "provider_from_model",
    "fingerprint_turn",
    "should_cache_sticky",
    "sticky_by_size",
    "tool_calls_of",
    "turn_fingerprint",
    "utf8_len",
]

HASH_PREFIX_CHARS = 500
CACHE_STICKY_MESSAGE_TOKENS = 3000
CACHE_STICKY_TOTAL_TOKENS = 5000
_BYTES_PER_TOKEN = 3  # 4 for English, 2 for CJK and code: 3 as a conservative average
_WINDOW = 2048


def normalized_head(text: str, n: int = HASH_PREFIX_CHARS) -> str:
    """The first `n` characters of ``" ".join(text.split())``, reading only what it needs.

    Windows of `text` double until their whole words fill `n` characters, so the cost
    depends on the prefix needed, not on the length of `text`.
    """
    window = _WINDOW
    while True:
        if window >= len(text):
            return " ".join(text.split())[:n]
        chunk = text[:window]
        words = chunk.split()
        if words and not text[window].isspace() and not chunk[-1].isspace():
            words.pop()  # the last word may continue past the window
        joined = " ".join(words)
        if len(joined) >= n:
            return joined[:n]
        window *= 4


def normalized_tail(text: str, n: int = HASH_PREFIX_CHARS) -> str:
    """The last `n` characters of ``" ".join(text.split())``, reading only what it needs."""
    window = _WINDOW
    while True:
        if window >= len(text):
            return " ".join(text.split())[-n:]
        chunk = text[-window:]
        words = chunk.split()
        if words and not text[-window - 1].isspace() and not chunk[0].isspace():
            words.pop(0)  # the first word may start before the window
        joined = " ".join(words)
        if len(joined) >= n:
            return joined[-n:]
        window *= 4


def hash_request_content(content: str, tool_names: Iterable[str] = ()) -> str:
    """32-hex fingerprint of a request: whitespace-normalized first 500 characters + tools.

    Strips, collapses every run of Unicode whitespace to one space, keeps the first 500
    characters, appends ``"|tools:" + ",".join(sorted(tool_names))`` when there are tool
    names, and returns the first 32 hex digits of the SHA-256.
    """
    if not isinstance(content, str):
        raise TypeError(f"content must be a str, got {type(content).__name__}")
    names = sorted(tool_names)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"tool names must be str, got {type(name).__name__}")
    text = normalized_head(content)
    if names:
        text += "|tools:" + ",".join(names)
    return hashlib.sha256(utf8(text)).hexdigest()[:32]


def provider_from_model(model_id: str) -> str:
    """``"anthropic/claude-sonnet-4.6"`` -> ``"anthropic"``; no or empty prefix -> ``"default"``."""
    provider, slash, _ = model_id.partition("/")
    return provider if slash and provider else "default"


def utf8_len(text: str) -> int:
    """Length of `text` in UTF-8 bytes, without copying ASCII text."""
    return len(text) if text.isascii() else len(utf8(text))


def should_cache_sticky(messages: Iterable[Any]) -> bool:
    """True when the context is large enough to pin its model for the prefix cache.

    Tokens are estimated as UTF-8 bytes // 3: one message of 3000 tokens, or all of them
    together reaching 5000, is enough.
    """
    return sticky_by_size([utf8_len(message_text(m)) for m in messages])


def sticky_by_size(sizes: Sequence[int]) -> bool:
    """`should_cache_sticky` from the messages' UTF-8 sizes."""
    if not sizes:
        return False
    return (
        max(sizes) // _BYTES_PER_TOKEN >= CACHE_STICKY_MESSAGE_TOKENS
        or sum(sizes) // _BYTES_PER_TOKEN >= CACHE_STICKY_TOTAL_TOKENS
    )


def tool_calls_of(message: Any) -> list[tuple[str, str]]:
    """``(name, arguments)`` of the tool calls an (OpenAI-style) assistant message makes;
    arguments as canonical JSON when they parse (key order and spacing don't matter),
    else as sent."""
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    found = []
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        arguments = function.get("arguments")
        found.append((function["name"], canonical_arguments(arguments)))
    return found


def canonical_arguments(arguments: Any) -> str:
    """Tool-call arguments (a JSON string, or already parsed) as canonical JSON text."""
    value = arguments
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments)
        except ValueError:
            return arguments
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return str(arguments)


def turn_fingerprint(messages: Sequence[Any]) -> str:
    """32-hex fingerprint of the latest turn, for loop detection (see `fingerprint_turn`)."""
    roles = [message_role(m) for m in messages]
    return fingerprint_turn(messages, roles, [message_text(m) for m in messages])


def fingerprint_turn(messages: Sequence[Any], roles: Sequence[str], texts: Sequence[str]) -> str:
    """32-hex fingerprint of the latest turn, for loop detection.

    Hashes every message after the last assistant message (all of them when there is
    none; tool results among them): its role and the first and last 500 characters of its
    whitespace-normalized text, so two long build logs that differ only at the end do not
    match; plus each tool call of that assistant message, by name and by the first and
    last 500 characters of its canonical arguments, so the same tool asked about four
    different cities is four different turns. Tool call ids are left out: they differ on
    every call of a looping agent.
    """
    last_assistant = -1
    for i in range(len(roles) - 1, -1, -1):
        if roles[i] == "assistant":
            last_assistant = i
            break
    # each field ends with \x1f and each item with \x1e; hashed in one call
    items = [
        "\x1f".join((roles[i], *_normalized_ends(texts[i]), "\x1e"))
        for i in range(last_assistant + 1, len(roles))
    ]
    if last_assistant >= 0:
        items.append("|tools:")
        for name, arguments in sorted(tool_calls_of(messages[last_assistant])):
            items.append("\x1f".join((name, *_normalized_ends(arguments), "\x1e")))
    return hashlib.sha256(utf8("".join(items))).hexdigest()[:32]


def _normalized_ends(text: str) -> tuple[str, str]:
    """`normalized_head` and `normalized_tail` of `text` (a short one normalized once)."""
    if len(text) <= _WINDOW:
        normalized = " ".join(text.split())
        return normalized[:HASH_PREFIX_CHARS], normalized[-HASH_PREFIX_CHARS:]
    return normalized_head(text), normalized_tail(text)
