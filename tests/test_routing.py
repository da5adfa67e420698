"""The tier table, prices and the default classifier."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_sessions import Pricing, Tier, TierModels, default_classify, routing, routing_table
from llm_sessions.routing import estimate_prompt_tokens, usd_to_micros


def test_routing_table_from_plain_dicts() -> None:
    table = routing_table(
        {
            "SIMPLE": {"primary": "a", "fallback": ["b", "c"]},
            "REASONING": {"primary": "r"},
            "MEDIUM": TierModels("m"),
        }
    )
    assert table == {
        Tier.SIMPLE: TierModels("a", ("b", "c")),
        Tier.REASONING: TierModels("r", ()),
        Tier.MEDIUM: TierModels("m"),
    }
    assert table[Tier.SIMPLE].chain == ("a", "b", "c")
    assert TierModels("a", ["b"]) == TierModels("a", ("b",))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "non-empty"),
        ({"ULTRA": {"primary": "x"}}, "unknown tier 'ULTRA'"),
        ({"simple": {"primary": "x"}}, "unknown tier 'simple'"),
        ({"SIMPLE": "x"}, "SIMPLE must be a table"),
        ({"SIMPLE": {}}, "SIMPLE.primary is missing"),
        ({"SIMPLE": {"primary": ""}}, "SIMPLE.primary"),
        ({"SIMPLE": {"primary": 3}}, "SIMPLE.primary"),
        ({"COMPLEX": {"primary": "x", "fallback": "y"}}, "COMPLEX.fallback"),
        ({"COMPLEX": {"primary": "x", "fallback": ["y", 2]}}, r"COMPLEX.fallback\[1\]"),
        ({"MEDIUM": {"primary": "x", "fallbacks": []}}, "MEDIUM.fallbacks is not a known key"),
    ],
)
def test_routing_table_errors_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        routing_table(table)


def test_pricing_is_exact() -> None:
    p = Pricing(0.15, "0.6")
    assert (p.input_per_mtok, p.output_per_mtok) == (Decimal("0.15"), Decimal("0.6"))
    assert p.cost_micros(1_000_000, 0) == 150_000
    assert p.cost_micros(1, 1) == 1  # 0.75 rounds up
    assert p.cost_micros(0, 0) == 0
    assert Pricing(3, 15).cost_micros(1234, 567) == 3 * 1234 + 15 * 567
    for bad in (True, None, "x", float("inf"), -0.1):
        with pytest.raises(ValueError):
            Pricing(bad, 1)  # type: ignore[arg-type]


def test_usd_to_micros() -> None:
    assert usd_to_micros(0.0000015) == 2
    assert usd_to_micros("1.5") == 1_500_000
    assert usd_to_micros("0.0000015", round_up=False) == 1
    assert usd_to_micros(0) == 0


def test_prompt_token_estimate() -> None:
    msgs = [{"role": "user", "content": "abcd"}, {"role": "user", "content": "会"}]
    assert estimate_prompt_tokens(msgs, None) == 3  # ceil(7 / 3)
    assert estimate_prompt_tokens([], [{"a": 1}]) == 4  # '[{"a": 1}]' is 10 bytes


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "be helpful"}, {"role": "user", "content": text}]


@pytest.mark.parametrize(
    ("text", "tools", "tier"),
    [
        ("hi!", None, Tier.SIMPLE),
        ("what's the capital of France?", None, Tier.SIMPLE),
        ("explain how TCP slow start works", None, Tier.MEDIUM),
        ("compare these two designs", None, Tier.MEDIUM),
        ("word " * 200, None, Tier.MEDIUM),
        ("fix this:\n```python\nprint(1\n```", None, Tier.COMPLEX),
        ("list the files", [{"type": "function"}], Tier.COMPLEX),
        ("x " * 4000, None, Tier.COMPLEX),
        ("prove that the algorithm terminates", None, Tier.REASONING),
        ("think step by step about the race", [{"type": "function"}], Tier.REASONING),
    ],
)
def test_default_classifier(text: str, tools: list[object] | None, tier: Tier) -> None:
    assert default_classify(user(text), tools) == tier


def test_default_classifier_reads_the_latest_user_message() -> None:
    msgs = [
        *user("prove it"),
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "thanks"},
    ]
    assert default_classify(msgs, None) == Tier.SIMPLE
    assert default_classify([], None) == Tier.SIMPLE


_CODE_PIECES = ["```", "def ", "class ", "function ", "#include", "=>", "SELECT", "select",
                "de", "f ", "=", ">", "`", "x", " ", "\n", "SELECTED", "_def ", "é"]  # fmt: skip


@settings(max_examples=300)
@given(st.lists(st.sampled_from(_CODE_PIECES) | st.text(max_size=3), max_size=12).map("".join))
def test_the_code_cue_is_searched_only_where_it_can_match(text: str) -> None:
    """The classifier skips the code regex for a text without any of its literals: that
    never changes what the regex would find."""
    found = routing._CODE.search(text) is not None
    assert found == (routing._has_any(text, routing._CODE_LITERALS) and found)
    messages = [{"role": "user", "content": text}]
    assert default_classify(messages) == (
        Tier.REASONING
        if routing._REASONING_CUES.search(text)
        else Tier.COMPLEX
        if found
        else Tier.MEDIUM
        if routing._ANALYSIS_CUES.search(text)
        else Tier.SIMPLE
    )
