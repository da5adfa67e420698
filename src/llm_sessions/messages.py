"""Reading chat messages: `MessageInfo`s, OpenAI-style dicts, or objects with role/content.

Content may be a string or a list of OpenAI-style parts; the text of a list is its text
parts joined with "\\n". Text is encoded as UTF-8 with ``surrogatepass``, because JSON may
legally carry lone surrogates (``"\\ud800"``) and they must not crash a hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

__all__ = [
    "content_text",
    "is_mapping",
    "message_content",
    "message_role",
    "message_text",
    "utf8",
]


def utf8(text: str) -> bytes:
    """`text` as UTF-8; lone surrogates pass through instead of raising."""
    return text.encode("utf-8", "surrogatepass")


def is_mapping(value: Any) -> TypeGuard[Mapping[Any, Any]]:
    """`isinstance(value, Mapping)`, answered at once for a dict (what parsed JSON holds;
    the abstract class's check is slow)."""
    return type(value) is dict or isinstance(value, Mapping)


def message_role(message: Any) -> str:
    role = message.get("role") if is_mapping(message) else getattr(message, "role", "")
    return role if isinstance(role, str) else ""


def message_content(message: Any) -> Any:
    if is_mapping(message):
        return message.get("content")
    return getattr(message, "content", None)


def content_text(content: Any) -> str:
    """Text of a message content: a string, or the text parts of a list joined with "\\n"."""
    if type(content) is str or isinstance(content, str):
        return content
    if isinstance(content, list | tuple):
        return "\n".join(_part_texts(content))
    return ""


def _part_texts(parts: Iterable[Any]) -> Iterable[str]:
    for part in parts:
        if isinstance(part, str):
            yield part
        elif is_mapping(part):
            text = part.get("text")
            if isinstance(text, str) and part.get("type", "text") in ("text", "input_text"):
                yield text


def message_text(message: Any) -> str:
    return content_text(message_content(message))
