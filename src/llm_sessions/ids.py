"""Session ids: read from a request header, or derived from the first user message."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

from .errors import InvalidRequest, InvalidSessionId
from .messages import message_role, message_text, utf8

__all__ = [
    "DEFAULT_HEADER_NAME",
    "DEFAULT_ID_SOURCES",
    "MAX_SESSION_ID_LENGTH",
    "InvalidSessionId",
    "body_id",
    "derive_session_id",
    "derive_session_id_from_messages",
    "check_id_sources",
    "escape_scope",
    "find_session_id",
    "get_session_id",
    "key_scope",
    "session_key",
    "split_key",
]

DEFAULT_HEADER_NAME = "x-session-id"
MAX_SESSION_ID_LENGTH = 256
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")

#: Where a session id is looked for, first present wins (then it is derived):
#: ``"header"`` is the configured header (``Config.header_name``); any other name is a
#: header of that name (``"header:NAME"`` is the same); ``"metadata.user_id"`` the
#: ``session_id`` of the JSON in a body's ``metadata.user_id`` (Claude Code);
#: ``"prompt_cache_key"`` that body field; ``"previous_response_id"`` (the OpenAI
#: Responses API) names a response, whose session the routing flow looks up;
#: ``"conversation"`` a Responses conversation (a string id, or an object with ``id``).
DEFAULT_ID_SOURCES = (
    "header",
    "x-claude-code-session-id",  # Claude Code
    "session_id",  # Codex and others
    "session-id",
    "x-session-affinity",  # opencode
    "previous_response_id",  # the Responses API, in the body
    "conversation",
    "metadata.user_id",  # Claude Code, in the body
    "prompt_cache_key",
)
_BODY_SOURCES = ("metadata.user_id", "prompt_cache_key", "previous_response_id", "conversation")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def derive_session_id(first_user_message: str, *, scope: str = "") -> str:
    """64-hex SHA-256 of the message (byte-identical to the reference when `scope` is empty).

    With a `scope` (a tenant, an API-key hash) it hashes ``scope + b"\\0" + message``, so two
    tenants who open with the same words never share a session.
    """
    if not isinstance(first_user_message, str):
        kind = type(first_user_message).__name__
        raise TypeError(f"first_user_message must be a str, got {kind}")
    if not isinstance(scope, str):
        raise TypeError(f"scope must be a str, got {type(scope).__name__}")
    data = utf8(first_user_message)
    if scope:
        data = utf8(scope) + b"\x00" + data
    return hashlib.sha256(data).hexdigest()


def derive_session_id_from_messages(messages: Iterable[Any], *, scope: str = "") -> str | None:
    """`derive_session_id` of the first ``user`` message with non-empty text, else None."""
    for message in messages:
        if message_role(message) == "user":
            text = message_text(message)
            if text:
                return derive_session_id(text, scope=scope)
    return None


def get_session_id(headers: Any, header_name: str = DEFAULT_HEADER_NAME) -> str | None:
    """The session id carried by `headers`, or None when absent or empty.

    `headers` is any mapping (dict, Starlette/httpx/werkzeug headers) or an iterable of
    (name, value) pairs; names match case-insensitively; a value may be str, bytes
    (decoded as latin-1) or a list (its first element). Spaces and tabs around the value
    are stripped. A present id longer than 256 characters or with a character outside
    printable ASCII (0x20-0x7E) raises `InvalidSessionId`.
    """
    name = header_name or DEFAULT_HEADER_NAME
    value = _lookup(headers, name)
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("latin-1")
    if not isinstance(value, str):
        kind = type(value).__name__
        raise TypeError(f"header {name!r} has a {kind} value, expected str or bytes")
    return _checked(value, f"{name} header", name)


def _checked(value: str, what: str, param: str) -> str | None:
    """A present id, stripped; None when blank; `InvalidSessionId` when it can't be one."""
    value = value.strip(" \t")
    if not value:
        return None
    if len(value) > MAX_SESSION_ID_LENGTH:
        raise InvalidSessionId(
            f"{what} is {len(value)} characters long; the limit is {MAX_SESSION_ID_LENGTH}",
            param,
        )
    bad = _NOT_PRINTABLE.search(value)
    if bad is not None:
        raise InvalidSessionId(
            f"{what} has a character outside printable ASCII "
            f"(U+{ord(bad.group()):04X} at position {bad.start()})",
            param,
        )
    return value


def check_id_sources(sources: Iterable[str]) -> tuple[str, ...]:
    """`sources` as a tuple of canonical names: ``"header"``, the body sources, and any
    other header by its lowercased name (``"header:NAME"`` becomes ``"name"``)."""
    if isinstance(sources, str):
        raise ValueError("id_sources must be a list of sources, not one string")
    checked = []
    for source in sources:
        if source == "header" or source in _BODY_SOURCES:
            checked.append(source)
            continue
        name = source.removeprefix("header:") if isinstance(source, str) else ""
        if not _HEADER_NAME.match(name):
            raise ValueError(
                f"unknown session id source {source!r}: use 'header' (the configured "
                "header), a header's name, or one of the body's: " + ", ".join(_BODY_SOURCES)
            )
        checked.append(name.lower())
    return tuple(checked)


def find_session_id(
    headers: Any,
    body: Any,
    sources: Iterable[str] = DEFAULT_ID_SOURCES,
    header_name: str = DEFAULT_HEADER_NAME,
) -> tuple[str, str] | None:
    """``(session id, where it came from)`` from the first of `sources` (canonical, see
    `check_id_sources`) present in the request's `headers` or `body`, or None; a header
    source is reported by the header's name. A present value that can't be an id (over
    256 characters, or outside printable ASCII) raises `InvalidSessionId`."""
    configured = (header_name or DEFAULT_HEADER_NAME).lower()
    for source in sources:
        where = configured if source == "header" else source
        if where == "metadata.user_id":
            value = _metadata_session_id(body)
        elif where in _BODY_SOURCES:
            value = body_id(body, where)
        else:
            value = get_session_id(headers, where)
        if value is not None:
            return value, where
    return None


def body_id(body: Any, name: str) -> str | None:
    """The id in the body field `name` (a string; for ``conversation`` also an object
    with an ``id``), stripped; None when absent or blank. `InvalidSessionId` when it can't
    be an id (see `get_session_id`); `InvalidRequest` when it is not a string."""
    raw = body.get(name) if isinstance(body, dict) else None
    if name == "conversation" and isinstance(raw, dict):
        raw = raw.get("id")
        name = "conversation.id"
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InvalidRequest(f"'{name}' must be a string", name)
    return _checked(raw, f"'{name}'", name)


def _metadata_session_id(body: Any) -> str | None:
    """The ``session_id`` in the JSON of ``metadata.user_id`` (Claude Code), if any."""
    metadata = body.get("metadata") if isinstance(body, dict) else None
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if not isinstance(user_id, str) or not user_id.startswith("{"):
        return None
    try:
        value = json.loads(user_id).get("session_id")
    except (ValueError, AttributeError):
        return None
    if not isinstance(value, str):
        return None
    return _checked(value, "the session_id in metadata.user_id", "metadata.user_id")


def _lookup(headers: Any, name: str) -> Any:
    getter = getattr(headers, "get", None)
    if getter is not None:
        value = getter(name)
        if value is not None:
            return value
    items: Iterable[Any] = headers.items() if hasattr(headers, "items") else headers
    wanted = name.lower()
    for raw_key, value in items:
        key = (
            bytes(raw_key).decode("latin-1") if isinstance(raw_key, bytes | bytearray) else raw_key
        )
        if isinstance(key, str) and key.lower() == wanted:
            return value
    return None


# -- store keys -------------------------------------------------------------------------
# A store key joins a caller's scope and a session id so that no two (scope, id) pairs
# share a key: both halves are escaped ("%" -> "%25", ":" -> "%3A") and joined by the
# only raw ":" in the key. An id without either character and without a scope is its own
# key, so unscoped sessions keep the reference's keys. The scope half comes first, so a
# scope's keys are selected by their prefix (and on Redis by a SCAN MATCH on its tag).


def _escape(text: str) -> str:
    if "%" in text or ":" in text:
        return text.replace("%", "%25").replace(":", "%3A")
    return text


def _unescape(text: str) -> str:
    return text.replace("%3A", ":").replace("%25", "%") if "%" in text else text


def escape_scope(scope: str) -> str:
    """`scope` as the scope half of its keys (compare with `key_scope`)."""
    return _escape(scope)


def session_key(session_id: str, scope: str = "") -> str:
    """The store key of `session_id` in `scope`; distinct (scope, id) pairs never share one."""
    if not isinstance(session_id, str):
        raise TypeError(f"session_id must be a str, got {type(session_id).__name__}")
    if not isinstance(scope, str):
        raise TypeError(f"scope must be a str, got {type(scope).__name__}")
    return f"{_escape(scope)}:{_escape(session_id)}" if scope else _escape(session_id)


def key_scope(key: str) -> str:
    """The escaped scope half of a store key ("" for an unscoped key)."""
    head, sep, _ = key.partition(":")
    return head if sep else ""


def split_key(key: str) -> tuple[str, str]:
    """``(scope, session_id)`` of a key made by `session_key` (its inverse)."""
    head, sep, tail = key.partition(":")
    return (_unescape(head), _unescape(tail)) if sep else ("", _unescape(head))
