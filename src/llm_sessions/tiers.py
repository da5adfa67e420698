"""Routing tiers, ordered SIMPLE < MEDIUM < COMPLEX < REASONING.

A `Tier` is a `str` (``Tier.MEDIUM == "MEDIUM"``) that compares by rank. Matching a
string to a tier is exact and case-sensitive.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Tier", "coerce_tier", "tier_rank"]


class Tier(str, Enum):
    """A routing tier. Values are the upper-case names; members compare by rank."""

    SIMPLE = "SIMPLE"
    MEDIUM = "MEDIUM"
    COMPLEX = "COMPLEX"
    REASONING = "REASONING"

    @property
    def rank(self) -> int:
        """0 for SIMPLE up to 3 for REASONING."""
        return _RANK[self]

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    # A str subclass would otherwise compare alphabetically ("COMPLEX" < "MEDIUM").
    def __lt__(self, other: object) -> bool:
        r = _other_rank(other)
        return NotImplemented if r is None else _RANK[self] < r

    def __le__(self, other: object) -> bool:
        r = _other_rank(other)
        return NotImplemented if r is None else _RANK[self] <= r

    def __gt__(self, other: object) -> bool:
        r = _other_rank(other)
        return NotImplemented if r is None else _RANK[self] > r

    def __ge__(self, other: object) -> bool:
        r = _other_rank(other)
        return NotImplemented if r is None else _RANK[self] >= r

    __hash__ = str.__hash__


_RANK: dict[object, int] = {t: i for i, t in enumerate(Tier)}
_BY_VALUE: dict[str, Tier] = {t.value: t for t in Tier}
_DEFAULT_RANK = 1  # the reference's TierRank: unknown tiers rank like MEDIUM


def _other_rank(other: object) -> int | None:
    if isinstance(other, str):
        t = _BY_VALUE.get(other)
        return None if t is None else _RANK[t]
    return None


def tier_rank(tier: object) -> int:
    """Rank of a `Tier` or its exact string value; anything else, ``None`` included, ranks 1."""
    if isinstance(tier, str):
        t = _BY_VALUE.get(tier)
        if t is not None:
            return _RANK[t]
    return _DEFAULT_RANK


def coerce_tier(tier: object) -> Tier | None:
    """Return `tier` as a `Tier` (or ``None``); raise `ValueError` for anything else."""
    try:
        return _COERCE[tier]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown tier {tier!r}: expected one of SIMPLE, MEDIUM, COMPLEX, REASONING or None"
        ) from None


# Tier members hash and compare as their values, so this maps both "MEDIUM" and
# Tier.MEDIUM to Tier.MEDIUM.
_COERCE: dict[object, Tier | None] = {None: None, **{t: t for t in Tier}}
