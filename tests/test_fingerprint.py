"""Request fingerprints, cache-sticky sizing, provider names."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm_sessions import (
    MessageInfo,
    hash_request_content,
    provider_from_model,
    should_cache_sticky,
    turn_fingerprint,
)
from llm_sessions.fingerprint import normalized_head, normalized_tail


def sha32(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def test_exact_values() -> None:
    assert hash_request_content("  hello \n\t world ") == sha32("hello world")
    assert hash_request_content("  hello \n\t world ", ["b", "a"]) == sha32("hello world|tools:a,b")
    assert hash_request_content("hello world", ()) == sha32("hello world")
    assert hash_request_content("", []) == sha32("")


def test_unicode_whitespace_collapses_and_500_characters_are_kept() -> None:
    assert hash_request_content("a\u3000\u2003b\u00a0c\x1c") == sha32("a b c")
    text = "é" * 499 + "会" + "x" * 100
    assert hash_request_content(text) == sha32("é" * 499 + "会")
    assert hash_request_content(text + " differs after 500") == hash_request_content(text)


@given(st.lists(st.sampled_from(["a", "bc", " ", "\n", "\u3000", "é", "x" * 30]), max_size=3000))
def test_hash_equals_the_naive_definition(parts: list[str]) -> None:
    text = "".join(parts)
    assert hash_request_content(text) == sha32(" ".join(text.split())[:500])


@given(
    st.lists(st.sampled_from(["a", "bb", " ", "\t\n", "\u2003", "w" * 700]), max_size=400),
    st.integers(1, 600),
)
def test_normalized_ends_read_only_what_they_need(parts: list[str], n: int) -> None:
    text = "".join(parts)
    full = " ".join(text.split())
    assert normalized_head(text, n) == full[:n]
    assert normalized_tail(text, n) == full[-n:]


def test_huge_content_is_hashed_from_its_prefix() -> None:
    big = "word " * 2_000_000
    assert hash_request_content(big) == sha32(" ".join(big.split())[:500])


def test_hash_type_errors() -> None:
    with pytest.raises(TypeError):
        hash_request_content(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        hash_request_content("x", [1])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("anthropic/claude-sonnet-4.6", "anthropic"),
        ("gpt-4o", "default"),
        ("/x", "default"),
        ("openrouter/anthropic/claude", "openrouter"),
        ("", "default"),
        ("a/", "a"),
    ],
)
def test_provider_from_model(model: str, provider: str) -> None:
    assert provider_from_model(model) == provider


def test_should_cache_sticky_thresholds() -> None:
    assert should_cache_sticky([MessageInfo("user", "x" * 8999)]) is False  # 2999 tokens
    assert should_cache_sticky([MessageInfo("user", "x" * 9000)]) is True  # 3000 in one message
    four = [MessageInfo("user", "x" * 3750) for _ in range(4)]  # 15000 bytes = 5000 tokens
    assert should_cache_sticky(four) is True
    assert should_cache_sticky(four[:3] + [MessageInfo("user", "x" * 3748)]) is False
    assert should_cache_sticky([]) is False


def test_should_cache_sticky_counts_utf8_bytes_and_list_parts() -> None:
    assert should_cache_sticky([{"role": "user", "content": "会" * 3000}]) is True  # 9000 bytes
    assert should_cache_sticky([{"role": "user", "content": "会" * 2999}]) is False
    parts = [
        {"type": "text", "text": "x" * 4500},
        {"type": "image_url"},
        {"type": "text", "text": "y" * 4499},
    ]
    assert should_cache_sticky([{"role": "user", "content": parts}]) is True  # joined with "\n"
    assert (
        should_cache_sticky(
            [{"role": "user", "content": parts[:2] + [{"type": "text", "text": "y" * 4498}]}]
        )
        is False
    )
    assert should_cache_sticky([{"role": "user", "content": "x" * 10 * 1024 * 1024}]) is True


# -- tool calls: arguments count, ids and formatting don't --------------------------------------


def _tool_turn(city: str, call_id: str = "c1", spacing: str = "") -> list[dict[str, Any]]:
    arguments = f'{{"city":{spacing}"{city}",{spacing}"unit":{spacing}"C"}}'
    call = {"id": call_id, "type": "function",
            "function": {"name": "get_weather", "arguments": arguments}}  # fmt: skip
    return [
        {"role": "user", "content": "what's the weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21C"},
    ]


def test_different_tool_arguments_are_different_turns() -> None:
    prints = {turn_fingerprint(_tool_turn(city)) for city in ("Paris", "Berlin", "Rome", "Oslo")}
    assert len(prints) == 4


def test_tool_call_ids_key_order_and_spacing_do_not_matter() -> None:
    base = turn_fingerprint(_tool_turn("Paris"))
    assert turn_fingerprint(_tool_turn("Paris", call_id="other", spacing=" ")) == base
    reordered = _tool_turn("Paris")
    reordered[1]["tool_calls"][0]["function"]["arguments"] = '{"unit": "C", "city": "Paris"}'
    assert turn_fingerprint(reordered) == base


def test_different_tool_results_are_different_turns() -> None:
    other = _tool_turn("Paris")
    other[2]["content"] = "rain, 12C"
    assert turn_fingerprint(other) != turn_fingerprint(_tool_turn("Paris"))


def test_four_cities_do_not_escalate_but_one_city_three_times_does() -> None:
    from llm_sessions import SessionPolicy, SessionStore

    tiers = {"SIMPLE": {"primary": "s"}, "COMPLEX": {"primary": "c"}, "REASONING": {"primary": "r"}}
    policy = SessionPolicy(SessionStore(), tiers)
    history: list[dict[str, Any]] = []
    reasons = []
    for city in ("Paris", "Berlin", "Rome", "Oslo"):
        history = [*history, *_tool_turn(city)[1:]] if history else _tool_turn(city)
        reasons.append(policy.begin({"x-session-id": "w"}, {"messages": history}).reason)
    assert "escalated" not in reasons
    same = _tool_turn("Paris")
    reasons = [policy.begin({"x-session-id": "p"}, {"messages": same}).reason for _ in range(3)]
    assert reasons[-1] == "escalated"


def _naive_turn_fingerprint(messages: list[dict[str, Any]]) -> str:
    """The turn fingerprint as its definition reads: every message after the last
    assistant message as role, head and tail of its normalized text (each field ended by
    0x1f, each message by 0x1e), then "|tools:" and that assistant message's tool calls by
    name, head and tail of their canonical arguments, sorted; SHA-256, 32 hex digits."""

    def ends(text: str) -> list[str]:
        full = " ".join(text.split())
        return [full[:500], full[-500:]]

    def item(fields: list[str]) -> bytes:
        return b"".join(f.encode("utf-8", "surrogatepass") + b"\x1f" for f in fields) + b"\x1e"

    roles = [m["role"] for m in messages]
    last = max((i for i, r in enumerate(roles) if r == "assistant"), default=-1)
    data = b"".join(item([m["role"], *ends(m.get("content") or "")]) for m in messages[last + 1 :])
    if last >= 0:
        calls = sorted(
            (c["function"]["name"], json.dumps(json.loads(c["function"]["arguments"]),
                                               sort_keys=True, separators=(",", ":"), ensure_ascii=False))
            for c in messages[last].get("tool_calls", [])
        )  # fmt: skip
        data += b"|tools:" + b"".join(item([name, *ends(args)]) for name, args in calls)
    return hashlib.sha256(data).hexdigest()[:32]


_fp_text = st.lists(
    st.sampled_from(["a", "bc", " ", "\n\t", "\u3000", "é", "\ud800", "x" * 300]), max_size=40
).map("".join)


@given(
    st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant", "tool", "system"]), "content": _fp_text},
            optional={
                "tool_calls": st.lists(
                    st.builds(
                        lambda name, city: {
                            "id": "c",
                            "function": {"name": name, "arguments": json.dumps({"city": city})},
                        },
                        st.sampled_from(["weather", "read_file"]),
                        _fp_text,
                    ),
                    max_size=3,
                )
            },
        ),
        min_size=1,
        max_size=6,
    )
)
def test_turn_fingerprint_equals_its_definition(messages: list[dict[str, Any]]) -> None:
    """Long and short texts, lone surrogates, tool calls: the same bytes hashed, so the
    hashes sessions already hold keep matching."""
    assert turn_fingerprint(messages) == _naive_turn_fingerprint(messages)
