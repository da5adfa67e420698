"""The turns of a session as its event log keeps them: one event per turn, written by the
store step that records the turn (`finish`'s, or a refusal's), as compact JSON.

An event holds what the flow knows (when, the outcome, the routing reason, the model
that served, and the one decided when a fallback served instead, the tier, the strikes
before and after the turn, what it cost and the session's total; a refusal also the cap
and the worst case it refused) and whatever the caller adds (the gateway adds the API,
the HTTP status, the latency and the token counts). Its ``reason`` is the decision's,
except ``"fallback"`` when a model after the decided one served and ``"refused"`` when
the budget refused the turn.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..records import Entry
from .decision import Begun, Decision, Turn

if TYPE_CHECKING:
    from ..policy import SessionPolicy

__all__ = ["TurnEvent", "announce", "finish_event", "read_events", "refusal_event"]

log = logging.getLogger("llm_sessions.policy")

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode


#: (the entry before, the entry written, the step's result, now) -> the event's fields
Build = Callable[[Entry | None, Entry | None, Any, int], dict[str, Any] | None]


class TurnEvent:
    """A turn's event as a store's `EventOf`: `build(old, new, result, now)` gives the
    flow's fields or None, the caller's `extra` fields are added; `body` and `text` are
    those of the latest call (after the write: the event that landed, None when there
    was none)."""

    __slots__ = ("_build", "_extra", "body", "text")

    def __init__(
        self,
        build: Callable[[Entry | None, Entry | None, Any, int], dict[str, Any] | None],
        extra: Mapping[str, Any] | None,
    ) -> None:
        self._build = build
        self._extra = extra
        self.body: dict[str, Any] | None = None
        self.text: str | None = None

    def __call__(self, old: Entry | None, new: Entry | None, result: Any, now: int) -> str | None:
        self.body = body = self._build(old, new, result, now)
        if body is not None and self._extra:
            body.update(self._extra)
        self.text = None if body is None else _dumps(body)
        return self.text


def finish_event(
    decision: Decision,
    served_model: str | None,
    cost: int,
    extra: Mapping[str, Any] | None,
) -> TurnEvent:
    """The event of a finished turn: served (by `served_model`, for `cost`) or failed."""

    def build(old: Entry | None, new: Entry | None, total: Any, now: int) -> dict[str, Any] | None:
        if new is None or new is old:  # finished before: its event is in the log already
            return None
        fallback = served_model is not None and served_model != decision.model
        body: dict[str, Any] = {
            "at": now,
            "outcome": "failed" if served_model is None else "served",
            "reason": "fallback" if fallback else decision.reason,
            "model": served_model or decision.model,
            "tier": decision.tier.value,
            "strikes_before": decision.strikes_before,
            "strikes_after": new.strikes,
            "cost_micros": cost if served_model is not None else 0,
            "total_micros": total,
            "source": decision.source,
        }
        if fallback:
            body["decided"] = decision.model
        return body

    return TurnEvent(build, extra)


def refusal_event(policy: SessionPolicy, turn: Turn, extra: Mapping[str, Any] | None) -> TurnEvent:
    """The event of a turn the budget refused (nothing else of the session changes)."""

    def build(old: Entry | None, new: Entry | None, begun: Any, now: int) -> dict[str, Any] | None:
        if old is None or not isinstance(begun, Begun) or begun.refused_worst is None:
            return None
        return {
            "at": now,
            "outcome": "refused",
            "reason": "refused",
            "model": begun.model,
            "tier": begun.tier.value,
            "strikes_before": old.strikes,
            "strikes_after": old.strikes,
            "cost_micros": 0,
            "total_micros": old.session_cost_micros,
            "cap_micros": policy.cap_micros,
            "requested_micros": begun.refused_worst,
            "source": turn.source,
        }

    return TurnEvent(build, extra)


def announce(
    policy: SessionPolicy, scope: str, session_id: str | None, event: TurnEvent | None
) -> None:
    """Tell the policy's `on_event` about an event that landed (a failing listener is
    logged, never the request's failure)."""
    listener = policy.on_event
    if listener is None or event is None or event.body is None or session_id is None:
        return
    try:
        listener(scope, session_id, event.body)
    except Exception:
        log.exception("the on_event listener failed")


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
