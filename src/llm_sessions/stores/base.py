"""What every store offers, and the argument checks they share.

Four stores implement the same methods with the same results: `SessionStore` (memory)
and `RedisSessionStore` synchronously, `AsyncSessionStore` and `AsyncRedisSessionStore`
with ``async def`` methods. Arguments are checked before anything else, the same way
in all four.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

from ..config import Config
from ..records import Entry, SessionPage, Stats
from ..rules import MAX_COST_MICROS
from ..tiers import Tier, coerce_tier

__all__ = [
    "AsyncStore",
    "EventOf",
    "Store",
    "Transition",
    "check_bool",
    "check_id",
    "check_cursor",
    "check_event",
    "check_limit",
    "check_links",
    "check_micros",
    "check_models",
    "check_str",
]

T = TypeVar("T")

#: A pure function of (live entry or None, now in unix ms) -> (new entry, result). Returning
#: the entry it was given means "no write"; it may be called more than once (Redis retries
#: it when the session changed between its read and its write).
Transition = Callable[[Entry | None, int], tuple[Entry | None, T]]

#: What a transaction leaves in its session's event log: a pure function of (the entry
#: `fn` was given, the entry it returned, its result, now in unix ms) -> the event's text
#: (JSON by convention), or None for none. It runs after each `fn` call, so it may run
#: more than once too; the text of the attempt that lands is appended in the same write.
EventOf = Callable[[Entry | None, Entry | None, Any, int], str | None]


@runtime_checkable
class Store(Protocol):
    """A synchronous session store."""

    @property
    def config(self) -> Config: ...
    def get_session(self, session_id: str) -> Entry | None: ...
    def set_session(
        self,
        session_id: str,
        model: str,
        tier: Tier | str | None = None,
        user_explicit: bool = False,
    ) -> None: ...
    def touch_session(self, session_id: str) -> None: ...
    def clear_session(self, session_id: str) -> None: ...
    def clear_all(self) -> None: ...
    def get_stats(self, limit: int | None = None) -> Stats: ...
    def record_request_hash(self, session_id: str, request_hash: str) -> int: ...
    def escalate_session(
        self, session_id: str, models: Mapping[Tier, str] | Mapping[str, str] | None = None
    ) -> Tier | None: ...
    def add_session_cost(self, session_id: str, micros: int) -> int: ...
    def get_session_cost_usd(self, session_id: str) -> float: ...
    def get_session_cost_micros(self, session_id: str) -> int: ...
    def set_cache_sticky(self, session_id: str, provider: str) -> None: ...
    def is_cache_sticky(self, session_id: str) -> bool: ...
    def transact(
        self,
        session_id: str,
        fn: Transition[T],
        *,
        busy_timeout_ms: float | None = None,
        links: Mapping[str, str] | None = None,
        event: EventOf | None = None,
    ) -> T: ...
    def get_events(self, session_id: str) -> list[str]: ...
    def resolve_link(self, name: str) -> str | None: ...
    def list_sessions(
        self, scope: str | None = "", *, limit: int = 100, cursor: str = ""
    ) -> SessionPage: ...
    def ping(self) -> bool: ...
    def close(self) -> None: ...


@runtime_checkable
class AsyncStore(Protocol):
    """An asyncio session store: the methods of `Store`, as coroutines."""

    @property
    def config(self) -> Config: ...
    async def get_session(self, session_id: str) -> Entry | None: ...
    async def set_session(
        self,
        session_id: str,
        model: str,
        tier: Tier | str | None = None,
        user_explicit: bool = False,
    ) -> None: ...
    async def touch_session(self, session_id: str) -> None: ...
    async def clear_session(self, session_id: str) -> None: ...
    async def clear_all(self) -> None: ...
    async def get_stats(self, limit: int | None = None) -> Stats: ...
    async def record_request_hash(self, session_id: str, request_hash: str) -> int: ...
    async def escalate_session(
        self, session_id: str, models: Mapping[Tier, str] | Mapping[str, str] | None = None
    ) -> Tier | None: ...
    async def add_session_cost(self, session_id: str, micros: int) -> int: ...
    async def get_session_cost_usd(self, session_id: str) -> float: ...
    async def get_session_cost_micros(self, session_id: str) -> int: ...
    async def set_cache_sticky(self, session_id: str, provider: str) -> None: ...
    async def is_cache_sticky(self, session_id: str) -> bool: ...
    async def transact(
        self,
        session_id: str,
        fn: Transition[T],
        *,
        busy_timeout_ms: float | None = None,
        links: Mapping[str, str] | None = None,
        event: EventOf | None = None,
    ) -> T: ...
    async def get_events(self, session_id: str) -> list[str]: ...
    async def resolve_link(self, name: str) -> str | None: ...
    async def list_sessions(
        self, scope: str | None = "", *, limit: int = 100, cursor: str = ""
    ) -> SessionPage: ...
    async def ping(self) -> bool: ...
    async def aclose(self) -> None: ...


def check_id(session_id: object) -> None:
    if not isinstance(session_id, str):
        raise TypeError(f"session_id must be a str, got {type(session_id).__name__}")


def check_links(links: object) -> None:
    """`transact`'s links: None or a mapping of str names to str values."""
    if links is None:
        return
    if not isinstance(links, Mapping):
        raise TypeError(f"links must be a mapping of str to str, got {type(links).__name__}")
    for name, value in links.items():
        check_id(name)
        check_str("a link's value", value)


def check_event(event: object) -> None:
    """`transact`'s event: None or a callable."""
    if event is not None and not callable(event):
        raise TypeError(f"event must be a callable or None, got {type(event).__name__}")


def check_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")


def check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def check_micros(micros: object) -> int:
    if isinstance(micros, bool) or not isinstance(micros, int):
        raise TypeError(f"micros must be an int of micro-USD, got {type(micros).__name__}")
    if micros < 0 or micros > MAX_COST_MICROS:
        raise ValueError(f"micros must be between 0 and {MAX_COST_MICROS}, got {micros}")
    return int(micros)


def check_limit(limit: object) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int or None, got {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return int(limit)


def check_cursor(scope: object, limit: object, cursor: object) -> int:
    """`list_sessions`' arguments checked; returns the limit."""
    if scope is not None:
        check_str("scope", scope)
    check_str("cursor", cursor)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an int >= 1, got {limit!r}")
    return limit


def check_models(models: object) -> dict[Tier, str] | None:
    """`models` as ``{Tier: model}``; keys may be tiers or their exact string values."""
    if models is None:
        return None
    if not isinstance(models, Mapping):
        raise TypeError(f"models must be a mapping of tier -> model, got {type(models).__name__}")
    out: dict[Tier, str] = {}
    for key, model in models.items():
        tier = coerce_tier(key)
        if tier is None:
            raise ValueError("models keys must be tiers, got None")
        check_str(f"models[{key!r}]", model)
        out[tier] = model
    return out
