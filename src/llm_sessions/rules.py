"""The session rules: the state transitions every store applies.

A session's state is a *record*: a list holding `Entry`'s fields in `Entry`'s order
(an `Entry` is its immutable snapshot, ``Entry._make(record)``). Each write rule takes
the live record (``None`` when the session does not exist or has expired), the current
time and the call's arguments, updates the record in place or returns a new one, and
returns the method's result. Read rules accept a record or an `Entry` alike.

No I/O, no clock, no locks: the in-memory stores call these under their lock; the Redis
scripts in ``stores/lua/`` are the only other form of these rules, and the conformance
suite holds both to the same observable behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .config import Config
from .records import EMPTY_FLOW, Entry
from .tiers import Tier, tier_rank

__all__ = [
    "HASH_WINDOW",
    "MAX_COST_MICROS",
    "STRIKE_LIMIT",
    "Record",
    "add_session_cost",
    "cut_id",
    "escalate_session",
    "is_cache_sticky",
    "is_expired",
    "new_record",
    "next_tier",
    "record_request_hash",
    "set_cache_sticky",
    "set_session",
    "snapshot",
    "touch_session",
]

#: The strike count at which a router escalates a looping session.
STRIKE_LIMIT = 2
#: How many recent request hashes a session keeps.
HASH_WINDOW = 3

Record = list[Any]

#: The largest session cost any store holds, in micro-USD (Redis' 64-bit integers).
MAX_COST_MICROS = 2**63 - 1

# Positions of Entry's fields in a record.
(
    MODEL,
    TIER,
    CREATED_AT,
    LAST_USED_AT,
    REQUEST_COUNT,
    RECENT_HASHES,
    STRIKES,
    ESCALATED,
    USER_EXPLICIT,
    CACHE_STICKY,
    CACHE_STICKY_AT,
    PROVIDER,
    COST,
    FLOW,
) = range(14)

_NEXT_TIER = (Tier.MEDIUM, Tier.COMPLEX, Tier.REASONING, None)
_new_tuple = tuple.__new__


def new_record(now: int, model: str, tier: Tier | None, user_explicit: bool, count: int) -> Record:
    return [model, tier, now, now, count, (), 0, False, user_explicit, False, 0, "", 0, EMPTY_FLOW]


def snapshot(record: Record, now: int) -> Entry:
    """The record as a reader sees it at `now`: an `Entry`, reservations past their
    expiry left out."""
    flow = record[FLOW]
    if flow.reservations and any(r.expires_at <= now for r in flow.reservations):
        kept = tuple(r for r in flow.reservations if r.expires_at > now)
        record = [*record[:FLOW], flow._replace(reservations=kept)]
    return _new_tuple(Entry, record)


def is_expired(state: Sequence[Any], now: int, timeout_ms: int) -> bool:
    """Rule 2: a session idle for more than `timeout_ms` is gone for good."""
    return bool(now - state[LAST_USED_AT] > timeout_ms)


def set_session(
    record: Record | None, now: int, model: str, tier: Tier | None, user_explicit: bool
) -> Record:
    """Rule 3: create with one request, or count a request, replacing model and tier when
    the model differs; `user_explicit` only ever goes from False to True."""
    if record is None:
        return new_record(now, model, tier, user_explicit, 1)
    if model != record[MODEL]:
        record[MODEL] = model
        record[TIER] = tier
    record[LAST_USED_AT] = now
    record[REQUEST_COUNT] += 1
    if user_explicit:
        record[USER_EXPLICIT] = True
    return record


def touch_session(record: Record | None, now: int) -> None:
    """Rule 4: an existing session's ``last_used_at = now`` and one more request."""
    if record is not None:
        record[LAST_USED_AT] = now
        record[REQUEST_COUNT] += 1


def record_request_hash(record: Record | None, request_hash: str) -> int:
    """Rule 5: keep the last 3 hashes; a repeat of the previous one is a strike, anything
    else resets the strikes. Returns the strike count (0 for an absent session)."""
    if record is None:
        return 0
    hashes = record[RECENT_HASHES]
    strikes = record[STRIKES] + 1 if hashes and hashes[-1] == request_hash else 0
    record[RECENT_HASHES] = (*hashes[1 - HASH_WINDOW :], request_hash)
    record[STRIKES] = strikes
    return int(strikes)


def next_tier(tier: Tier | None) -> Tier | None:
    """One tier up from `tier` (None ranks as MEDIUM); None above REASONING."""
    return _NEXT_TIER[tier_rank(tier)]


def escalate_session(record: Record | None, models: Mapping[Tier, str] | None) -> Tier | None:
    """Rule 6: one tier up, strikes and hash window reset, model from `models` when it
    names the new tier. Absent, user-explicit and REASONING sessions are left alone."""
    if record is None or record[USER_EXPLICIT]:
        return None
    tier = next_tier(record[TIER])
    if tier is None:
        return None
    record[TIER] = tier
    if models is not None and tier in models:
        record[MODEL] = models[tier]
    record[ESCALATED] = True
    record[STRIKES] = 0
    record[RECENT_HASHES] = ()
    return tier


def add_session_cost(record: Record | None, now: int, micros: int) -> Record:
    """Rule 7: add to the session's cost, creating a cost-only entry if there is none."""
    if (0 if record is None else record[COST]) + micros > MAX_COST_MICROS:
        raise ValueError(f"the session cost would pass {MAX_COST_MICROS} micro-USD")
    if record is None:
        record = new_record(now, "", None, False, 0)
    record[COST] += micros
    return record


def set_cache_sticky(record: Record | None, now: int, provider: str) -> None:
    """Rule 8: the first call on an existing session pins it for `provider`'s cache."""
    if record is not None and not record[CACHE_STICKY]:
        record[CACHE_STICKY] = True
        record[CACHE_STICKY_AT] = now
        record[PROVIDER] = provider


def is_cache_sticky(state: Sequence[Any] | None, now: int, config: Config) -> bool:
    """Rule 8: sticky while ``now - last_used_at`` is within the cache TTL (the session's
    declared TTL if the routing flow set one, else the provider's)."""
    if state is None or not state[CACHE_STICKY]:
        return False
    ttl = state[FLOW].sticky_ttl_ms or config.cache_ttl_for(state[PROVIDER])
    return bool(now - state[LAST_USED_AT] <= ttl)


def cut_id(session_id: str) -> str:
    """Rule 9: ids longer than 8 characters are shown as their first 8 plus ``...``."""
    return session_id if len(session_id) <= 8 else session_id[:8] + "..."
