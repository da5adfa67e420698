"""The turns of a session as its event log keeps them: one event per turn, written by the
store step that records the turn (`finish`'s, or a refusal's), as compact JSON.

An event holds what the flow knows (when, the outcome, the routing reason, the model
decided and the one that served, the tier, the strikes before and after the turn, what
it cost and the session's total) and whatever the caller adds (the gateway adds the API,
the HTTP status, the latency and the token counts). Its ``reason`` is the decision's,
except ``"fallback"`` when a model after the decided one served and ``"refused"`` when
the budget refused the turn.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..records import Entry
from ..stores.base import EventOf
from .decision import Begun, Decision, Turn

if TYPE_CHECKING:
    from ..policy import SessionPolicy

__all__ = ["finish_event", "read_events", "refusal_event"]

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode


def finish_event(
    policy: SessionPolicy,
    decision: Decision,
    served_model: str | None,
    cost: int,
    extra: Mapping[str, Any] | None,
) -> EventOf:
    """The event of a finished turn: served (by `served_model`, for `cost`) or failed."""

    def event(old: Entry | None, new: Entry | None, total: Any, now: int) -> str | None:
        if new is None or new is old:  # finished before: its event is in the log already
            return None
        fallback = served_model is not None and served_model != decision.model
        reason = "fallback" if fallback else decision.reason
        body: dict[str, Any] = {
            "at": now,
            "outcome": "failed" if served_model is None else "served",
            "reason": reason,
            "model": served_model or decision.model,
            "decided": decision.model,
            "tier": decision.tier.value,
            "strikes_before": decision.strikes_before,
            "strikes_after": new.strikes,
            "cost_micros": cost if served_model is not None else 0,
            "total_micros": total,
            "cap_micros": policy.cap_micros,
            "source": decision.source,
        }
        if extra:
            body.update(extra)
        return _dumps(body)

    return event


def refusal_event(policy: SessionPolicy, turn: Turn, extra: Mapping[str, Any] | None) -> EventOf:
    """The event of a turn the budget refused (nothing else of the session changes)."""

    def event(old: Entry | None, new: Entry | None, begun: Any, now: int) -> str | None:
        if old is None or not isinstance(begun, Begun) or begun.refused_worst is None:
            return None
        body: dict[str, Any] = {
            "at": now,
            "outcome": "refused",
            "reason": "refused",
            "model": begun.model,
            "decided": begun.model,
            "tier": begun.tier.value,
            "strikes_before": old.strikes,
            "strikes_after": old.strikes,
            "cost_micros": 0,
            "total_micros": old.session_cost_micros,
            "cap_micros": policy.cap_micros,
            "requested_micros": begun.refused_worst,
            "source": turn.source,
        }
        if extra:
            body.update(extra)
        return _dumps(body)

    return event


def read_events(texts: list[str]) -> list[dict[str, Any]]:
    """A log's events as objects, oldest first (an entry that is not a JSON object,
    written by something else, is left out)."""
    out = []
    for text in texts:
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out
