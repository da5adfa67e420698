"""Tiers, config, records and the package's public surface."""

from __future__ import annotations

import dataclasses
import json

import pytest

import llm_sessions
from llm_sessions import (
    Config,
    Entry,
    MessageInfo,
    SessionInfo,
    Stats,
    Tier,
    cache_ttl_for_provider,
    default_config,
    tier_rank,
)


def test_all_is_sorted_and_importable() -> None:
    assert llm_sessions.__all__ == sorted(llm_sessions.__all__)
    for name in llm_sessions.__all__:
        assert getattr(llm_sessions, name) is not None, name


def test_tiers_are_strings_ordered_by_rank() -> None:
    assert [t.value for t in Tier] == ["SIMPLE", "MEDIUM", "COMPLEX", "REASONING"]
    assert Tier("MEDIUM") is Tier.MEDIUM
    assert Tier.MEDIUM == "MEDIUM"
    assert [t.rank for t in Tier] == [0, 1, 2, 3]
    assert Tier.SIMPLE < Tier.MEDIUM < Tier.COMPLEX < Tier.REASONING
    assert Tier.COMPLEX > Tier.MEDIUM  # alphabetically it would not be
    assert Tier.REASONING >= Tier.REASONING and Tier.SIMPLE <= Tier.SIMPLE
    assert sorted([Tier.REASONING, Tier.SIMPLE, Tier.COMPLEX]) == [
        Tier.SIMPLE,
        Tier.COMPLEX,
        Tier.REASONING,
    ]
    assert f"{Tier.COMPLEX}" == str(Tier.COMPLEX) == "COMPLEX"
    with pytest.raises(ValueError):
        Tier("medium")
    with pytest.raises(TypeError):
        _ = Tier.SIMPLE < 3


@pytest.mark.parametrize(
    ("value", "rank"),
    [
        (Tier.SIMPLE, 0), ("SIMPLE", 0), (Tier.MEDIUM, 1), ("COMPLEX", 2), (Tier.REASONING, 3),
        (None, 1), ("", 1), ("simple", 1), ("ULTRA", 1), (7, 1),
    ],
)  # fmt: skip
def test_tier_rank(value: object, rank: int) -> None:
    assert tier_rank(value) == rank


def test_default_config() -> None:
    cfg = default_config()
    assert cfg == Config()
    assert (
        cfg.enabled,
        cfg.timeout_ms,
        cfg.header_name,
        cfg.max_sessions,
        cfg.cleanup_interval_ms,
    ) == (True, 30 * 60 * 1000, "x-session-id", 100_000, 5 * 60 * 1000)
    assert dict(cfg.cache_ttl_ms) == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.timeout_ms = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_ms": 0}, {"timeout_ms": -1}, {"max_sessions": 0}, {"header_name": ""},
        {"header_name": "bad header"}, {"cleanup_interval_ms": -1},
        {"cache_ttl_ms": {"openai": -1}}, {"cache_ttl_ms": {"": 5}}, {"timeout_ms": 1.5},
        {"enabled": "yes"}, {"cache_ttl_ms": {"openai": 2.0}},
    ],
)  # fmt: skip
def test_bad_config_values_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Config(**kwargs)  # type: ignore[arg-type]


def test_config_ttl_table_and_overrides() -> None:
    source = {"anthropic": 3_600_000, "mine": 1}
    cfg = Config(cache_ttl_ms=source)
    source["anthropic"] = 0  # the config keeps its own copy
    assert cfg.cache_ttl_for("anthropic") == 3_600_000
    assert cfg.cache_ttl_for("mine") == 1
    assert cfg.cache_ttl_for("vllm") == 600_000
    assert cfg.cache_ttl_for("unknown") == 300_000
    assert Config(cache_ttl_ms={"default": 42}).cache_ttl_for("unknown") == 42
    with pytest.raises(TypeError):
        cfg.cache_ttl_ms["x"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("provider", "ttl"),
    [
        ("anthropic", 300_000), ("openai", 300_000), ("deepseek", 300_000), ("google", 300_000),
        ("groq", 300_000), ("vllm", 600_000), ("dosrouter", 600_000), ("default", 300_000),
        ("mistral", 300_000), ("", 300_000),
    ],
)  # fmt: skip
def test_cache_ttl_for_provider(provider: str, ttl: int) -> None:
    assert cache_ttl_for_provider(provider) == ttl


def test_entry_str_formats_cost_exactly() -> None:
    base = Entry("m", None, 0, 0, 2, (), 1, False, False, False, 0, "", 0)
    assert str(base) == "model=m tier= reqs=2 strikes=1 explicit=false cost=$0.000000"
    assert str(base._replace(session_cost_micros=1)).endswith("cost=$0.000001")
    assert str(base._replace(session_cost_micros=123_456_789_012_345_678)).endswith(
        "cost=$123456789012.345678"
    )
    assert str(base._replace(tier=Tier.REASONING, user_explicit=True)) == (
        "model=m tier=REASONING reqs=2 strikes=1 explicit=true cost=$0.000000"
    )


def test_entry_is_immutable() -> None:
    e = Entry("m", None, 0, 0, 1, ("a",), 0, False, False, False, 0, "", 0)
    with pytest.raises(AttributeError):
        e.model = "x"  # type: ignore[misc]
    assert e.reserved_micros == 0
    assert json.dumps(e.to_dict())


def test_stats_and_session_info_dicts() -> None:
    stats = Stats(2, [SessionInfo("abcdefgh...", "m", 3)])
    assert stats.to_dict() == {
        "count": 2,
        "sessions": [{"id": "abcdefgh...", "model": "m", "age": 3}],
    }
    assert MessageInfo("user", "hi") == MessageInfo(role="user", content="hi")
