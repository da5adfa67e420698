"""The routing flow's facade: `SessionPolicy.begin` before an LLM call, `finish` after it.

`begin` reads the request (`flow.reading`), then applies the rules to the session in one
atomic step of the store (`flow.begin`), and returns a `Decision`: the model to call, its
fallbacks, why, and the headers to send back. `finish` records what happened, in one
more atomic step (`flow.finish`). The rules, in order (README, "The routing flow"):

1. Session id from the store's header, else derived from the first user message with
   the caller's scope; none (or a disabled store) routes without a session.
2. A model that is not a routing profile is an explicit choice, pinned for good.
3. A profile request on a session: the explicit pin; a stale fallback pin goes back to
   what it replaced; an active cache-sticky pin; else upgrade-only re-classification.
4. A profile request without a session: classify.
5. Loop detection on the turn's fingerprint: at `STRIKE_LIMIT` strikes, one tier up.
6. Pin the outcome, cache-sticky when the context is large or declares a cache breakpoint.
7. Budget: the request's worst case is reserved against the cap before anything changes.
8. `finish`: the real cost replaces the reservation; a fallback that served is re-pinned.

Everything but the store calls is pure; `flow.shell` runs it against a sync or an async
store, so both forms share it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from .flow import chains, events, shell
from .flow import finish as charging
from .flow.decision import REASONS, Decision
from .flow.reading import MAX_MODEL_ID_LENGTH
from .ids import DEFAULT_ID_SOURCES, check_id_sources, session_key
from .routing import (
    Classifier,
    Pricing,
    TierModels,
    default_classify,
    routing_table,
    usd_to_micros,
)
from .stores.base import AsyncStore, Store
from .tiers import Tier

__all__ = ["MAX_MODEL_ID_LENGTH", "REASONS", "Decision", "SessionPolicy"]


class SessionPolicy:
    """The routing flow over any store (memory or Redis, sync or async).

    `tiers` is ``{Tier: TierModels}`` or the plain dict `routing_table` reads. `pricing`
    maps model ids to `Pricing`. A requested model named in `profiles` (or none) lets the
    flow route; any other model is the user's explicit choice. With
    `max_session_cost_usd`, each request reserves its worst-case cost against the cap
    before it is routed; `budget_mode` is ``"strict"`` (refuse) or ``"downgrade"`` (send
    an auto session's request to the SIMPLE tier when that fits). With `fit_output` (the
    default), a request whose worst case does not fit what is left is first given the
    largest output limit that fits (`Decision.output_limit`), down to
    `min_output_tokens`. Use `begin`/`finish`
    with a sync store and `abegin`/`afinish` with an async one.

    When the store can't be reached, `on_store_error` says what a capped request gets:
    ``"refuse"`` (`StoreUnavailable`, nothing forwarded) or ``"allow"`` (routed without a
    session, unbudgeted). Requests without a cap follow the store's own ``on_error``
    (a ``fail_open`` store routes them without a session). `finish` retries a store that
    can't be reached for up to `finish_retry_ms` before it raises `StoreUnavailable`.

    Chains of stored responses (the OpenAI Responses API): `finish` given a
    ``response_id`` remembers, in the store, the session and the *holder* of that response
    (`state_holder(served_model)`, e.g. the name of the upstream that served it). A
    request with that ``previous_response_id`` (or a stored ``conversation``) then joins
    that session, and only models of the same holder may serve it (reason
    ``"chain_bound"`` when that kept the pinned model from an upgrade or escalation).
    Each such id also gets an owner record (unscoped, by a digest of the id): a request of
    another scope that continues it (``previous_response_id``, ``conversation``, an
    ``item_reference``) raises `UnknownState`, as does, with ``unknown_state="refuse"``,
    one continuing an id never recorded (``"forward"``: it goes on as it came).

    Each turn is logged in its session's event log (`events`); `on_event(scope, session
    id, event)` is called with each event once it is written (a live view's feed).
    """

    def __init__(
        self,
        store: Store | AsyncStore,
        tiers: Mapping[Any, Any],
        *,
        classify: Classifier | None = None,
        pricing: Mapping[str, Pricing] | None = None,
        profiles: Sequence[str] = ("auto",),
        max_session_cost_usd: float | int | str | Decimal | None = None,
        budget_mode: str = "strict",
        default_max_tokens: int = 4096,
        reservation_ttl_ms: int = 600_000,
        fallback_pin_ms: int = 300_000,
        on_store_error: str = "refuse",
        finish_retry_ms: int = 10_000,
        id_sources: Sequence[str] = DEFAULT_ID_SOURCES,
        state_holder: Callable[[str], str] | None = None,
        unknown_state: str = "forward",
        fit_output: bool = True,
        min_output_tokens: int = 1024,
        on_event: Callable[[str, str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.store = store
        self._sync_store, self._async_store = _twins(store)
        self.config = store.config
        self.tiers = routing_table(tiers)
        self.classify: Classifier = default_classify if classify is None else classify
        _check_callable("classify", self.classify, "(messages, tools) -> Tier")
        self.pricing = _checked_pricing(pricing)
        self.profiles = _checked_profiles(profiles)
        self.cap_micros: int | None = None
        if max_session_cost_usd is not None:  # a cap rounds down: never more than it says
            self.cap_micros = usd_to_micros(
                max_session_cost_usd, name="max_session_cost_usd", round_up=False
            )
        self.budget_mode = _one_of("budget_mode", budget_mode, ("strict", "downgrade"))
        self.on_store_error = _one_of("on_store_error", on_store_error, ("refuse", "allow"))
        self.unknown_state = _one_of("unknown_state", unknown_state, ("forward", "refuse"))
        self.id_sources = check_id_sources(id_sources)
        if state_holder is not None:
            _check_callable("state_holder", state_holder, "(model) -> str")
        self.state_holder = state_holder
        self._held: dict[str, frozenset[str]] = {}  # holder -> the table's models it holds
        self.default_max_tokens = _at_least("default_max_tokens", default_max_tokens, 1)
        self.reservation_ttl_ms = _at_least("reservation_ttl_ms", reservation_ttl_ms, 1)
        self.fallback_pin_ms = _at_least("fallback_pin_ms", fallback_pin_ms, 0)
        self.finish_retry_ms = _at_least("finish_retry_ms", finish_retry_ms, 0)
        if not isinstance(fit_output, bool):
            raise TypeError(f"fit_output must be a bool, got {type(fit_output).__name__}")
        self.fit_output = fit_output
        self.min_output_tokens = _at_least("min_output_tokens", min_output_tokens, 1)
        if on_event is not None:
            _check_callable("on_event", on_event, "(scope, session_id, event) -> None")
        self.on_event = on_event
        self._resolved = _resolve_tiers(self.tiers)
        #: each tier's primary (that of the tier it resolves to): what escalation moves to
        self.primaries = {t: self.tiers[self._resolved[t]].primary for t in Tier}

    # -- the public flow --------------------------------------------------------------------

    def begin(
        self,
        headers: Any,
        body: Mapping[str, Any],
        *,
        scope: str = "",
        event: Mapping[str, Any] | None = None,
    ) -> Decision:
        """Decide the model for one chat-completions request (rules 1-7).

        Raises `InvalidSessionId` for a bad session header, `InvalidRequest` for a body it
        can't route, `BudgetExceeded` when the session's budget refuses the request, and
        `StoreUnavailable` (`SessionBusy` under contention past the store's busy timeout)
        when the store fails and the request may not go without it. Nothing changed in the
        session whenever it raises, except its event log: a turn the budget refused is
        logged there (see `events`), with the fields of `event` added.
        """
        return shell.begin(self, self._sync("abegin"), headers, body, scope, event)

    async def abegin(
        self,
        headers: Any,
        body: Mapping[str, Any],
        *,
        scope: str = "",
        event: Mapping[str, Any] | None = None,
    ) -> Decision:
        """`begin` for an async store."""
        return await shell.abegin(self, self._async("begin"), headers, body, scope, event)

    def peek(self, headers: Any, body: Mapping[str, Any], *, scope: str = "") -> str:
        """The model this request would be routed to now, changing nothing (for token
        counting): the explicit model, else the session's pinned one, else the classified
        tier's primary. A store that can't be reached counts as no session."""
        return shell.peek(self, self._sync("apeek"), headers, body, scope)

    async def apeek(self, headers: Any, body: Mapping[str, Any], *, scope: str = "") -> str:
        """`peek` for an async store."""
        return await shell.apeek(self, self._async("peek"), headers, body, scope)

    def finish(
        self,
        decision: Decision,
        *,
        served_model: str | None,
        usage: Any = None,
        cost_micros: int | None = None,
        output_bytes: int = 0,
        response_id: str | None = None,
        item_ids: Sequence[str] = (),
        billed_later: bool = False,
        context_tokens: int | None = None,
        event: Mapping[str, Any] | None = None,
    ) -> int:
        """Record the outcome of a decided request; returns the session's total in micros.

        `served_model` is the model that answered, or None when every attempt failed (the
        reservation is released, nothing is charged, and retrying the same turn is not a
        strike). The cost is `cost_micros` if given, else ``usage["cost"]`` (USD, as
        OpenRouter reports it), else `usage`'s token counts priced by the table; when
        those are missing or malformed, the estimate (`estimate_micros`, with
        `output_bytes` of generated text). Idempotent: finishing a decision again returns
        the first result and changes nothing. A store that can't be reached is retried for
        `finish_retry_ms`; then `StoreUnavailable` says the cost was not recorded.
        `response_id` (the id of a stored response: the Responses API) is remembered with
        the session, for as long as it lives, so that requests continuing it join it; so
        are `item_ids` (its output items' ids, for ``item_reference`` inputs). A response
        `billed_later` (a background one, answered before its output exists) is billed
        when its usage is seen: `bill_response`. Each link remembers `context_tokens`, the
        context the answer leaves (default `context_tokens()` of `usage`, `output_bytes`):
        a request continuing it counts that much more prompt in its worst case. The turn
        is logged in the session's event log (see `events`) in the same write, with the
        fields of `event` added (a gateway adds the API, the status, the latency...).
        """
        store = self._sync("afinish")
        prepared = charging.finish_prepare(
            self, decision, served_model, usage, cost_micros, output_bytes
        )
        if prepared is None:
            return decision.settled_total or 0
        step, charged = prepared
        if context_tokens is None:
            context_tokens = charging.context_after(decision, usage, output_bytes)
        links = chains.links_for(
            self, decision, served_model, response_id, item_ids, billed_later, context_tokens
        )
        logged = events.finish_event(decision, served_model, charged, event)
        return shell.record(self, store, decision, step, links, logged)

    async def afinish(
        self,
        decision: Decision,
        *,
        served_model: str | None,
        usage: Any = None,
        cost_micros: int | None = None,
        output_bytes: int = 0,
        response_id: str | None = None,
        item_ids: Sequence[str] = (),
        billed_later: bool = False,
        context_tokens: int | None = None,
        event: Mapping[str, Any] | None = None,
    ) -> int:
        """`finish` for an async store."""
        store = self._async("finish")
        prepared = charging.finish_prepare(
            self, decision, served_model, usage, cost_micros, output_bytes
        )
        if prepared is None:
            return decision.settled_total or 0
        step, charged = prepared
        if context_tokens is None:
            context_tokens = charging.context_after(decision, usage, output_bytes)
        links = chains.links_for(
            self, decision, served_model, response_id, item_ids, billed_later, context_tokens
        )
        logged = events.finish_event(decision, served_model, charged, event)
        return await shell.arecord(self, store, decision, step, links, logged)

    def response_session(self, response_id: str, scope: str = "") -> tuple[str, str] | None:
        """``(session id, holder)`` of a response `finish` remembered for `scope`, or None
        (also once its session is gone: expired, or deleted)."""
        store = self._sync("aresponse_session")
        if not chains.usable_id(response_id):
            return None
        return shell.response_target(store, chains.link_name("response", response_id, scope))

    async def aresponse_session(self, response_id: str, scope: str = "") -> tuple[str, str] | None:
        """`response_session` for an async store."""
        store = self._async("response_session")
        if not chains.usable_id(response_id):
            return None
        name = chains.link_name("response", response_id, scope)
        return await shell.aresponse_target(store, name)

    def events(self, session_id: str, scope: str = "") -> list[dict[str, Any]]:
        """The turns of `scope`'s session `session_id` as its event log keeps them (the
        newest `Config.events_kept`), oldest first; empty when there is no such session.
        Each is what `finish` (or a refusal) logged: see `llm_sessions.flow.events`."""
        store = self._sync("aevents")
        return events.read_events(store.get_events(self.session_key(session_id, scope)))

    async def aevents(self, session_id: str, scope: str = "") -> list[dict[str, Any]]:
        """`events` for an async store."""
        store = self._async("events")
        return events.read_events(await store.get_events(self.session_key(session_id, scope)))

    def bill_response(self, response_id: str, usage: Any, scope: str = "") -> int:
        """Bill a background response (one `finish` recorded ``billed_later``) once its
        `usage` is seen (a retrieval of it completed): its usage priced at the model that
        took it, charged to its session once. Returns what was charged (0 when it was not
        one to bill, or was billed before). `StoreUnavailable` after `finish_retry_ms`."""
        store = self._sync("abill_response")
        if not chains.usable_id(response_id):
            return 0
        return shell.bill_later(self, store, response_id, scope, usage)

    async def abill_response(self, response_id: str, usage: Any, scope: str = "") -> int:
        """`bill_response` for an async store."""
        store = self._async("bill_response")
        if not chains.usable_id(response_id):
            return 0
        return await shell.abill_later(self, store, response_id, scope, usage)

    # -- what a request costs ---------------------------------------------------------------

    def charge_micros(
        self,
        decision: Decision,
        served_model: str | None,
        usage: Any = None,
        cost_micros: int | None = None,
        output_bytes: int | Callable[[], int] = 0,
    ) -> int:
        """What `finish` charges for a request: `cost_micros`, else `usage` priced, else
        (usage missing or malformed, logged) the estimate, from `output_bytes` of generated
        text (or a function giving them, called only then). Never raises."""
        return charging.charge_micros(
            self.pricing, decision, served_model, usage, cost_micros, output_bytes
        )

    def context_tokens(
        self, decision: Decision, usage: Any = None, output_bytes: int | Callable[[], int] = 0
    ) -> int:
        """The tokens of context an answer leaves (what a request continuing it is sent):
        `usage`'s input, cached included, and output; else the decision's prompt estimate
        and ceil(`output_bytes` / 3)."""
        return charging.context_after(decision, usage, output_bytes)

    def estimate_micros(self, model: str, prompt_tokens: int, output_bytes: int) -> int:
        """The estimated cost of a call: the prompt estimate plus ceil(output bytes / 3)
        tokens of output, at `model`'s price (0 when unpriced)."""
        return charging.estimate_micros(self.pricing, model, prompt_tokens, output_bytes)

    def cost_micros(
        self, served_model: str | None, usage: Any = None, cost_micros: int | None = None
    ) -> int:
        """What a call cost, in micro-USD: explicit, else usage's ``cost``, else priced usage."""
        return charging.cost_micros(self.pricing, served_model, usage, cost_micros)

    def worst_case_micros(self, models: Sequence[str], prompt_tokens: int, max_output: int) -> int:
        """The most a request could cost on any of `models` (unpriced models cost 0)."""
        return charging.worst_case_micros(self.pricing, models, prompt_tokens, max_output)

    # -- the routing table ------------------------------------------------------------------

    @staticmethod
    def session_key(session_id: str, scope: str = "") -> str:
        """The store key of a session: its id in the caller's scope (`ids.session_key`: no
        two (scope, id) pairs share a key; an unscoped id without ':' or '%' is its key)."""
        return session_key(session_id, scope)

    def chain(self, tier: Tier) -> TierModels:
        """The models of `tier`, or of the nearest tier the table has."""
        return self.tiers[self._resolved[tier]]

    def resolved(self, tier: Tier) -> Tier:
        """`tier`, or the nearest tier the table has (above it, else below)."""
        return self._resolved[tier]

    def holds(self, holder: str) -> frozenset[str]:
        """The models of the routing table whose state `holder` keeps."""
        held = self._held.get(holder)
        if held is None:
            assert self.state_holder is not None
            models = {m for tier in self.tiers.values() for m in tier.chain}
            held = frozenset(m for m in models if self.state_holder(m) == holder)
            self._held[holder] = held
        return held

    def _sync(self, twin: str) -> Store:
        if self._sync_store is None:
            raise TypeError(f"this policy has an async store: use {twin}()")
        return self._sync_store

    def _async(self, twin: str) -> AsyncStore:
        if self._async_store is None:
            raise TypeError(f"this policy has a sync store: use {twin}()")
        return self._async_store


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        listed = " or ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be {listed}, got {value!r}")
    return value


def _resolve_tiers(tiers: Mapping[Tier, TierModels]) -> dict[Tier, Tier]:
    """Each tier resolved to a tier of the table: the nearest above, else below."""
    resolved = {}
    for tier in Tier:
        above = [t for t in Tier if t >= tier and t in tiers]
        below = [t for t in Tier if t < tier and t in tiers]
        resolved[tier] = above[0] if above else below[-1]
    return resolved


def _twins(store: Store | AsyncStore) -> tuple[Store | None, AsyncStore | None]:
    """`store` as the sync or the async store it is."""
    if not hasattr(store, "transact") or not hasattr(store, "config"):
        raise TypeError(f"store must be a session store, got {type(store).__name__}")
    if inspect.iscoroutinefunction(store.transact):
        return None, store  # type: ignore[return-value]
    return store, None  # type: ignore[return-value]


def _check_callable(name: str, value: object, shape: str) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be a callable {shape}")


def _checked_pricing(pricing: Mapping[str, Pricing] | None) -> dict[str, Pricing]:
    checked = dict(pricing or {})
    for model, price in checked.items():
        if not isinstance(price, Pricing):
            raise TypeError(f"pricing[{model!r}] must be a Pricing, got {type(price).__name__}")
    return checked


def _checked_profiles(profiles: Sequence[str]) -> tuple[str, ...]:
    if (
        isinstance(profiles, str)
        or not profiles
        or not all(isinstance(p, str) and p for p in profiles)
    ):
        raise ValueError(f"profiles must be a non-empty list of names, got {profiles!r}")
    return tuple(profiles)


def _at_least(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value
