"""Immutable records: session entries, stats snapshots and message summaries.

`Entry` is a named tuple rather than a dataclass because stores keep entries as they
are and replace them on every write: building one is the hot path of every store
operation, and a read can hand out the stored object itself as its snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from .tiers import Tier

__all__ = [
    "EMPTY_FLOW",
    "Entry",
    "FlowState",
    "MessageInfo",
    "Reservation",
    "SessionInfo",
    "SessionPage",
    "SessionRow",
    "Stats",
    "format_usd",
]


def format_usd(micros: int) -> str:
    """``1234567`` -> ``"1.234567"``: micro-USD as USD with six decimals, exactly."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


class Reservation(NamedTuple):
    """Worst-case cost held against a session's budget while one request is in flight."""

    id: str
    micros: int
    expires_at: int  # unix ms


class FlowState(NamedTuple):
    """Per-session state of the routing flow (`SessionPolicy`), beyond the reference's."""

    reservations: tuple[Reservation, ...] = ()
    explicit_model: str = ""  # the model the user chose explicitly, "" if none
    fallback_from: str = ""  # the model a fallback pin replaced, "" when not on a fallback
    fallback_at: int = 0  # when the fallback pin was made (unix ms)
    sticky_ttl_ms: int = 0  # declared prompt-cache TTL; 0 = the provider's
    failed_fingerprint: str = ""  # fingerprint of the last turn whose upstream call failed
    # the latest finished requests, as (reservation id, the session's total it returned),
    # so a repeated `finish` of one of them answers the same and changes nothing
    finished: tuple[tuple[str, int], ...] = ()


EMPTY_FLOW = FlowState()


class Entry(NamedTuple):
    """An immutable snapshot of one session (the reference's ``Entry``, in snake_case)."""

    model: str
    tier: Tier | None
    created_at: int  # unix ms
    last_used_at: int  # unix ms
    request_count: int
    recent_hashes: tuple[str, ...]  # the last 3 request hashes, oldest first
    strikes: int
    escalated: bool
    user_explicit: bool
    cache_sticky: bool
    cache_sticky_at: int  # unix ms, 0 when not sticky
    provider: str  # provider the sticky pin is for, "" when not sticky
    session_cost_micros: int
    flow: FlowState = EMPTY_FLOW

    @property
    def reserved_micros(self) -> int:
        """Sum of the budget reservations of requests still in flight."""
        return sum(r.micros for r in self.flow.reservations)

    @property
    def explicit_model(self) -> str:
        """The model the user chose explicitly in this session, ``""`` if none."""
        return self.flow.explicit_model

    @property
    def session_cost_usd(self) -> float:
        return self.session_cost_micros / 1_000_000

    def __str__(self) -> str:
        tier = "" if self.tier is None else self.tier.value
        explicit = "true" if self.user_explicit else "false"
        return (
            f"model={self.model} tier={tier} reqs={self.request_count} strikes={self.strikes} "
            f"explicit={explicit} cost=${format_usd(self.session_cost_micros)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The reference's fields, JSON-ready: tier as its string or None, hashes as a list."""
        return {
            "model": self.model,
            "tier": None if self.tier is None else self.tier.value,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "request_count": self.request_count,
            "recent_hashes": list(self.recent_hashes),
            "strikes": self.strikes,
            "escalated": self.escalated,
            "user_explicit": self.user_explicit,
            "cache_sticky": self.cache_sticky,
            "cache_sticky_at": self.cache_sticky_at,
            "provider": self.provider,
            "session_cost_micros": self.session_cost_micros,
        }


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session in a `Stats` snapshot; `age` in whole seconds, `id` possibly cut."""

    id: str
    model: str
    age: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "age": self.age}


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of a store: `count` live sessions, `sessions` sorted by id (maybe limited)."""

    count: int
    sessions: list[SessionInfo]

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sessions": [s.to_dict() for s in self.sessions]}


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One session in a `SessionPage`: its id as its caller sent it (whole), and its scope."""

    id: str
    scope: str
    model: str
    age: int  # whole seconds since the session was created
    request_count: int
    cost_micros: int
    tier: Tier | None = None
    strikes: int = 0
    last_used_at: int = 0  # unix ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "tier": None if self.tier is None else self.tier.value,
            "age": self.age,
            "request_count": self.request_count,
            "strikes": self.strikes,
            "last_used_at": self.last_used_at,
            "session_cost_usd": format_usd(self.cost_micros),
        }


@dataclass(frozen=True, slots=True)
class SessionPage:
    """One page of a scope's sessions; `next_cursor` fetches the next page ("" at the end)."""

    sessions: list[SessionRow]
    next_cursor: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "sessions": [s.to_dict() for s in self.sessions],
            "next_cursor": self.next_cursor or None,
        }


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """A minimal chat message: its role and its text."""

    role: str
    content: str
