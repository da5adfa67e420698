"""Session ids from headers and from the first user message."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers

from llm_sessions import (
    InvalidSessionId,
    MessageInfo,
    derive_session_id,
    derive_session_id_from_messages,
    get_session_id,
)


def test_derive_matches_the_reference_byte_for_byte() -> None:
    assert derive_session_id("hello") == hashlib.sha256(b"hello").hexdigest()
    assert derive_session_id("héllo 会话") == hashlib.sha256("héllo 会话".encode()).hexdigest()
    assert derive_session_id("") == hashlib.sha256(b"").hexdigest()


def test_derive_with_a_scope() -> None:
    assert (
        derive_session_id("hi", scope="tenant-a") == hashlib.sha256(b"tenant-a\x00hi").hexdigest()
    )
    assert derive_session_id("hi", scope="a") != derive_session_id("hi", scope="b")
    assert derive_session_id("hi", scope="") == derive_session_id("hi")


@given(st.text(), st.text(min_size=1), st.text(min_size=1))
def test_scopes_never_collide_with_each_other_or_no_scope(msg: str, a: str, b: str) -> None:
    ids = {derive_session_id(msg), derive_session_id(msg, scope=a)}
    assert len(ids) == 2
    if a != b:
        assert derive_session_id(msg, scope=a) != derive_session_id(msg, scope=b)


def test_derive_tolerates_lone_surrogates() -> None:
    assert len(derive_session_id("\ud800")) == 64


def test_derive_type_errors() -> None:
    with pytest.raises(TypeError):
        derive_session_id(b"hi")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        derive_session_id("hi", scope=None)  # type: ignore[arg-type]


def test_derive_from_messages_takes_the_first_user_text() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": ""},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "assistant", "content": "hello"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a"},
                {"type": "image_url"},
                {"type": "text", "text": "b"},
            ],
        },
        {"role": "user", "content": "later"},
    ]
    assert derive_session_id_from_messages(messages) == derive_session_id("a\nb")
    assert derive_session_id_from_messages(messages, scope="s") == derive_session_id(
        "a\nb", scope="s"
    )
    assert derive_session_id_from_messages([MessageInfo("user", "x")]) == derive_session_id("x")
    assert derive_session_id_from_messages([{"role": "system", "content": "x"}]) is None
    assert derive_session_id_from_messages([]) is None
    assert derive_session_id_from_messages([{"role": "user", "content": None}]) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"x-session-id": "abc"},
        {"X-Session-ID": "abc"},
        {"X-SESSION-ID": b"abc"},
        {"x-session-id": ["abc", "def"]},
        {"x-session-id": " \tabc\t "},
        Headers({"X-Session-Id": "abc"}),
        httpx.Headers({"X-Session-Id": "abc"}),
        [(b"x-session-id", b"abc")],
    ],
)
def test_get_session_id_from_any_header_mapping(headers: object) -> None:
    assert get_session_id(headers) == "abc"


def test_get_session_id_custom_and_default_names() -> None:
    assert get_session_id({"X-Conversation": "c1"}, "x-conversation") == "c1"
    assert get_session_id({"x-session-id": "c1"}, "") == "c1"
    assert get_session_id({"x-session-id": "c1"}, "x-other") is None


@pytest.mark.parametrize("value", [None, "", "  ", "\t", [], b""])
def test_absent_or_empty_is_none(value: object) -> None:
    headers = {} if value is None else {"x-session-id": value}
    assert get_session_id(headers) is None


def test_interior_spaces_and_the_whole_printable_range_are_allowed() -> None:
    printable = "".join(chr(c) for c in range(0x21, 0x7F))
    assert get_session_id({"x-session-id": printable}) == printable
    assert get_session_id({"x-session-id": "a b"}) == "a b"
    assert get_session_id({"x-session-id": "x" * 256}) == "x" * 256


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("x" * 257, "257 characters"),
        ("a\x00b", "U\\+0000 at position 1"),
        ("a\nb", "U\\+000A"),
        ("ab\x7f", "U\\+007F at position 2"),
        ("sess-é", "U\\+00E9"),
        (b"caf\xe9", "U\\+00E9"),
        ("会话", "U\\+4F1A at position 0"),
    ],
)
def test_invalid_ids_raise_with_a_reason(value: object, reason: str) -> None:
    with pytest.raises(InvalidSessionId, match=reason):
        get_session_id({"x-session-id": value})
    assert issubclass(InvalidSessionId, ValueError)
