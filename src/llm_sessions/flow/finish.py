"""The finish step (rule 8) and charging: what a served request costs (the upstream's
usage priced, else a conservative estimate), the store step that replaces its reservation
with that cost and re-pins a fallback that served, idempotently, and the step that
releases a reservation a failed `begin` may have left."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import rules
from ..errors import InvalidRequest
from ..records import EMPTY_FLOW, Entry
from ..routing import Pricing, token_usage, usage_field, usd_to_micros
from ..rules import COST, MAX_COST_MICROS, MODEL, TIER
from ..stores.base import Transition
from .decision import Decision, entry_of

if TYPE_CHECKING:
    from ..policy import SessionPolicy

__all__ = [
    "FINISHED_KEPT",
    "charge_micros",
    "context_after",
    "cost_micros",
    "usage_context",
    "estimate_micros",
    "finish_prepare",
    "late_charge_step",
    "release_step",
    "worst_case_micros",
]

log = logging.getLogger("llm_sessions.policy")

#: How many finished requests a session remembers, to answer a repeated `finish`.
FINISHED_KEPT = 32
_USAGE_FIELDS = ("cost", "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens")


def finish_prepare(
    policy: SessionPolicy,
    decision: Decision,
    served_model: str | None,
    usage: Any,
    cost: int | None,
    output_bytes: int,
) -> tuple[Transition[int], int] | None:
    """The finish step to run and what it charges, or None when there is nothing to
    write (the decision was finished already, or has no session)."""
    if not isinstance(decision, Decision):
        raise InvalidRequest(f"decision must be a Decision, got {type(decision).__name__}")
    if served_model is not None and not isinstance(served_model, str):
        raise InvalidRequest(
            f"served_model must be a str or None, got {type(served_model).__name__}"
        )
    if decision.settled_total is not None:
        return None
    charged = charge_micros(policy.pricing, decision, served_model, usage, cost, output_bytes)
    if decision.key is None:
        decision.settle(0)
        return None
    return finish_step(decision, served_model, charged), charged


def finish_step(decision: Decision, served_model: str | None, cost: int) -> Transition[int]:
    """Rule 8 for one decision: its reservation replaced by `cost` (none when nothing
    served: then the turn's fingerprint is remembered, so its retry is not a strike), a
    fallback that served re-pinned; a decision finished before gets its first answer."""
    rid = decision.reservation_id

    def step(entry: Entry | None, now: int) -> tuple[Entry | None, int]:
        if entry is None:
            if cost == 0:
                return None, 0
            record = rules.add_session_cost(None, now, cost)
            return entry_of(record, EMPTY_FLOW._replace(finished=((rid, cost),))), cost
        flow = entry.flow
        for done, total in flow.finished:
            if done == rid:  # finished before: the same answer, no write
                return entry, total
        record = list(entry)
        kept = tuple(r for r in flow.reservations if r.id != rid)
        if served_model is None:
            finished = (*flow.finished[1 - FINISHED_KEPT :], (rid, entry.session_cost_micros))
            new_flow = flow._replace(
                reservations=kept, failed_fingerprint=decision.fingerprint, finished=finished
            )
            return entry_of(record, new_flow), entry.session_cost_micros
        record[COST] = min(record[COST] + cost, MAX_COST_MICROS)
        fallback_from, fallback_at = flow.fallback_from, flow.fallback_at
        if decision.pin_from and record[MODEL] == decision.pin_from:  # a chain's model served
            record[MODEL], record[TIER] = decision.model, decision.tier
            fallback_from, fallback_at = "", 0
        repin = (
            served_model != decision.model
            and decision.reason != "budget_downgrade"
            and record[MODEL] == decision.model  # nobody moved the pin meanwhile
        )
        if repin:
            record[MODEL] = served_model
            fallback_from, fallback_at = fallback_from or decision.model, now
        total = int(record[COST])
        new_flow = flow._replace(
            reservations=kept,
            fallback_from=fallback_from,
            fallback_at=fallback_at,
            failed_fingerprint="",
            finished=(*flow.finished[1 - FINISHED_KEPT :], (rid, total)),
        )
        return entry_of(record, new_flow), total

    return step


def late_charge_step(charge_id: str, cost: int) -> Transition[int]:
    """Charge `cost` to a session once per `charge_id` (remembered with the finished
    requests): what a background response's usage costs when it is seen. The amount
    charged (0 when it was charged before)."""

    def step(entry: Entry | None, now: int) -> tuple[Entry | None, int]:
        if entry is not None and any(done == charge_id for done, _ in entry.flow.finished):
            return entry, 0
        spent = entry.session_cost_micros if entry is not None else 0
        charged = min(cost, MAX_COST_MICROS - spent)
        record = rules.add_session_cost(None if entry is None else list(entry), now, charged)
        flow = entry.flow if entry is not None else EMPTY_FLOW
        finished = (*flow.finished[1 - FINISHED_KEPT :], (charge_id, int(record[COST])))
        return entry_of(record, flow._replace(finished=finished)), charged

    return step


def release_step(reservation_id: str) -> Transition[None]:
    """Remove one reservation from a session. It always writes an existing session (a
    new version), so a `begin` still in flight for that reservation can no longer land:
    either it landed first and the reservation is removed here, or its compare-and-set
    now fails. (A session that does not exist yet is left alone.)"""

    def step(entry: Entry | None, now: int) -> tuple[Entry | None, None]:
        if entry is None:
            return entry, None
        kept = tuple(r for r in entry.flow.reservations if r.id != reservation_id)
        return entry._replace(flow=entry.flow._replace(reservations=kept)), None

    return step


def charge_micros(
    pricing: Mapping[str, Pricing],
    decision: Decision,
    served_model: str | None,
    usage: Any = None,
    cost: int | None = None,
    output_bytes: int | Callable[[], int] = 0,
) -> int:
    """What `finish` charges for a request: `cost`, else `usage` priced, else (usage
    missing or malformed, logged) the estimate, from `output_bytes` of generated text (or
    a function giving them, called only then). Never raises."""
    if served_model is None:
        return 0
    try:
        if cost is not None or _readable_usage(usage):
            return min(cost_micros(pricing, served_model, usage, cost), MAX_COST_MICROS)
        if usage is not None:
            raise ValueError(f"no cost or token counts in {type(usage).__name__} usage")
    except (TypeError, ValueError, ArithmeticError) as exc:
        log.warning("unreadable usage for %.256s, charging the estimate: %.256s", served_model, exc)
    if callable(output_bytes):
        try:
            output_bytes = output_bytes()
        except Exception as exc:
            log.warning("could not count the generated bytes: %.256s", exc)
            output_bytes = 0
    if isinstance(output_bytes, bool) or not isinstance(output_bytes, int):
        output_bytes = 0
    return estimate_micros(pricing, served_model, decision.prompt_tokens, max(output_bytes, 0))


def usage_context(usage: Any) -> int:
    """The tokens a usage block counts: input, cached included, and output (0 when it
    has none, or is unreadable)."""
    try:
        if _readable_usage(usage):
            t = token_usage(usage)
            return t.input + t.cache_read + t.cache_write + t.cache_write_1h + t.output
    except (TypeError, ValueError, ArithmeticError):
        pass
    return 0


def context_after(
    decision: Decision, usage: Any = None, output_bytes: int | Callable[[], int] = 0
) -> int:
    """The tokens of context an answer leaves (what a request continuing it is sent):
    its usage's input, cached included, and output; else the estimate, the prompt's
    tokens and ceil(`output_bytes` / 3) (a function giving them is called only then)."""
    total = usage_context(usage)
    if total:
        return total
    if callable(output_bytes):
        try:
            output_bytes = output_bytes()
        except Exception:
            output_bytes = 0
    if isinstance(output_bytes, bool) or not isinstance(output_bytes, int):
        output_bytes = 0
    return decision.prompt_tokens + -(-max(output_bytes, 0) // 3)


def estimate_micros(
    pricing: Mapping[str, Pricing], model: str, prompt_tokens: int, output_bytes: int
) -> int:
    """The estimated cost of a call: the prompt estimate plus ceil(output bytes / 3)
    tokens of output, at `model`'s price (0 when unpriced)."""
    price = pricing.get(model)
    if price is None:
        return 0
    return min(price.cost_micros(prompt_tokens, -(-output_bytes // 3)), MAX_COST_MICROS)


def cost_micros(
    pricing: Mapping[str, Pricing],
    served_model: str | None,
    usage: Any = None,
    cost: int | None = None,
) -> int:
    """What a call cost, in micro-USD: `cost`, else usage's ``cost``, else priced usage."""
    if served_model is None:
        return 0
    if cost is not None:
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
            raise ValueError(f"cost_micros must be an int >= 0, got {cost!r}")
        return cost
    if usage is None:
        return 0
    reported = usage_field(usage, "cost")
    if reported is not None:
        return usd_to_micros(reported, name="usage.cost")
    price = pricing.get(served_model)
    if price is None:
        return 0
    return price.usage_micros(token_usage(usage))


def worst_case_micros(
    pricing: Mapping[str, Pricing], models: Sequence[str], prompt_tokens: int, max_output: int
) -> int:
    """The most a request could cost on any of `models` (unpriced models cost 0)."""
    worst = 0
    for model in models:
        price = pricing.get(model)
        if price is not None:
            worst = max(worst, price.cost_micros(prompt_tokens, max_output))
    return worst


def _readable_usage(usage: Any) -> bool:
    """`usage` carries a cost or token counts (a mapping, or an object with attributes)."""
    if type(usage) is dict:
        return not usage.keys().isdisjoint(_USAGE_FIELDS)
    if usage is None:
        return False
    return any(usage_field(usage, name) is not None for name in _USAGE_FIELDS)
