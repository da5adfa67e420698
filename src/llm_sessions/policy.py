"""The routing flow: `SessionPolicy.begin` before an LLM call, `finish` after it.

`begin` reads the request, then applies the rules below to the session in one atomic
step of the store (`transact`), and returns a `Decision`: the model to call, its
fallbacks, why, and the headers to send back. `finish` records what happened, in one
more atomic step. The rules, in order (README, "The routing flow"):

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

Everything here but the two store calls is pure, so the sync and async forms share it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from . import rules
from .errors import (
    BudgetExceeded,
    InvalidRequest,
    InvalidSessionId,
    LLMSessionsError,
    SessionBusy,
    StoreUnavailable,
)
from .fingerprint import fingerprint_turn, provider_from_model, sticky_by_size, utf8_len
from .flow import (
    REASONS,
    Decision,
    _Begun,
    _Request,
    declared_cache_ttls,
    entry_of,
    new_reservation_id,
    response_headers,
    usage_field,
)
from .ids import (
    DEFAULT_ID_SOURCES,
    body_id,
    check_id_sources,
    derive_session_id,
    find_session_id,
    session_key,
    split_key,
)
from .messages import content_text, is_mapping
from .records import EMPTY_FLOW, Entry, FlowState, Reservation
from .routing import (
    Classifier,
    Pricing,
    TierModels,
    classify_by_text,
    default_classify,
    extra_prompt_bytes,
    prompt_tokens_by_size,
    routing_table,
    token_usage,
    usd_to_micros,
)
from .rules import (
    CACHE_STICKY,
    COST,
    MAX_COST_MICROS,
    MODEL,
    STRIKE_LIMIT,
    STRIKES,
    TIER,
    USER_EXPLICIT,
    Record,
)
from .stores.base import AsyncStore, Store, Transition
from .tiers import Tier, coerce_tier, tier_rank

__all__ = ["MAX_MODEL_ID_LENGTH", "REASONS", "Decision", "SessionPolicy"]

T = TypeVar("T")

log = logging.getLogger("llm_sessions.policy")

#: Model ids are 1 to 256 printable ASCII characters (they become response headers).
MAX_MODEL_ID_LENGTH = 256
_MODEL_ID = re.compile(rf"[\x20-\x7e]{{1,{MAX_MODEL_ID_LENGTH}}}")
#: How many finished requests a session remembers, to answer a repeated `finish`.
FINISHED_KEPT = 32
_FINISH_PAUSE_S = (0.05, 1.0)  # first and longest pause between `finish` retries


class SessionPolicy:
    """The routing flow over any store (memory or Redis, sync or async).

    `tiers` is ``{Tier: TierModels}`` or the plain dict `routing_table` reads. `pricing`
    maps model ids to `Pricing`. A requested model named in `profiles` (or none) lets the
    flow route; any other model is the user's explicit choice. With
    `max_session_cost_usd`, each request reserves its worst-case cost against the cap
    before it is routed; `budget_mode` is ``"strict"`` (refuse) or ``"downgrade"`` (send
    an auto session's request to the SIMPLE tier when that fits). Use `begin`/`finish`
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
    ) -> None:
        if not hasattr(store, "transact") or not hasattr(store, "config"):
            raise TypeError(f"store must be a session store, got {type(store).__name__}")
        self.store = store
        self._sync_store: Store | None = None
        self._async_store: AsyncStore | None = None
        if inspect.iscoroutinefunction(store.transact):
            self._async_store = store  # type: ignore[assignment]
        else:
            self._sync_store = store  # type: ignore[assignment]
        self.config = store.config
        self.tiers = routing_table(tiers)
        self.classify: Classifier = default_classify if classify is None else classify
        if not callable(self.classify):
            raise TypeError("classify must be a callable (messages, tools) -> Tier")
        self.pricing = dict(pricing or {})
        for model, price in self.pricing.items():
            if not isinstance(price, Pricing):
                raise TypeError(f"pricing[{model!r}] must be a Pricing, got {type(price).__name__}")
        if (
            isinstance(profiles, str)
            or not profiles
            or not all(isinstance(p, str) and p for p in profiles)
        ):
            raise ValueError(f"profiles must be a non-empty list of names, got {profiles!r}")
        self.profiles = tuple(profiles)
        self.cap_micros: int | None = None
        if max_session_cost_usd is not None:  # a cap rounds down: never more than it says
            self.cap_micros = usd_to_micros(
                max_session_cost_usd, name="max_session_cost_usd", round_up=False
            )
        if budget_mode not in ("strict", "downgrade"):
            raise ValueError(f"budget_mode must be 'strict' or 'downgrade', got {budget_mode!r}")
        self.budget_mode = budget_mode
        if on_store_error not in ("refuse", "allow"):
            raise ValueError(f"on_store_error must be 'refuse' or 'allow', got {on_store_error!r}")
        self.on_store_error = on_store_error
        self.id_sources = check_id_sources(id_sources)
        if state_holder is not None and not callable(state_holder):
            raise TypeError("state_holder must be a callable (model) -> str")
        self.state_holder = state_holder
        self._held: dict[str, frozenset[str]] = {}  # holder -> the table's models it holds
        self._store_fails_open = getattr(store, "on_error", "raise") == "fail_open"
        for name, value, low in (
            ("default_max_tokens", default_max_tokens, 1),
            ("reservation_ttl_ms", reservation_ttl_ms, 1),
            ("fallback_pin_ms", fallback_pin_ms, 0),
            ("finish_retry_ms", finish_retry_ms, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.default_max_tokens = default_max_tokens
        self.reservation_ttl_ms = reservation_ttl_ms
        self.fallback_pin_ms = fallback_pin_ms
        self.finish_retry_ms = finish_retry_ms
        self._releases: set[asyncio.Task[None]] = set()  # background releases in flight
        # Each tier resolved to a tier of the table: the nearest above, else below.
        self._resolved: dict[Tier, Tier] = {}
        for tier in Tier:
            above = [t for t in Tier if t >= tier and t in self.tiers]
            below = [t for t in Tier if t < tier and t in self.tiers]
            self._resolved[tier] = above[0] if above else below[-1]
        self._primaries = {t: self.tiers[self._resolved[t]].primary for t in Tier}

    # -- the public flow --------------------------------------------------------------------

    def begin(self, headers: Any, body: Mapping[str, Any], *, scope: str = "") -> Decision:
        """Decide the model for one chat-completions request (rules 1-7).

        Raises `InvalidSessionId` for a bad session header, `InvalidRequest` for a body it
        can't route, `BudgetExceeded` when the session's budget refuses the request, and
        `StoreUnavailable` (`SessionBusy` under contention past the store's busy timeout)
        when the store fails and the request may not go without it. Nothing changed in the
        session whenever it raises; nothing else ever leaves it.
        """
        if self._sync_store is None:
            raise TypeError("this policy has an async store: use abegin()")
        request = self._read_request(headers, body, scope)
        transacting = False
        try:
            if request.follow_link:
                request = self._follow(request, self._sync_store.resolve_link(request.follow_link))
            if request.key is None:
                return self._without_session(request)
            transacting = True
            begun = self._sync_store.transact(request.key, self._begin_step(request))
        except StoreUnavailable as exc:
            if transacting and self.cap_micros is not None and not isinstance(exc, SessionBusy):
                args = (self._sync_store, request.key or "", request.reservation_id)
                threading.Thread(target=self._release, args=args, daemon=True).start()
            return self._store_failed(request, exc)
        except LLMSessionsError:
            raise
        except Exception as exc:
            raise _store_fault(exc) from exc
        return self._decision(request, begun)

    async def abegin(self, headers: Any, body: Mapping[str, Any], *, scope: str = "") -> Decision:
        """`begin` for an async store."""
        if self._async_store is None:
            raise TypeError("this policy has a sync store: use begin()")
        request = self._read_request(headers, body, scope)
        transacting = False
        try:
            if request.follow_link:
                link = await self._async_store.resolve_link(request.follow_link)
                request = self._follow(request, link)
            if request.key is None:
                return self._without_session(request)
            transacting = True
            begun = await self._async_store.transact(request.key, self._begin_step(request))
        except StoreUnavailable as exc:
            if transacting and self.cap_micros is not None and not isinstance(exc, SessionBusy):
                key = request.key or ""
                release = self._arelease(self._async_store, key, request.reservation_id)
                task = asyncio.get_running_loop().create_task(release)
                self._releases.add(task)
                task.add_done_callback(self._releases.discard)
            return self._store_failed(request, exc)
        except LLMSessionsError:
            raise
        except Exception as exc:
            raise _store_fault(exc) from exc
        return self._decision(request, begun)

    def peek(self, headers: Any, body: Mapping[str, Any], *, scope: str = "") -> str:
        """The model this request would be routed to now, changing nothing (for token
        counting): the explicit model, else the session's pinned one, else the classified
        tier's primary. A store that can't be reached counts as no session."""
        if self._sync_store is None:
            raise TypeError("this policy has an async store: use apeek()")
        request = self._read_request(headers, body, scope)
        entry = None
        if request.explicit_model is None and request.key is not None:
            try:
                entry = self._sync_store.get_session(request.key)
            except StoreUnavailable:
                entry = None
        return self._peeked(request, entry)

    async def apeek(self, headers: Any, body: Mapping[str, Any], *, scope: str = "") -> str:
        """`peek` for an async store."""
        if self._async_store is None:
            raise TypeError("this policy has a sync store: use peek()")
        request = self._read_request(headers, body, scope)
        entry = None
        if request.explicit_model is None and request.key is not None:
            try:
                entry = await self._async_store.get_session(request.key)
            except StoreUnavailable:
                entry = None
        return self._peeked(request, entry)

    def _peeked(self, request: _Request, entry: Entry | None) -> str:
        if request.explicit_model is not None:
            return request.explicit_model
        if entry is not None and entry.model:
            return entry.model
        return self.tiers[request.tier].primary

    def finish(
        self,
        decision: Decision,
        *,
        served_model: str | None,
        usage: Any = None,
        cost_micros: int | None = None,
        output_bytes: int = 0,
        response_id: str | None = None,
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
        the session, for as long as it lives, so that requests continuing it join it.
        """
        if self._sync_store is None:
            raise TypeError("this policy has an async store: use afinish()")
        step = self._finish_prepare(decision, served_model, usage, cost_micros, output_bytes)
        if step is None:
            return decision.settled_total or 0
        store, key = self._sync_store, decision.key or ""
        links = self._links(decision, served_model, response_id)
        try:
            total = self._retrying(
                lambda: store.transact(key, step, busy_timeout_ms=math.inf, links=links)
            )
        except StoreUnavailable as exc:
            raise _unrecorded(exc) from exc
        return decision.settle(total)

    async def afinish(
        self,
        decision: Decision,
        *,
        served_model: str | None,
        usage: Any = None,
        cost_micros: int | None = None,
        output_bytes: int = 0,
        response_id: str | None = None,
    ) -> int:
        """`finish` for an async store."""
        if self._async_store is None:
            raise TypeError("this policy has a sync store: use finish()")
        step = self._finish_prepare(decision, served_model, usage, cost_micros, output_bytes)
        if step is None:
            return decision.settled_total or 0
        store, key = self._async_store, decision.key or ""
        links = self._links(decision, served_model, response_id)
        try:
            total = await self._aretrying(
                lambda: store.transact(key, step, busy_timeout_ms=math.inf, links=links)
            )
        except StoreUnavailable as exc:
            raise _unrecorded(exc) from exc
        return decision.settle(total)

    # -- retries of the store, for the writes that are safe to repeat ---------------------------

    def _retrying(self, call: Callable[[], T]) -> T:
        """`call()`, again after pauses while the store can't be reached, for up to
        `finish_retry_ms`; then its `StoreUnavailable`."""
        deadline = time.monotonic() + self.finish_retry_ms / 1000
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
                raise _store_fault(exc) from exc
            time.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
            pause = min(pause * 2, _FINISH_PAUSE_S[1])

    async def _aretrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """`_retrying` for an async store."""
        deadline = time.monotonic() + self.finish_retry_ms / 1000
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
                raise _store_fault(exc) from exc
            await asyncio.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
            pause = min(pause * 2, _FINISH_PAUSE_S[1])

    def _release(self, store: Store, key: str, reservation_id: str) -> None:
        """After a `begin` the store failed: its write may still have landed (a reply lost
        to a hung server), so remove its reservation if it is there, retrying."""
        step = _release_step(reservation_id)
        try:
            self._retrying(lambda: store.transact(key, step, busy_timeout_ms=math.inf))
        except LLMSessionsError as exc:
            log.warning("could not check a failed request's reservation: %s", exc)

    async def _arelease(self, store: AsyncStore, key: str, reservation_id: str) -> None:
        """`_release` for an async store."""
        step = _release_step(reservation_id)
        try:
            await self._aretrying(lambda: store.transact(key, step, busy_timeout_ms=math.inf))
        except LLMSessionsError as exc:
            log.warning("could not check a failed request's reservation: %s", exc)

    def _finish_prepare(
        self,
        decision: Decision,
        served_model: str | None,
        usage: Any,
        cost_micros: int | None,
        output_bytes: int,
    ) -> Transition[int] | None:
        """The finish step to run, or None when there is nothing to write (the decision was
        finished already, or has no session)."""
        if not isinstance(decision, Decision):
            raise InvalidRequest(f"decision must be a Decision, got {type(decision).__name__}")
        if served_model is not None and not isinstance(served_model, str):
            raise InvalidRequest(
                f"served_model must be a str or None, got {type(served_model).__name__}"
            )
        if decision.settled_total is not None:
            return None
        cost = self.charge_micros(decision, served_model, usage, cost_micros, output_bytes)
        if decision.key is None:
            decision.settle(0)
            return None
        return self._finish_step(decision, served_model, cost)

    def _links(
        self, decision: Decision, served_model: str | None, response_id: str | None
    ) -> dict[str, str] | None:
        """The links `finish` writes: the decision's, and the response's when it has a
        usable id, each to the session and the holder of the served model's state."""
        if served_model is None:
            return None
        names = list(decision.links)
        if _usable_id(response_id):
            assert response_id is not None
            names.append(link_name("response", response_id, decision.scope))
        if not names:
            return None
        holder = self.state_holder(served_model) if self.state_holder is not None else ""
        return dict.fromkeys(names, json.dumps([decision.key, holder]))

    def response_session(self, response_id: str, scope: str = "") -> tuple[str, str] | None:
        """``(session id, holder)`` of a response `finish` remembered for `scope`, or None.
        Renews it, like any use."""
        if self._sync_store is None:
            raise TypeError("this policy has an async store: use aresponse_session()")
        if not _usable_id(response_id):
            return None
        return _link_target(
            self._sync_store.resolve_link(link_name("response", response_id, scope))
        )

    async def aresponse_session(self, response_id: str, scope: str = "") -> tuple[str, str] | None:
        """`response_session` for an async store."""
        if self._async_store is None:
            raise TypeError("this policy has a sync store: use response_session()")
        if not _usable_id(response_id):
            return None
        name = link_name("response", response_id, scope)
        return _link_target(await self._async_store.resolve_link(name))

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
        if served_model is None:
            return 0
        try:
            if cost_micros is not None or _readable_usage(usage):
                return min(self.cost_micros(served_model, usage, cost_micros), MAX_COST_MICROS)
            if usage is not None:
                raise ValueError(f"no cost or token counts in {type(usage).__name__} usage")
        except (TypeError, ValueError, ArithmeticError) as exc:
            log.warning(
                "unreadable usage for %.256s, charging the estimate: %.256s", served_model, exc
            )
        if callable(output_bytes):
            try:
                output_bytes = output_bytes()
            except Exception as exc:
                log.warning("could not count the generated bytes: %.256s", exc)
                output_bytes = 0
        if isinstance(output_bytes, bool) or not isinstance(output_bytes, int):
            output_bytes = 0
        return self.estimate_micros(served_model, decision.prompt_tokens, max(output_bytes, 0))

    def estimate_micros(self, model: str, prompt_tokens: int, output_bytes: int) -> int:
        """The estimated cost of a call: the prompt estimate plus ceil(output bytes / 3)
        tokens of output, at `model`'s price (0 when unpriced)."""
        price = self.pricing.get(model)
        if price is None:
            return 0
        return min(price.cost_micros(prompt_tokens, -(-output_bytes // 3)), MAX_COST_MICROS)

    def cost_micros(
        self, served_model: str | None, usage: Any = None, cost_micros: int | None = None
    ) -> int:
        """What a call cost, in micro-USD: explicit, else usage's ``cost``, else priced usage."""
        if served_model is None:
            return 0
        if cost_micros is not None:
            if isinstance(cost_micros, bool) or not isinstance(cost_micros, int) or cost_micros < 0:
                raise ValueError(f"cost_micros must be an int >= 0, got {cost_micros!r}")
            return cost_micros
        if usage is None:
            return 0
        reported = usage_field(usage, "cost")
        if reported is not None:
            return usd_to_micros(reported, name="usage.cost")
        price = self.pricing.get(served_model)
        if price is None:
            return 0
        return price.usage_micros(token_usage(usage))

    def worst_case_micros(self, models: Sequence[str], prompt_tokens: int, max_output: int) -> int:
        """The most a request could cost on any of `models` (unpriced models cost 0)."""
        worst = 0
        for model in models:
            price = self.pricing.get(model)
            if price is not None:
                worst = max(worst, price.cost_micros(prompt_tokens, max_output))
        return worst

    @staticmethod
    def session_key(session_id: str, scope: str = "") -> str:
        """The store key of a session: its id in the caller's scope (`ids.session_key`: no
        two (scope, id) pairs share a key; an unscoped id without ':' or '%' is its key)."""
        return session_key(session_id, scope)

    def _store_failed(self, request: _Request, exc: StoreUnavailable) -> Decision:
        """`begin` when the store failed: route without a session where that is allowed."""
        if isinstance(exc, SessionBusy):
            raise exc
        capped = self.cap_micros is not None
        if (capped and self.on_store_error == "allow") or (not capped and self._store_fails_open):
            log.warning("session store unavailable, routing without a session: %s", exc)
            return self._without_session(request, "store_unavailable")
        raise exc

    def chain(self, tier: Tier) -> TierModels:
        """The models of `tier`, or of the nearest tier the table has."""
        return self.tiers[self._resolved[tier]]

    # -- reading the request ----------------------------------------------------------------

    def _read_request(self, headers: Any, body: Mapping[str, Any], scope: str) -> _Request:
        """The request as the rules see it. Anything wrong with it (or a classifier that
        fails on it) is `InvalidRequest`, or `InvalidSessionId` for the session header."""
        try:
            return self._read(headers, body, scope)
        except (InvalidRequest, InvalidSessionId):
            raise
        except RecursionError:
            raise InvalidRequest("the request is nested too deeply") from None
        except Exception as exc:
            raise InvalidRequest(f"the request can't be routed: {exc}") from exc

    def _read(self, headers: Any, body: Mapping[str, Any], scope: str) -> _Request:
        if not isinstance(scope, str):
            raise InvalidRequest(f"scope must be a str, got {type(scope).__name__}", "scope")
        if not is_mapping(body):
            raise InvalidRequest("the request body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("'messages' must be a non-empty array", "messages")
        roles: list[str] = []
        texts: list[str] = []
        sizes: list[int] = []
        extra = 0
        for i, message in enumerate(messages):  # one pass: every rule reads these
            role = message.get("role") if isinstance(message, dict) else None
            if not isinstance(role, str):
                raise InvalidRequest(
                    f"'messages[{i}]' must be an object with a string 'role'", f"messages[{i}]"
                )
            roles.append(role)
            content = message.get("content")
            text = content if type(content) is str else content_text(content)
            texts.append(text)
            sizes.append(utf8_len(text))
            if type(content) is list or "tool_calls" in message:
                extra += extra_prompt_bytes(message)
        model = body.get("model")
        if model is not None and (type(model) is not str or not _valid_model(model)):
            raise InvalidRequest(
                f"'model' must be a model id of 1 to {MAX_MODEL_ID_LENGTH} printable ASCII "
                "characters",
                "model",
            )
        tools = body.get("tools")
        if tools is not None and not isinstance(tools, list):
            raise InvalidRequest("'tools' must be an array", "tools")
        max_output = self.default_max_tokens
        given = [body.get(k) for k in ("max_tokens", "max_completion_tokens")]
        for name, value in zip(("max_tokens", "max_completion_tokens"), given, strict=True):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise InvalidRequest(f"'{name}' must be a positive integer", name)
        if any(v is not None for v in given):
            max_output = max(v for v in given if v is not None)
        choices = body.get("n")
        if choices is None:
            choices = 1
        elif isinstance(choices, bool) or not isinstance(choices, int) or choices < 1:
            raise InvalidRequest("'n' must be a positive integer", "n")

        explicit = model if model and model not in self.profiles else None
        if self.classify is default_classify:
            classified: Tier | None = classify_by_text(roles, texts, sizes, tools)
        else:
            classified = coerce_tier(self.classify(messages, tools))
        if classified is None:
            raise InvalidRequest("classify returned None; it must return a Tier")
        session_id, source = None, ""
        follow, names_session = "", False
        links_out: tuple[str, ...] = ()
        if self.config.enabled:
            previous = body_id(body, "previous_response_id")
            conversation = body_id(body, "conversation")
            sources = self.id_sources
            while session_id is None:
                try:
                    found = find_session_id(
                        {} if headers is None else headers, body, sources, self.config.header_name
                    )
                except TypeError as exc:
                    raise InvalidSessionId(str(exc)) from None
                if found is None:
                    break
                if found[1] == "previous_response_id":  # the session is the link's, if known
                    names_session = True
                    sources = sources[sources.index("previous_response_id") + 1 :]
                else:
                    session_id, source = found
            if session_id is None:
                first = next(
                    (t for r, t in zip(roles, texts, strict=True) if r == "user" and t), None
                )
                if first is None and names_session and previous is not None:
                    first = f"previous_response_id:{previous}"  # one new session per unknown id
                if first is not None:
                    session_id, source = derive_session_id(first, scope=scope), "derived"
            if previous is not None:
                follow = link_name("response", previous, scope)
            elif conversation is not None and body.get("store") is not False:
                follow = link_name("conversation", conversation, scope)
            if conversation is not None:
                links_out = (link_name("conversation", conversation, scope),)
        declared = declared_cache_ttls(messages)
        return _Request(
            session_id=session_id,
            key=None if session_id is None else session_key(session_id, scope),
            explicit_model=explicit,
            tier=self._resolved[classified],
            fingerprint=fingerprint_turn(messages, roles, texts),
            sticky=declared is not None or sticky_by_size(sizes),
            declared_ttl_ms=max(declared) if declared else 0,
            prompt_tokens=prompt_tokens_by_size(sum(sizes) + extra, tools),
            max_output_tokens=max_output,
            reservation_id=new_reservation_id(),
            choices=choices,
            source=source,
            scope=scope,
            follow_link=follow,
            link_names_session=names_session,
            links_out=links_out,
        )

    def _follow(self, request: _Request, link: str | None) -> _Request:
        """`request` once its link is looked up: bound to the models of the holder of the
        state it continues, and in the session of the response it continues when that
        named its session. An unknown (or unreadable) link changes nothing."""
        target = _parse_link(link)
        if target is None:
            return request
        key, holder = target
        bound = self._holds(holder) if self.state_holder is not None else None
        if request.link_names_session:
            return request._replace(
                session_id=split_key(key)[1], key=key, source="previous_response_id", bound=bound
            )
        return request._replace(bound=bound)

    def _holds(self, holder: str) -> frozenset[str]:
        """The models of the routing table whose state `holder` keeps."""
        held = self._held.get(holder)
        if held is None:
            assert self.state_holder is not None
            models = {m for tier in self.tiers.values() for m in tier.chain}
            held = frozenset(m for m in models if self.state_holder(m) == holder)
            self._held[holder] = held
        return held

    def _without_session(self, request: _Request, reason: str = "no_session") -> Decision:
        chain = self.chain(request.tier).chain
        model = request.explicit_model or chain[0]
        return Decision(
            session_id=None,
            model=model,
            tier=request.tier,
            fallbacks=[m for m in chain if m != model],
            reason=reason,
            strikes=0,
            session_cost_usd=0.0,
            reserved_micros=0,
            headers=response_headers(None, model, request.tier, reason, 0),
            fingerprint=request.fingerprint,
            prompt_tokens=request.prompt_tokens,
        )

    def _decision(self, request: _Request, begun: _Begun) -> Decision:
        if begun.refused_worst is not None:
            raise BudgetExceeded(
                request.session_id,
                begun.spent,
                begun.held,
                self.cap_micros or 0,
                begun.refused_worst,
                source=request.source,
                model=begun.model,
            )
        return Decision(
            session_id=request.session_id,
            model=begun.model,
            tier=begun.tier,
            fallbacks=begun.fallbacks,
            reason=begun.reason,
            strikes=begun.strikes,
            session_cost_usd=begun.spent / 1_000_000,
            reserved_micros=begun.reserved,
            headers=response_headers(
                request.session_id,
                begun.model,
                begun.tier,
                begun.reason,
                begun.spent,
                request.source,
            ),
            key=request.key,
            source=request.source,
            fingerprint=request.fingerprint,
            reservation_id=request.reservation_id,
            session_cost_micros=begun.spent,
            sticky_activated=begun.sticky_activated,
            prompt_tokens=request.prompt_tokens,
            scope=request.scope,
            links=request.links_out,
        )

    # -- the begin step: rules 2-7, applied to one session atomically ---------------------

    def _begin_step(self, request: _Request) -> Transition[_Begun]:
        def step(entry: Entry | None, now: int) -> tuple[Entry | None, _Begun]:
            return self._begin_rules(request, entry, now)

        return step

    def _begin_rules(
        self, req: _Request, entry: Entry | None, now: int
    ) -> tuple[Entry | None, _Begun]:
        pinned = entry is not None and entry.model != ""  # a cost-only entry has no pin
        flow = entry.flow if entry is not None else EMPTY_FLOW
        spent = entry.session_cost_micros if entry is not None else 0
        held = sum(r.micros for r in flow.reservations)
        explicit_session = req.explicit_model is not None or (
            entry is not None and entry.user_explicit
        )
        on_fallback = (
            pinned
            and bool(flow.fallback_from)
            and (req.explicit_model is None or req.explicit_model == flow.explicit_model)
        )
        stale_fallback = on_fallback and now - flow.fallback_at > self.fallback_pin_ms
        explicit_model = flow.explicit_model
        fallback_from, fallback_at = flow.fallback_from, flow.fallback_at

        # rules 2-4: the decision
        if req.explicit_model is not None and not on_fallback:
            model, tier, reason = req.explicit_model, req.tier, "explicit"
            explicit_model, fallback_from, fallback_at = model, "", 0
        elif entry is None or not pinned:
            tier = req.tier
            model, reason = self.tiers[tier].primary, "new"
        elif stale_fallback:
            model, reason = fallback_from, "primary_retry"
            tier = req.tier if explicit_session else self._resolved[entry.tier or req.tier]
            fallback_from, fallback_at = "", 0
        elif explicit_session:
            model, tier, reason = entry.model, req.tier, "explicit"
        elif rules.is_cache_sticky(entry, now, self.config):
            model, tier, reason = (
                entry.model,
                self._resolved[entry.tier or req.tier],
                "cache_sticky",
            )
        elif tier_rank(req.tier) > tier_rank(entry.tier):
            tier = req.tier
            model, reason = self.tiers[tier].primary, "upgraded"
            fallback_from, fallback_at = "", 0
        else:
            model, tier, reason = entry.model, self._resolved[entry.tier or req.tier], "pinned"

        record = rules.set_session(
            None if entry is None else list(entry), now, model, tier, req.explicit_model is not None
        )
        if not explicit_session:
            record[TIER] = tier

        # rule 5: loop detection (a retry of a failed attempt is not a strike)
        retry = bool(flow.failed_fingerprint) and flow.failed_fingerprint == req.fingerprint
        strikes = record[STRIKES] if retry else rules.record_request_hash(record, req.fingerprint)
        before_escalation = list(record)
        if strikes >= STRIKE_LIMIT and not record[USER_EXPLICIT] and self._escalate(record):
            model, tier, reason = record[MODEL], record[TIER], "escalated"
            fallback_from, fallback_at = "", 0

        # a chain of stored responses: only models of the state's holder can continue it
        bound = req.bound if not explicit_session else None
        if bound is not None and model not in bound:
            within = self.tiers[tier].primary_in(bound)
            if within:  # the tier's model on that holder
                model = record[MODEL] = within
            elif entry is not None and entry.model in bound:  # no move: the pin stays
                if reason == "escalated":
                    record = before_escalation
                model, reason = entry.model, "chain_bound"
                tier = self._resolved[entry.tier or req.tier]
                record[MODEL], record[TIER] = entry.model, entry.tier
                fallback_from, fallback_at = flow.fallback_from, flow.fallback_at
            else:  # nothing pinned there: the holder's model of the nearest tier
                near = sorted(self.tiers, key=lambda t: (abs(t.rank - tier.rank), -t.rank))
                found = next((t for t in near if self.tiers[t].primary_in(bound)), None)
                if found is not None:
                    tier, reason = found, "chain_bound"
                    model = record[MODEL] = self.tiers[found].primary_in(bound)
                    record[TIER] = tier

        # rule 6: cache stickiness
        sticky_ttl = req.declared_ttl_ms or flow.sticky_ttl_ms
        if req.sticky:
            rules.set_cache_sticky(record, now, provider_from_model(model))

        # rule 7: the budget, checked on the final decision before anything is kept
        fallbacks = [
            m for m in self.tiers[tier].chain if m != model and (bound is None or m in bound)
        ]
        reserved = 0
        if self.cap_micros is not None:
            reserved = req.choices * self.worst_case_micros(
                [model, *fallbacks], req.prompt_tokens, req.max_output_tokens
            )
            if spent + held + reserved > self.cap_micros:
                downgrade = self._downgrade(req, explicit_session, spent + held, bound)
                if downgrade is None:
                    refused = _Begun(model, tier, reason, strikes, spent, held, 0, reserved, [])
                    return entry, refused
                # the pin is not moved and nothing escalates; the request goes to SIMPLE
                model, fallbacks, reserved = downgrade
                tier, reason = Tier.SIMPLE, "budget_downgrade"
                record = before_escalation
                if entry is not None:
                    record[MODEL], record[TIER] = entry.model, entry.tier
                fallback_from, fallback_at = flow.fallback_from, flow.fallback_at
                sticky_ttl = flow.sticky_ttl_ms

        reservations = flow.reservations
        if reserved:
            expires = now + self.reservation_ttl_ms
            reservations = (*reservations, Reservation(req.reservation_id, reserved, expires))
        new_flow = FlowState(
            reservations, explicit_model, fallback_from, fallback_at, sticky_ttl, "", flow.finished
        )
        activated = bool(record[CACHE_STICKY]) and not (entry is not None and entry.cache_sticky)
        begun = _Begun(
            model, tier, reason, strikes, spent, held, reserved, None, fallbacks, activated
        )
        return entry_of(record, new_flow), begun

    def _escalate(self, record: Record) -> bool:
        """Rule 5's escalation, to the next tier the table has (rules.escalate_session, as
        many steps as it takes to skip tiers the table lacks). False at the top."""
        rank = tier_rank(record[TIER])
        target = next((t for t in Tier if t.rank > rank and t in self.tiers), None)
        if target is None:
            return False
        while rules.escalate_session(record, self._primaries) not in (target, None):
            pass
        return True

    def _downgrade(
        self, req: _Request, explicit_session: bool, committed: int, bound: frozenset[str] | None
    ) -> tuple[str, list[str], int] | None:
        """Rule 7's downgrade: SIMPLE's primary and fallbacks (those of a chain's holder),
        if their worst case fits."""
        if self.budget_mode != "downgrade" or explicit_session or Tier.SIMPLE not in self.tiers:
            return None
        chain = [m for m in self.tiers[Tier.SIMPLE].chain if bound is None or m in bound]
        worst = req.choices * self.worst_case_micros(
            chain, req.prompt_tokens, req.max_output_tokens
        )
        if not chain or self.cap_micros is None or committed + worst > self.cap_micros:
            return None
        return chain[0], chain[1:], worst

    # -- the finish step: rule 8 -----------------------------------------------------------

    def _finish_step(
        self, decision: Decision, served_model: str | None, cost: int
    ) -> Transition[int]:
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


_USAGE_FIELDS = ("cost", "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens")


def _readable_usage(usage: Any) -> bool:
    """`usage` carries a cost or token counts (a mapping, or an object with attributes)."""
    if type(usage) is dict:
        return not usage.keys().isdisjoint(_USAGE_FIELDS)
    if usage is None:
        return False
    return any(usage_field(usage, name) is not None for name in _USAGE_FIELDS)


def _release_step(reservation_id: str) -> Transition[None]:
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


_LINKABLE_ID = re.compile(r"[\x21-\x7e]{1,256}")


def _usable_id(value: object) -> bool:
    return isinstance(value, str) and _LINKABLE_ID.fullmatch(value) is not None


def link_name(kind: str, ident: str, scope: str) -> str:
    """The store's name for a link: a response's or a conversation's id, in `scope`."""
    return session_key(f"{kind}:{ident}", scope)


def _parse_link(link: str | None) -> tuple[str, str] | None:
    """``(session key, holder)`` of a link's value; None for none (or an unreadable one)."""
    try:
        key, holder = json.loads(link) if link is not None else (None, None)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, str) or not isinstance(holder, str):
        return None
    return key, holder


def _link_target(link: str | None) -> tuple[str, str] | None:
    """``(session id, holder)`` of a link's value; None for none (or an unreadable one)."""
    target = _parse_link(link)
    return None if target is None else (split_key(target[0])[1], target[1])


def _valid_model(model: str) -> bool:
    """ "" (no model: the first profile) or 1 to 256 printable ASCII characters."""
    return not model or _MODEL_ID.fullmatch(model) is not None


def _store_fault(exc: Exception) -> StoreUnavailable:
    """What leaves `begin`/`finish` for an error of the store that is not one of ours."""
    log.error("session store failed: %r", exc)
    return StoreUnavailable(f"the session store failed: {type(exc).__name__}: {exc}")


def _unrecorded(exc: StoreUnavailable) -> StoreUnavailable:
    return StoreUnavailable(f"the request's cost could not be recorded: {exc}")
