"""What the routing flow passes between its steps: the `Turn` the rules see, what the
begin step found (`Begun`), and what `SessionPolicy.begin` decides (`Decision`), with the
``X-Session-*`` headers it carries."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from typing import NamedTuple

from ..records import Entry, FlowState, format_usd
from ..rules import FLOW, Record
from ..tiers import Tier

__all__ = [
    "REASONS",
    "Begun",
    "Decision",
    "Turn",
    "entry_of",
    "new_reservation_id",
    "response_headers",
]

#: Every `Decision.reason`.
REASONS = (
    "new",
    "pinned",
    "upgraded",
    "explicit",
    "cache_sticky",
    "escalated",
    "primary_retry",
    "budget_downgrade",
    "chain_bound",
    "no_session",
    "store_unavailable",
)

# Reservation ids: unique per process (a random prefix) and per request (a counter).
_RESERVATION_PREFIX = secrets.token_hex(4)
_reservation_counter = itertools.count()
_new_tuple = tuple.__new__


def new_reservation_id() -> str:
    """An id unique to this process (a random prefix) and to this request (a counter)."""
    return f"{_RESERVATION_PREFIX}{next(_reservation_counter):x}"


@dataclass(frozen=True, slots=True)
class Decision:
    """What `begin` decided for one request. Pass it back to `finish`."""

    session_id: str | None
    model: str
    tier: Tier
    fallbacks: list[str]  # the tier's [primary, *fallback] without `model`, in order
    reason: str  # one of REASONS
    strikes: int  # the strike count recorded this turn
    session_cost_usd: float  # spent by the session before this request
    reserved_micros: int  # this request's budget reservation
    headers: dict[str, str]  # the X-Session-* response headers
    key: str | None = None  # the store key: the session id, namespaced by the scope
    fingerprint: str = ""
    reservation_id: str = ""
    session_cost_micros: int = 0
    sticky_activated: bool = False  # the session turned cache-sticky with this request
    prompt_tokens: int = 0  # the prompt's estimated size (what an unreadable usage is billed)
    source: str = ""  # where the session id came from: an id source, or "derived"
    scope: str = ""  # the caller's scope
    links: tuple[str, ...] = ()  # link names `finish` points at this session (a conversation)
    pin_from: str = ""  # the pin a chain bound this turn away from: `finish` moves it if served
    owned: tuple[str, ...] = ()  # owner records `finish` writes (a conversation's)
    # the output limit lowered so the worst case fits the cap (`fit_output`); None: as asked
    output_limit: int | None = None
    session_created_at: int = 0  # when the session was created (0: no session)
    strikes_before: int = 0  # the session's strikes before this turn
    _outcome: list[int] = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def models(self) -> list[str]:
        """The models to try, in order: `model`, then `fallbacks`."""
        return [self.model, *self.fallbacks]

    @property
    def settled_total(self) -> int | None:
        """The session total `finish` returned for this decision; None before it."""
        return self._outcome[0] if self._outcome else None

    def settle(self, total: int) -> int:
        """Remember what `finish` returned (the first answer stands); returns it."""
        if not self._outcome:
            self._outcome.append(total)
        return self._outcome[0]


class Turn(NamedTuple):
    """A request as the rules see it, read once before the store is touched."""

    session_id: str | None
    key: str | None
    explicit_model: str | None  # the requested model, when it is not a profile
    tier: Tier  # classified, resolved to a tier of the table
    fingerprint: str
    sticky: bool
    declared_ttl_ms: int
    prompt_tokens: int
    max_output_tokens: int
    reservation_id: str
    choices: int = 1  # `n`: the worst case is paid once per choice
    source: str = ""  # where the session id came from (an id source, or "derived")
    scope: str = ""
    # Chains of stored responses (the Responses API): the link to look up before the
    # session is touched ("" none), whether its session is this request's (the id source
    # that won was previous_response_id), and the links `finish` writes.
    follow_link: str = ""
    link_names_session: bool = False
    links_out: tuple[str, ...] = ()
    # the stored state it continues, each (kind, id, link name): checked against its owner
    claims: tuple[tuple[str, str, str], ...] = ()
    owned: tuple[str, ...] = ()  # owner records `finish` writes (a conversation's)
    # the only models that can serve it (those of the holder of the state it continues)
    bound: frozenset[str] | None = None
    # a followed link that named the session: when that session was created (the link is
    # dead if the session is not that one any more), and the session before the link
    link_born: int = 0
    unlinked: tuple[str | None, str | None, str] | None = None


class Begun(NamedTuple):
    """The outcome of the begin step."""

    model: str
    tier: Tier
    reason: str
    strikes: int
    spent: int
    held: int  # reservations of other requests in flight
    reserved: int  # this request's reservation
    refused_worst: int | None  # set when the budget refused the request
    fallbacks: list[str]
    sticky_activated: bool = False
    pin_from: str = ""  # the pin a chain bound this turn away from
    output_limit: int = 0  # the output limit lowered to fit the cap (0: as asked)
    created_at: int = 0  # when the session was created (its links remember it)
    dead_link: bool = False  # the session the followed link named is gone: nothing done
    strikes_before: int = 0  # the session's strikes before this turn


def entry_of(record: Record, flow: FlowState) -> Entry:
    """The session entry of a rules record and its flow state."""
    return _new_tuple(Entry, (*record[:FLOW], flow))


def response_headers(
    session_id: str | None,
    model: str,
    tier: Tier,
    reason: str,
    spent: int,
    source: str = "",
    output_limit: int = 0,
) -> dict[str, str]:
    """The ``X-Session-*`` headers of a decision."""
    headers = {} if session_id is None else {"X-Session-ID": session_id}
    if source:
        headers["X-Session-Source"] = source
    headers.update(
        {
            "X-Session-Model": model,
            "X-Session-Tier": tier.value,
            "X-Session-Reason": reason,
            "X-Session-Cost-USD": format_usd(spent),
        }
    )
    if output_limit:
        headers["X-Session-Output-Limit"] = str(output_limit)
    return headers
