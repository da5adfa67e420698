"""The begin step: rules 2-7 applied to one session's record, as plain functions run
inside one atomic step of the store, and the `Decision` made of their outcome.

2-4. the model: an explicit one, the pin, a stale fallback's primary, the cache-sticky
     pin, or an upgrade-only re-classification;
5.   loop detection on the turn's fingerprint, escalating one tier at `STRIKE_LIMIT`;
-    a chain of stored responses keeps to the models of its state's holder;
6.   cache stickiness;
7.   the budget: the worst case reserved against the cap, or a downgrade, or a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from .. import rules
from ..errors import BudgetExceeded
from ..fingerprint import provider_from_model
from ..records import EMPTY_FLOW, Entry, FlowState, Reservation
from ..rules import (
    CACHE_STICKY,
    CREATED_AT,
    MODEL,
    STRIKE_LIMIT,
    STRIKES,
    TIER,
    USER_EXPLICIT,
    Record,
)
from ..stores.base import Transition
from ..tiers import Tier, tier_rank
from .decision import Begun, Decision, Turn, entry_of, response_headers

if TYPE_CHECKING:
    from ..policy import SessionPolicy

__all__ = ["begin_step", "decision_of", "without_session"]


@dataclass(slots=True)
class _Pick:
    """The model the rules settle on so far, and the fallback state that goes with it."""

    model: str
    tier: Tier
    reason: str
    explicit_model: str
    fallback_from: str
    fallback_at: int
    pin_from: str = ""  # the pin a chain bound this turn away from: it moves once served


def begin_step(policy: SessionPolicy, turn: Turn) -> Transition[Begun]:
    """The store step of `begin` for `turn`."""

    def step(entry: Entry | None, now: int) -> tuple[Entry | None, Begun]:
        return begin_rules(policy, turn, entry, now)

    return step


def begin_rules(
    policy: SessionPolicy, req: Turn, entry: Entry | None, now: int
) -> tuple[Entry | None, Begun]:
    """Rules 2-7 on `entry` (None: no session yet): the entry to keep and the outcome. A
    refused request keeps `entry` as it was, as does one whose link named a session that
    is gone (expired, deleted: `dead_link`, and the shell begins it again without it)."""
    if req.link_born and (entry is None or entry.created_at != req.link_born):
        return entry, Begun("", req.tier, "", 0, 0, 0, 0, None, [], dead_link=True)
    flow = entry.flow if entry is not None else EMPTY_FLOW
    spent = entry.session_cost_micros if entry is not None else 0
    held = sum(r.micros for r in flow.reservations)
    explicit_session = req.explicit_model is not None or (entry is not None and entry.user_explicit)
    pick = _decide(policy, req, entry, flow, now, explicit_session)  # rules 2-4
    record = rules.set_session(
        None if entry is None else list(entry),
        now,
        pick.model,
        pick.tier,
        req.explicit_model is not None,
    )
    if not explicit_session:
        record[TIER] = pick.tier

    strikes, before_escalation = _strike(policy, req, flow, record, pick)  # rule 5

    # a chain of stored responses: only models of the state's holder can continue it
    bound = req.bound if not explicit_session else None
    if bound is not None and pick.model not in bound:
        record = _bind(policy, req, entry, flow, pick, record, before_escalation, bound)

    # rule 6: cache stickiness
    sticky_ttl = req.declared_ttl_ms or flow.sticky_ttl_ms
    if req.sticky:
        rules.set_cache_sticky(record, now, provider_from_model(pick.model))

    # rule 7: the budget, checked on the final decision before anything is kept
    fallbacks = [
        m
        for m in policy.tiers[pick.tier].chain
        if m != pick.model and (bound is None or m in bound)
    ]
    budget = _budget(policy, req, [pick.model, *fallbacks], spent + held, explicit_session, bound)
    if budget.outcome == "refused":
        refused = (pick.model, pick.tier, pick.reason, strikes, spent, held, 0, budget.reserved)
        return entry, Begun(*refused, [])
    fallbacks = budget.fallbacks
    if budget.outcome == "downgraded":  # the pin is not moved and nothing escalates
        pick.model, pick.tier, pick.reason = fallbacks.pop(0), Tier.SIMPLE, "budget_downgrade"
        record = before_escalation
        if entry is not None:
            record[MODEL], record[TIER] = entry.model, entry.tier
        pick.fallback_from, pick.fallback_at = flow.fallback_from, flow.fallback_at
        pick.pin_from = ""
        sticky_ttl = flow.sticky_ttl_ms
    reserved, output_limit = budget.reserved, budget.output_limit

    reservations = flow.reservations
    if reserved:
        expires = now + policy.reservation_ttl_ms
        reservations = (*reservations, Reservation(req.reservation_id, reserved, expires))
    new_flow = FlowState(
        reservations,
        pick.explicit_model,
        pick.fallback_from,
        pick.fallback_at,
        sticky_ttl,
        "",
        flow.finished,
    )
    activated = bool(record[CACHE_STICKY]) and not (entry is not None and entry.cache_sticky)
    begun = Begun(
        pick.model, pick.tier, pick.reason, strikes, spent, held, reserved, None, fallbacks,
        activated, pick.pin_from, output_limit, int(record[CREATED_AT]),
        strikes_before=0 if entry is None else entry.strikes,
    )  # fmt: skip
    return entry_of(record, new_flow), begun


def _strike(
    policy: SessionPolicy, req: Turn, flow: FlowState, record: Record, pick: _Pick
) -> tuple[int, Record]:
    """Rule 5: the turn's fingerprint counted (a retry of a failed attempt is not a
    strike) and, at `STRIKE_LIMIT`, the session escalated one tier up. The strikes, and
    the record as it was before any escalation."""
    retry = bool(flow.failed_fingerprint) and flow.failed_fingerprint == req.fingerprint
    strikes = record[STRIKES] if retry else rules.record_request_hash(record, req.fingerprint)
    before_escalation = list(record)
    if strikes >= STRIKE_LIMIT and not record[USER_EXPLICIT] and escalate(policy, record):
        pick.model, pick.tier, pick.reason = record[MODEL], record[TIER], "escalated"
        pick.fallback_from, pick.fallback_at = "", 0
    return strikes, before_escalation


def _decide(
    policy: SessionPolicy,
    req: Turn,
    entry: Entry | None,
    flow: FlowState,
    now: int,
    explicit_session: bool,
) -> _Pick:
    """Rules 2-4: the model, its tier and the reason, before loops, chains and budget."""
    pinned = entry is not None and entry.model != ""  # a cost-only entry has no pin
    on_fallback = (
        pinned
        and bool(flow.fallback_from)
        and (req.explicit_model is None or req.explicit_model == flow.explicit_model)
    )
    pick = _Pick("", req.tier, "", flow.explicit_model, flow.fallback_from, flow.fallback_at)
    if req.explicit_model is not None and not on_fallback:
        pick.model, pick.reason = req.explicit_model, "explicit"
        pick.explicit_model, pick.fallback_from, pick.fallback_at = req.explicit_model, "", 0
        return pick
    if entry is None or not pinned:
        pick.model, pick.reason = policy.tiers[req.tier].primary, "new"
        return pick
    if on_fallback and now - flow.fallback_at > policy.fallback_pin_ms:  # a stale fallback
        pick.model, pick.reason = flow.fallback_from, "primary_retry"
        if not explicit_session:
            pick.tier = policy.resolved(entry.tier or req.tier)
        pick.fallback_from, pick.fallback_at = "", 0
    elif explicit_session:
        pick.model, pick.reason = entry.model, "explicit"
    elif rules.is_cache_sticky(entry, now, policy.config):
        pick.model, pick.reason = entry.model, "cache_sticky"
        pick.tier = policy.resolved(entry.tier or req.tier)
    elif tier_rank(req.tier) > tier_rank(entry.tier):
        pick.model, pick.reason = policy.tiers[req.tier].primary, "upgraded"
        pick.fallback_from, pick.fallback_at = "", 0
    else:
        pick.model, pick.reason = entry.model, "pinned"
        pick.tier = policy.resolved(entry.tier or req.tier)
    return pick


def _bind(
    policy: SessionPolicy,
    req: Turn,
    entry: Entry | None,
    flow: FlowState,
    pick: _Pick,
    record: Record,
    before_escalation: Record,
    bound: frozenset[str],
) -> Record:
    """A chained turn whose pick its state's holder can't serve: the tier's model on that
    holder, else the pin when it is there (undoing an escalation), else the holder's model
    of the nearest tier. Returns the record to keep."""
    within = policy.tiers[pick.tier].primary_in(bound)
    if within and entry is not None and pick.model == entry.model:
        # the pin, bound away to the tier's model on that holder: moved once that serves
        pick.model, pick.reason, pick.pin_from = within, "chain_bound", entry.model
    elif within:  # the tier's model on that holder
        pick.model = record[MODEL] = within
    elif entry is not None and entry.model in bound:  # no move: the pin stays
        if pick.reason == "escalated":
            record = before_escalation
        pick.model, pick.reason = entry.model, "chain_bound"
        pick.tier = policy.resolved(entry.tier or req.tier)
        record[MODEL], record[TIER] = entry.model, entry.tier
        pick.fallback_from, pick.fallback_at = flow.fallback_from, flow.fallback_at
    else:  # nothing pinned there: the holder's model of the nearest tier
        tier = pick.tier
        near = sorted(policy.tiers, key=lambda t: (abs(t.rank - tier.rank), -t.rank))
        found = next((t for t in near if policy.tiers[t].primary_in(bound)), None)
        if found is not None:
            pick.tier, pick.reason = found, "chain_bound"
            pick.model = policy.tiers[found].primary_in(bound)
            if entry is not None and entry.model and entry.model == record[MODEL]:
                pick.pin_from = entry.model  # the pin moves once that serves
            else:
                record[MODEL], record[TIER] = pick.model, found
    return record


def escalate(policy: SessionPolicy, record: Record) -> bool:
    """Rule 5's escalation, to the next tier the table has (rules.escalate_session, as
    many steps as it takes to skip tiers the table lacks). False at the top."""
    rank = tier_rank(record[TIER])
    target = next((t for t in Tier if t.rank > rank and t in policy.tiers), None)
    if target is None:
        return False
    while rules.escalate_session(record, policy.primaries) not in (target, None):
        pass
    return True


class _Budget(NamedTuple):
    """Rule 7's outcome: the reservation (refused: the worst case that did not fit), the
    output limit lowered to fit (0: as asked), and the models to try."""

    outcome: str  # "reserved", "downgraded" (to SIMPLE: `models`' first) or "refused"
    reserved: int
    output_limit: int
    fallbacks: list[str]  # downgraded: SIMPLE's models, the one to call first


def _budget(
    policy: SessionPolicy,
    req: Turn,
    models: list[str],
    committed: int,
    explicit_session: bool,
    bound: frozenset[str] | None,
) -> _Budget:
    """Rule 7 for a request to `models` (the decided one first) with `committed` spent
    and reserved by the session: its worst case reserved when it fits the cap; else the
    largest output limit that fits (`fit_output`); else SIMPLE's models (``downgrade``);
    else refused."""
    if policy.cap_micros is None:
        return _Budget("reserved", 0, 0, models[1:])
    reserved = req.choices * policy.worst_case_micros(
        models, req.prompt_tokens, req.max_output_tokens
    )
    if committed + reserved <= policy.cap_micros:
        return _Budget("reserved", reserved, 0, models[1:])
    fitted = _fit(policy, req, models, committed) if policy.fit_output else None
    if fitted is not None:
        return _Budget("reserved", fitted[1], fitted[0], models[1:])
    downgrade = _downgrade(policy, req, explicit_session, committed, bound)
    if downgrade is None:
        return _Budget("refused", reserved, 0, [])
    model, fallbacks, worst = downgrade
    return _Budget("downgraded", worst, 0, [model, *fallbacks])


def _fit(
    policy: SessionPolicy, req: Turn, models: list[str], committed: int
) -> tuple[int, int] | None:
    """`fit_output`: the largest output limit, at least `min_output_tokens` and below
    the one asked for, whose worst case on `models` fits what is left of the cap, and
    that worst case; None when even the floor does not fit."""
    assert policy.cap_micros is not None
    left = policy.cap_micros - committed

    def worst(output: int) -> int:
        return req.choices * policy.worst_case_micros(models, req.prompt_tokens, output)

    low, high = policy.min_output_tokens, req.max_output_tokens - 1
    if low > high or worst(low) > left:
        return None
    while low < high:  # the worst case grows with the output: the last that fits
        middle = (low + high + 1) // 2
        if worst(middle) <= left:
            low = middle
        else:
            high = middle - 1
    return low, worst(low)


def _downgrade(
    policy: SessionPolicy,
    req: Turn,
    explicit_session: bool,
    committed: int,
    bound: frozenset[str] | None,
) -> tuple[str, list[str], int] | None:
    """Rule 7's downgrade: SIMPLE's primary and fallbacks (those of a chain's holder),
    if their worst case fits."""
    if policy.budget_mode != "downgrade" or explicit_session or Tier.SIMPLE not in policy.tiers:
        return None
    chain = [m for m in policy.tiers[Tier.SIMPLE].chain if bound is None or m in bound]
    worst = req.choices * policy.worst_case_micros(chain, req.prompt_tokens, req.max_output_tokens)
    if not chain or policy.cap_micros is None or committed + worst > policy.cap_micros:
        return None
    return chain[0], chain[1:], worst


def decision_of(policy: SessionPolicy, turn: Turn, begun: Begun) -> Decision:
    """The `Decision` of a begin step's outcome; `BudgetExceeded` when it refused."""
    if begun.refused_worst is not None:
        raise BudgetExceeded(
            turn.session_id,
            begun.spent,
            begun.held,
            policy.cap_micros or 0,
            begun.refused_worst,
            source=turn.source,
            model=begun.model,
        )
    headers = response_headers(
        turn.session_id, begun.model, begun.tier, begun.reason, begun.spent, turn.source,
        begun.output_limit,
    )  # fmt: skip
    return Decision(
        session_id=turn.session_id,
        model=begun.model,
        tier=begun.tier,
        fallbacks=begun.fallbacks,
        reason=begun.reason,
        strikes=begun.strikes,
        session_cost_usd=begun.spent / 1_000_000,
        reserved_micros=begun.reserved,
        headers=headers,
        key=turn.key,
        source=turn.source,
        fingerprint=turn.fingerprint,
        reservation_id=turn.reservation_id,
        session_cost_micros=begun.spent,
        sticky_activated=begun.sticky_activated,
        prompt_tokens=turn.prompt_tokens,
        scope=turn.scope,
        links=turn.links_out,
        pin_from=begun.pin_from,
        owned=turn.owned,
        output_limit=begun.output_limit or None,
        session_created_at=begun.created_at,
        strikes_before=begun.strikes_before,
    )


def without_session(policy: SessionPolicy, turn: Turn, reason: str = "no_session") -> Decision:
    """The decision for a request routed without a session (none, or no store)."""
    chain = policy.chain(turn.tier).chain
    model = turn.explicit_model or chain[0]
    return Decision(
        session_id=None,
        model=model,
        tier=turn.tier,
        fallbacks=[m for m in chain if m != model],
        reason=reason,
        strikes=0,
        session_cost_usd=0.0,
        reserved_micros=0,
        headers=response_headers(None, model, turn.tier, reason, 0),
        fingerprint=turn.fingerprint,
        prompt_tokens=turn.prompt_tokens,
    )
