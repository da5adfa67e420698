"""The I/O of the routing flow: each step run against a store, once for a sync store and
once for an async one, sharing everything else (the pure steps of `reading`, `chains`,
`begin` and `finish`). What a store failure means is decided here too: a `begin` the
store failed may route without a session, or is refused; its reservation, which may have
landed, is released in the background; `finish` retries the store for a while."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import LLMSessionsError, SessionBusy, StoreUnavailable
from ..ids import split_key
from ..records import Entry
from ..rules import MAX_COST_MICROS
from ..stores.base import AsyncStore, EventOf, Store, Transition
from . import finish as charging
from .begin import begin_step, decision_of, without_session
from .chains import follow, foreign_claim, link_alive, link_name, owner_name, read_link
from .decision import Decision, Turn
from .events import TurnEvent, announce, refusal_event
from .finish import release_step
from .reading import read_request

if TYPE_CHECKING:
    from ..policy import SessionPolicy

__all__ = [
    "abegin",
    "abill_later",
    "apeek",
    "arecord",
    "aresponse_target",
    "begin",
    "bill_later",
    "peek",
    "peeked",
    "record",
    "response_target",
    "store_fault",
]

T = TypeVar("T")

log = logging.getLogger("llm_sessions.policy")

_FINISH_PAUSE_S = (0.05, 1.0)  # first and longest pause between `finish` retries
# background releases in flight (a task is only weakly held by its loop)
_releases: set[asyncio.Task[None]] = set()


def begin(
    policy: SessionPolicy,
    store: Store,
    headers: Any,
    body: Mapping[str, Any],
    scope: str,
    event: Mapping[str, Any] | None = None,
) -> Decision:
    """`SessionPolicy.begin` against a sync store."""
    turn = read_request(policy, headers, body, scope)
    if turn.claims:
        turn = _continued(policy, store, turn)
    transacting = False
    try:
        if turn.key is None:
            return without_session(policy, turn)
        transacting = True
        step, logged = begin_step(policy, turn), _refusal(policy, turn, event)
        begun = store.transact(turn.key, step, event=logged)
        if begun.dead_link:  # its session is gone: the turn goes on as if it were unknown
            turn = _unlinked(turn)
            if turn.key is None:
                return without_session(policy, turn)
            step, logged = begin_step(policy, turn), _refusal(policy, turn, event)
            begun = store.transact(turn.key, step, event=logged)
        announce(policy, turn.scope, turn.session_id, logged)
    except StoreUnavailable as exc:
        if transacting and policy.cap_micros is not None and not isinstance(exc, SessionBusy):
            args = (policy, store, turn.key or "", turn.reservation_id)
            threading.Thread(target=_release, args=args, daemon=True).start()
        return _store_failed(policy, turn, exc)
    except LLMSessionsError:
        raise
    except Exception as exc:
        raise store_fault(exc) from exc
    return decision_of(policy, turn, begun)


async def abegin(
    policy: SessionPolicy,
    store: AsyncStore,
    headers: Any,
    body: Mapping[str, Any],
    scope: str,
    event: Mapping[str, Any] | None = None,
) -> Decision:
    """`begin` against an async store."""
    turn = read_request(policy, headers, body, scope)
    if turn.claims:
        turn = await _acontinued(policy, store, turn)
    transacting = False
    try:
        if turn.key is None:
            return without_session(policy, turn)
        transacting = True
        step, logged = begin_step(policy, turn), _refusal(policy, turn, event)
        begun = await store.transact(turn.key, step, event=logged)
        if begun.dead_link:  # its session is gone: the turn goes on as if it were unknown
            turn = _unlinked(turn)
            if turn.key is None:
                return without_session(policy, turn)
            step, logged = begin_step(policy, turn), _refusal(policy, turn, event)
            begun = await store.transact(turn.key, step, event=logged)
        announce(policy, turn.scope, turn.session_id, logged)
    except StoreUnavailable as exc:
        if transacting and policy.cap_micros is not None and not isinstance(exc, SessionBusy):
            release = _arelease(policy, store, turn.key or "", turn.reservation_id)
            task = asyncio.get_running_loop().create_task(release)
            _releases.add(task)
            task.add_done_callback(_releases.discard)
        return _store_failed(policy, turn, exc)
    except LLMSessionsError:
        raise
    except Exception as exc:
        raise store_fault(exc) from exc
    return decision_of(policy, turn, begun)


def _continued(policy: SessionPolicy, store: Store, turn: Turn) -> Turn:
    """`_claims` against a sync store. A store that fails here fails the request
    (`StoreUnavailable`, even where the store fails open): a claim that can't be checked
    is never forwarded."""
    steps = _claims(policy, turn)
    try:
        name = next(steps)
        while True:
            name = steps.send(store.resolve_link(name))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except LLMSessionsError:
        raise
    except Exception as exc:
        raise store_fault(exc) from exc


async def _acontinued(policy: SessionPolicy, store: AsyncStore, turn: Turn) -> Turn:
    """`_continued` against an async store."""
    steps = _claims(policy, turn)
    try:
        name = next(steps)
        while True:
            name = steps.send(await store.resolve_link(name))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except LLMSessionsError:
        raise
    except Exception as exc:
        raise store_fault(exc) from exc


def _claims(policy: SessionPolicy, turn: Turn) -> Generator[str, str | None, Turn]:
    """`turn` once the stored state it continues is looked up (each link to read is
    yielded, its value sent back): its link followed, and each claim the caller's scope
    has no link for checked against its owner record (`UnknownState` for another
    caller's). The links of the caller's own claims, and their owner records, are
    written again by its `finish`: they live on with the session that uses them."""
    refuse = policy.unknown_state == "refuse"
    followed = (yield turn.follow_link) if turn.follow_link else None
    owned, renewed = list(turn.owned), list(turn.links_out)
    for kind, ident, name in turn.claims:
        found = followed if name == turn.follow_link else (yield name)
        if found is None:
            owner = yield owner_name(kind, ident)
            refusal = foreign_claim(turn, kind, ident, owner, refuse)
            if refusal is not None:
                raise refusal
        else:  # the caller's own: its link and owner record live on with the session
            owned.append(owner_name(kind, ident))
            renewed.append(name)
    return follow(policy, turn, followed)._replace(
        owned=tuple(dict.fromkeys(owned)), links_out=tuple(dict.fromkeys(renewed))
    )


def _unlinked(turn: Turn) -> Turn:
    """`turn` in the session it had before its link named one (that session is gone):
    the response it continues is not written to the new session's links either."""
    assert turn.unlinked is not None
    session_id, key, source = turn.unlinked
    links = tuple(name for name in turn.links_out if name != turn.follow_link)
    return turn._replace(
        session_id=session_id, key=key, source=source, link_born=0, unlinked=None,
        links_out=links,
    )  # fmt: skip


def response_target(store: Store, name: str) -> tuple[str, str] | None:
    """``(session id, holder)`` of the response link `name`, while its session lives."""
    link = read_link(store.resolve_link(name))
    if link is None or (link.born and not link_alive(link, store.get_session(link.key))):
        return None
    return split_key(link.key)[1], link.holder


async def aresponse_target(store: AsyncStore, name: str) -> tuple[str, str] | None:
    """`response_target` against an async store."""
    link = read_link(await store.resolve_link(name))
    if link is None or (link.born and not link_alive(link, await store.get_session(link.key))):
        return None
    return split_key(link.key)[1], link.holder


def peek(
    policy: SessionPolicy, store: Store, headers: Any, body: Mapping[str, Any], scope: str
) -> str:
    """`SessionPolicy.peek` against a sync store."""
    turn = read_request(policy, headers, body, scope)
    entry = None
    if turn.explicit_model is None and turn.key is not None:
        try:
            entry = store.get_session(turn.key)
        except StoreUnavailable:
            entry = None
    return peeked(policy, turn, entry)


async def apeek(
    policy: SessionPolicy, store: AsyncStore, headers: Any, body: Mapping[str, Any], scope: str
) -> str:
    """`peek` against an async store."""
    turn = read_request(policy, headers, body, scope)
    entry = None
    if turn.explicit_model is None and turn.key is not None:
        try:
            entry = await store.get_session(turn.key)
        except StoreUnavailable:
            entry = None
    return peeked(policy, turn, entry)


def peeked(policy: SessionPolicy, turn: Turn, entry: Entry | None) -> str:
    """The model `turn` would be routed to now: the explicit model, else the session's
    pinned one, else the classified tier's primary."""
    if turn.explicit_model is not None:
        return turn.explicit_model
    if entry is not None and entry.model:
        return entry.model
    return policy.tiers[turn.tier].primary


def record(
    policy: SessionPolicy,
    store: Store,
    decision: Decision,
    step: Transition[int],
    links: dict[str, str] | None,
    event: TurnEvent | None = None,
) -> int:
    """Run a finish step (retrying the store for `finish_retry_ms`); the session total."""
    try:
        total = _write(policy, store, decision.key or "", step, links, event)
    except StoreUnavailable as exc:
        raise _unrecorded(exc) from exc
    announce(policy, decision.scope, decision.session_id, event)
    return decision.settle(total)


async def arecord(
    policy: SessionPolicy,
    store: AsyncStore,
    decision: Decision,
    step: Transition[int],
    links: dict[str, str] | None,
    event: TurnEvent | None = None,
) -> int:
    """`record` against an async store."""
    try:
        total = await _awrite(policy, store, decision.key or "", step, links, event)
    except StoreUnavailable as exc:
        raise _unrecorded(exc) from exc
    announce(policy, decision.scope, decision.session_id, event)
    return decision.settle(total)


def bill_later(
    policy: SessionPolicy, store: Store, response_id: str, scope: str, usage: Any
) -> int:
    """`SessionPolicy.bill_response` against a sync store."""
    name = link_name("response", response_id, scope)
    late = _late_charge(policy, name, response_id, store.resolve_link(name), usage)
    if late is None:
        return 0
    return _write(policy, store, *late)


async def abill_later(
    policy: SessionPolicy, store: AsyncStore, response_id: str, scope: str, usage: Any
) -> int:
    """`bill_later` against an async store."""
    name = link_name("response", response_id, scope)
    late = _late_charge(policy, name, response_id, await store.resolve_link(name), usage)
    if late is None:
        return 0
    return await _awrite(policy, store, *late)


def _late_charge(
    policy: SessionPolicy, name: str, response_id: str, link: str | None, usage: Any
) -> tuple[str, Transition[int], dict[str, str]] | None:
    """What billing a background response's usage writes: its session's key, the charge
    step, and its link without the mark of a charge to come; None when none is to come."""
    found = read_link(link)
    if found is None or not found.unbilled:
        return None
    model = found.unbilled
    try:
        cost = min(charging.cost_micros(policy.pricing, model, usage), MAX_COST_MICROS)
    except (TypeError, ValueError, ArithmeticError) as exc:
        log.warning("unreadable usage of background response %.256s: %.256s", response_id, exc)
        cost = 0
    step = charging.late_charge_step(f"late:{response_id}", cost)
    context = charging.usage_context(usage) or found.context
    return found.key, step, {name: found._replace(unbilled="", context=context).dumps()}


# -- retries of the store, for the writes that are safe to repeat ------------------------------


def _write(
    policy: SessionPolicy,
    store: Store,
    key: str,
    step: Transition[T],
    links: dict[str, str] | None = None,
    event: EventOf | None = None,
) -> T:
    """A write that is safe to repeat (finish, a late charge, a release): it waits out
    contention, and is retried while the store can't be reached, for `finish_retry_ms`."""
    return retrying(
        policy.finish_retry_ms,
        lambda: store.transact(key, step, busy_timeout_ms=math.inf, links=links, event=event),
    )


async def _awrite(
    policy: SessionPolicy,
    store: AsyncStore,
    key: str,
    step: Transition[T],
    links: dict[str, str] | None = None,
    event: EventOf | None = None,
) -> T:
    """`_write` against an async store."""
    return await aretrying(
        policy.finish_retry_ms,
        lambda: store.transact(key, step, busy_timeout_ms=math.inf, links=links, event=event),
    )


def retrying(limit_ms: int, call: Callable[[], T]) -> T:
    """`call()`, again after pauses while the store can't be reached, for up to
    `limit_ms`; then its `StoreUnavailable`."""
    deadline = time.monotonic() + limit_ms / 1000
    pause = _FINISH_PAUSE_S[0]
    while True:
        try:
            return call()
        except StoreUnavailable:
            if time.monotonic() >= deadline:
                raise
        except LLMSessionsError:
            raise
        except Exception as exc:
            raise store_fault(exc) from exc
        time.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
        pause = min(pause * 2, _FINISH_PAUSE_S[1])


async def aretrying(limit_ms: int, call: Callable[[], Awaitable[T]]) -> T:
    """`retrying` for an async store."""
    deadline = time.monotonic() + limit_ms / 1000
    pause = _FINISH_PAUSE_S[0]
    while True:
        try:
            return await call()
        except StoreUnavailable:
            if time.monotonic() >= deadline:
                raise
        except LLMSessionsError:
            raise
        except Exception as exc:
            raise store_fault(exc) from exc
        await asyncio.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
        pause = min(pause * 2, _FINISH_PAUSE_S[1])


def _refusal(
    policy: SessionPolicy, turn: Turn, extra: Mapping[str, Any] | None
) -> TurnEvent | None:
    """The event a refused turn leaves in its session's log (only a cap refuses)."""
    return None if policy.cap_micros is None else refusal_event(policy, turn, extra)


def _release(policy: SessionPolicy, store: Store, key: str, reservation_id: str) -> None:
    """After a `begin` the store failed: its write may still have landed (a reply lost
    to a hung server), so remove its reservation if it is there, retrying."""
    try:
        _write(policy, store, key, release_step(reservation_id))
    except LLMSessionsError as exc:
        log.warning("could not check a failed request's reservation: %s", exc)


async def _arelease(
    policy: SessionPolicy, store: AsyncStore, key: str, reservation_id: str
) -> None:
    """`_release` for an async store."""
    try:
        await _awrite(policy, store, key, release_step(reservation_id))
    except LLMSessionsError as exc:
        log.warning("could not check a failed request's reservation: %s", exc)


def _store_failed(policy: SessionPolicy, turn: Turn, exc: StoreUnavailable) -> Decision:
    """`begin` when the store failed: route without a session where that is allowed."""
    if isinstance(exc, SessionBusy):
        raise exc
    capped = policy.cap_micros is not None
    fails_open = getattr(policy.store, "on_error", "raise") == "fail_open"
    if (capped and policy.on_store_error == "allow") or (not capped and fails_open):
        log.warning("session store unavailable, routing without a session: %s", exc)
        return without_session(policy, turn, "store_unavailable")
    raise exc


def store_fault(exc: Exception) -> StoreUnavailable:
    """What leaves `begin`/`finish` for an error of the store that is not one of ours."""
    log.error("session store failed: %r", exc)
    return StoreUnavailable(f"the session store failed: {type(exc).__name__}: {exc}")


def _unrecorded(exc: StoreUnavailable) -> StoreUnavailable:
    return StoreUnavailable(f"the request's cost could not be recorded: {exc}")
