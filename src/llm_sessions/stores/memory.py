"""In-memory stores: `SessionStore` and its asyncio twin `AsyncSessionStore`.

Sessions live as mutable records (see `rules`) in an `OrderedDict` kept in the order
of their ``last_used_at`` (every write that sets it moves the record to the end), so the
least recently used session is always first: eviction at ``max_sessions`` is O(1), and
expiry walks only what has expired, in small batches that release the lock between
them. Each scope's keys are also indexed, so listing a scope costs what it holds. The
clock is assumed not to go backwards (the default one never does).

Links (a name leading to a session, e.g. a response id) live beside the sessions, each
with its session, bounded in bytes and fair across tenants (see `memory_links`); so do
the sessions' event logs, bounded in bytes too (see `memory_events`).
"""

from __future__ import annotations

import asyncio
import heapq
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from types import TracebackType
from typing import TypeVar

from .. import rules
from ..clock import Clock, monotonic_wall_clock
from ..config import Config
from ..ids import escape_scope, key_scope, split_key
from ..records import Entry, SessionInfo, SessionPage, SessionRow, Stats
from ..rules import (
    COST,
    CREATED_AT,
    FLOW,
    LAST_USED_AT,
    MAX_COST_MICROS,
    MODEL,
    REQUEST_COUNT,
    STRIKES,
    TIER,
    Record,
)
from ..tiers import Tier, coerce_tier
from .base import (
    EventOf,
    Transition,
    check_bool,
    check_cursor,
    check_event,
    check_id,
    check_limit,
    check_links,
    check_micros,
    check_models,
    check_str,
)
from .memory_events import DEFAULT_EVENT_BYTES, MemoryEvents
from .memory_links import DEFAULT_LINK_BYTES, MemoryLinks

__all__ = ["AsyncSessionStore", "SessionStore"]

T = TypeVar("T")
_SWEEP_BATCH = 256  # expired entries removed per lock hold
_OPPORTUNISTIC_SWEEP = 4  # expired entries removed by each new session
_LIST_BATCH = 4096  # keys looked at between two hand-overs of the GIL when listing
_new_tuple = tuple.__new__


class SessionStore:
    """Thread-safe in-memory session store (the reference's ``Store``).

    `clock` returns unix milliseconds; by default the wall clock read once, then advanced
    monotonically. `link_bytes` bounds the memory its links hold (see `memory_links`),
    `event_bytes` that of its sessions' event logs (see `memory_events`).
    Every method is atomic with respect to the others, and reads return immutable
    snapshots. See the README for the numbered rules each method follows.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        clock: Clock | None = None,
        link_bytes: int = DEFAULT_LINK_BYTES,
        event_bytes: int = DEFAULT_EVENT_BYTES,
    ) -> None:
        self._config = Config() if config is None else config
        if not isinstance(self._config, Config):
            raise TypeError(f"config must be a Config, got {type(self._config).__name__}")
        self._clock: Clock = monotonic_wall_clock() if clock is None else clock
        self._enabled = self._config.enabled
        self._timeout = self._config.timeout_ms
        self._max = self._config.max_sessions
        self._entries: OrderedDict[str, Record] = OrderedDict()
        # every scoped key, by the escaped scope half of it (`ids.key_scope`): kept exactly
        # in step with `_entries` by `_insert` and `_drop`, the only ways keys come and go.
        # Unscoped keys are not indexed: without tenants they are all the sessions there
        # are, and they cost no memory here.
        self._scopes: dict[str, set[str]] = {}
        if isinstance(link_bytes, bool) or not isinstance(link_bytes, int) or link_bytes < 0:
            raise ValueError(f"link_bytes must be an int >= 0, got {link_bytes!r}")
        self._links = MemoryLinks(link_bytes)
        if isinstance(event_bytes, bool) or not isinstance(event_bytes, int) or event_bytes < 0:
            raise ValueError(f"event_bytes must be an int >= 0, got {event_bytes!r}")
        self._events = MemoryEvents(self._config.events_kept, event_bytes)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._enabled and self._config.cleanup_interval_ms > 0:
            self._thread = threading.Thread(
                target=_cleanup_loop,
                args=(weakref.ref(self), self._stop, self._config.cleanup_interval_ms / 1000),
                name="llm-sessions-cleanup",
                daemon=True,
            )
            self._thread.start()

    @property
    def config(self) -> Config:
        return self._config

    # -- internals (call with the lock held) ---------------------------------------------

    def _live(self, session_id: str, now: int) -> Record | None:
        record = self._entries.get(session_id)
        if record is not None and now - record[LAST_USED_AT] > self._timeout:
            self._drop(session_id)
            return None
        return record

    def _insert(self, session_id: str, record: Record, now: int) -> None:
        """Add a session (replacing an expired one), evicting the least recent at the bound."""
        entries = self._entries
        if session_id in entries:
            self._drop(session_id)
        if len(entries) >= self._max:
            self._sweep_front(now, _OPPORTUNISTIC_SWEEP)
            while len(entries) >= self._max:
                self._drop(next(iter(entries)))  # least recently used
        entries[session_id] = record
        scope = key_scope(session_id)
        if scope:
            self._scopes.setdefault(scope, set()).add(session_id)

    def _drop(self, session_id: str) -> None:
        """Remove a session that is there, its index entry, its links and its events."""
        del self._entries[session_id]
        self._links.drop_session(session_id)
        self._events.drop(session_id)
        scope = key_scope(session_id)
        if scope:
            keys = self._scopes[scope]
            keys.discard(session_id)
            if not keys:
                del self._scopes[scope]

    def _sweep_front(self, now: int, limit: int) -> int:
        entries, timeout, removed = self._entries, self._timeout, 0
        while removed < limit and entries:
            _, record = next(iter(entries.items()))
            if now - record[LAST_USED_AT] <= timeout:
                break
            self._drop(next(iter(entries)))
            removed += 1
        return removed

    # -- reads ---------------------------------------------------------------------------

    def get_session(self, session_id: str) -> Entry | None:
        """The live session's snapshot, or None (rule 2: expired sessions are never seen)."""
        if not isinstance(session_id, str):
            check_id(session_id)
        if not self._enabled or not session_id:
            return None
        with self._lock:
            now = self._clock()
            record = self._entries.get(session_id)
            if record is None:
                return None
            if now - record[LAST_USED_AT] > self._timeout:
                self._drop(session_id)
                return None
            if not record[FLOW].reservations:
                return _new_tuple(Entry, record)
            return rules.snapshot(record, now)

    def get_session_cost_micros(self, session_id: str) -> int:
        """The session's cost in micro-USD, 0 when there is no live session."""
        check_id(session_id)
        if not self._enabled or not session_id:
            return 0
        with self._lock:
            record = self._live(session_id, self._clock())
            return 0 if record is None else int(record[COST])

    def get_session_cost_usd(self, session_id: str) -> float:
        """The session's cost in USD."""
        return self.get_session_cost_micros(session_id) / 1_000_000

    def is_cache_sticky(self, session_id: str) -> bool:
        """True while the session's cache-sticky pin is within its prefix-cache TTL."""
        check_id(session_id)
        if not self._enabled or not session_id:
            return False
        with self._lock:
            now = self._clock()
            return rules.is_cache_sticky(self._live(session_id, now), now, self._config)

    def get_stats(self, limit: int | None = None) -> Stats:
        """Live session count, and up to `limit` sessions sorted by id (ids cut to 8 chars).

        Copies the index under the lock (one C-level pass) and does the rest outside it.
        """
        limit = check_limit(limit)
        with self._lock:
            now = self._clock()
            items = [
                (sid, r[MODEL], r[CREATED_AT], r[LAST_USED_AT]) for sid, r in self._entries.items()
            ]
        timeout = self._timeout
        live = [item for item in items if now - item[3] <= timeout]
        chosen = sorted(live) if limit is None else heapq.nsmallest(limit, live)
        sessions = [
            SessionInfo(rules.cut_id(sid), model, (now - created) // 1000)
            for sid, model, created, _ in chosen
        ]
        return Stats(len(live), sessions)

    def ping(self) -> bool:
        """Always True: memory is always reachable."""
        return True

    # -- writes --------------------------------------------------------------------------

    def set_session(
        self,
        session_id: str,
        model: str,
        tier: Tier | str | None = None,
        user_explicit: bool = False,
    ) -> None:
        """Pin `model` to the session, creating it or counting one more request (rule 3)."""
        if not isinstance(session_id, str):
            check_id(session_id)
        if not isinstance(model, str):
            check_str("model", model)
        if type(tier) is not Tier:
            tier = coerce_tier(tier)
        if user_explicit is not True and user_explicit is not False:
            check_bool("user_explicit", user_explicit)
        if not self._enabled or not session_id:
            return
        with self._lock:
            now = self._clock()
            record = self._entries.get(session_id)
            if record is None or now - record[LAST_USED_AT] > self._timeout:
                self._insert(session_id, rules.new_record(now, model, tier, user_explicit, 1), now)
            else:
                rules.set_session(record, now, model, tier, user_explicit)
                self._entries.move_to_end(session_id)

    def touch_session(self, session_id: str) -> None:
        """Extend an existing session's timeout and count one more request (rule 4)."""
        if not isinstance(session_id, str):
            check_id(session_id)
        if not self._enabled or not session_id:
            return
        with self._lock:
            now = self._clock()
            record = self._live(session_id, now)
            if record is not None:
                rules.touch_session(record, now)
                self._entries.move_to_end(session_id)

    def record_request_hash(self, session_id: str, request_hash: str) -> int:
        """Record a request fingerprint; returns the strike count (rule 5)."""
        if not isinstance(session_id, str):
            check_id(session_id)
        if not isinstance(request_hash, str):
            check_str("request_hash", request_hash)
        if not self._enabled or not session_id:
            return 0
        with self._lock:
            return rules.record_request_hash(self._live(session_id, self._clock()), request_hash)

    def escalate_session(
        self, session_id: str, models: Mapping[Tier, str] | Mapping[str, str] | None = None
    ) -> Tier | None:
        """Move the session one tier up; returns the new tier or None (rule 6)."""
        check_id(session_id)
        by_tier = check_models(models)
        if not self._enabled or not session_id:
            return None
        with self._lock:
            return rules.escalate_session(self._live(session_id, self._clock()), by_tier)

    def add_session_cost(self, session_id: str, micros: int) -> int:
        """Add `micros` to the session's cost; returns the new total (rule 7)."""
        if not isinstance(session_id, str):
            check_id(session_id)
        if type(micros) is not int or not 0 <= micros <= MAX_COST_MICROS:
            micros = check_micros(micros)
        if not self._enabled or not session_id:
            return 0
        with self._lock:
            now = self._clock()
            record = self._live(session_id, now)
            if record is None:
                record = rules.add_session_cost(None, now, micros)
                self._insert(session_id, record, now)
            else:
                rules.add_session_cost(record, now, micros)
            return int(record[COST])

    def set_cache_sticky(self, session_id: str, provider: str) -> None:
        """Pin an existing session for `provider`'s prefix cache; the first call wins (rule 8)."""
        check_id(session_id)
        check_str("provider", provider)
        if not self._enabled or not session_id:
            return
        with self._lock:
            now = self._clock()
            rules.set_cache_sticky(self._live(session_id, now), now, provider)

    def transact(
        self,
        session_id: str,
        fn: Transition[T],
        *,
        busy_timeout_ms: float | None = None,
        links: Mapping[str, str] | None = None,
        event: EventOf | None = None,
    ) -> T:
        """Apply `fn(live entry or None, now) -> (new entry, result)` atomically; return result.

        Returning the entry unchanged writes nothing. On a disabled store or an empty id,
        `fn` sees None and nothing is written. `links` (name -> value) are written in the
        same step when it writes a session (not when it deletes one), each living the
        session timeout from now (see `resolve_link`). `event(old, new, result, now)` gives the
        text appended to the session's event log in the same step (None: nothing), also
        when `fn` changed nothing else; a new session starts a new log, a deleted one
        takes its log with it. `busy_timeout_ms` is accepted for the Redis stores' sake:
        here a transaction only ever waits for the store's lock.
        """
        check_id(session_id)
        check_links(links)
        check_event(event)
        if not self._enabled or not session_id:
            return fn(None, self._clock())[1]
        kept = self._config.events_kept
        with self._lock:
            now = self._clock()
            record = self._live(session_id, now)
            old = None if record is None else rules.snapshot(record, now)
            new, result = fn(old, now)
            text = (
                None if event is None or new is None or not kept else event(old, new, result, now)
            )
            if new is old:
                if text is not None:
                    self._events.append(session_id, text)
                return result
            if new is None:
                self._drop(session_id)
                return result
            if record is None:
                self._insert(session_id, list(new), now)
            else:
                record[:] = new
                if new.last_used_at != old.last_used_at:  # type: ignore[union-attr]
                    self._entries.move_to_end(session_id)
            if links:
                self._links.write(session_id, links, now + self._timeout)
            if text is not None:
                self._events.append(session_id, text)
        return result

    def get_events(self, session_id: str) -> list[str]:
        """The live session's event log (what `transact`'s `event` gave), oldest first;
        empty when there is no such session."""
        check_id(session_id)
        if not self._enabled:
            return []
        with self._lock:
            if self._live(session_id, self._clock()) is None:
                return []
            return self._events.read(session_id)

    def resolve_link(self, name: str) -> str | None:
        """The value of the link `name` (written by `transact`); None when there is none or
        it expired. A link lives the session timeout from its last write, so never longer
        than the session it was written with: a use does not renew it."""
        check_id(name)
        if not self._enabled:
            return None
        with self._lock:
            now = self._clock()
            found = self._links.read(name, now)
            if found is None:
                return None
            if self._live(found[1], now) is None:  # its session expired: so did the link
                return None
            return found[0]

    def list_sessions(
        self, scope: str | None = "", *, limit: int = 100, cursor: str = ""
    ) -> SessionPage:
        """One page of `scope`'s live sessions (every scope's with None), in key order
        after `cursor`. A scope's keys come from its index (the unscoped ones, and every
        one, from the store itself), copied under the lock and looked at outside it in
        batches, so a listing never holds up other callers for long, and a tenant's costs
        what it holds."""
        limit = check_cursor(scope, limit, cursor)
        wanted = None if scope is None else escape_scope(scope)
        with self._lock:  # C-speed copies; the selection below runs unlocked
            # a tenant's index; else every key (the unscoped: those without a raw ":")
            keys = list(self._scopes.get(wanted, ())) if wanted else list(self._entries)
        chosen: list[str] = []
        for start in range(0, len(keys), _LIST_BATCH):
            batch = [key for key in keys[start : start + _LIST_BATCH] if key > cursor]
            if wanted == "":
                batch = [key for key in batch if ":" not in key]
            if batch:
                chosen = heapq.nsmallest(limit + 1, chosen + batch)
            time.sleep(0)  # hand the GIL over between batches
        rows: list[SessionRow] = []
        with self._lock:
            now = self._clock()
            for key in chosen[:limit]:
                record = self._entries.get(key)
                if record is None or now - record[LAST_USED_AT] > self._timeout:
                    continue
                owner, session_id = split_key(key)
                age = (now - record[CREATED_AT]) // 1000
                row = SessionRow(
                    session_id, owner, record[MODEL], age, record[REQUEST_COUNT],
                    record[COST], record[TIER], record[STRIKES], record[LAST_USED_AT],
                )  # fmt: skip
                rows.append(row)
        more = len(chosen) > limit
        return SessionPage(rows, chosen[limit - 1] if more else "")

    def clear_session(self, session_id: str) -> None:
        """Remove one session."""
        check_id(session_id)
        with self._lock:
            if session_id in self._entries:
                self._drop(session_id)

    def clear_all(self) -> None:
        """Remove every session."""
        with self._lock:
            self._entries.clear()
            self._scopes.clear()
            self._links.clear()
            self._events.clear()

    def expire(self) -> int:
        """Remove expired sessions now, in batches; returns how many were removed.

        The background thread calls this every ``cleanup_interval_ms``; each lock hold
        removes at most a small batch, so readers never wait for a full sweep.
        """
        removed = 0
        while True:
            with self._lock:
                now = self._clock()
                n = self._sweep_front(now, _SWEEP_BATCH)
                n += self._links.sweep(now, _SWEEP_BATCH - n)
            removed += n
            if n < _SWEEP_BATCH:
                return removed
            time.sleep(0)  # hand the GIL to waiting threads between batches

    def __len__(self) -> int:
        """Records held, expired ones not yet swept included."""
        return len(self._entries)

    def close(self) -> None:
        """Stop the background cleanup thread. Idempotent."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _cleanup_loop(ref: weakref.ref[SessionStore], stop: threading.Event, interval: float) -> None:
    # Holds only a weak reference, so a store that is dropped without close() is freed.
    while not stop.wait(interval):
        store = ref()
        if store is None:
            return
        store.expire()
        del store


class AsyncSessionStore:
    """The in-memory store with ``async def`` methods: the same object underneath, called
    directly (no thread hops; its lock is only ever held for microseconds)."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        clock: Clock | None = None,
        link_bytes: int = DEFAULT_LINK_BYTES,
        event_bytes: int = DEFAULT_EVENT_BYTES,
    ) -> None:
        self._sync = SessionStore(
            config, clock=clock, link_bytes=link_bytes, event_bytes=event_bytes
        )

    @property
    def config(self) -> Config:
        return self._sync.config

    async def get_session(self, session_id: str) -> Entry | None:
        return self._sync.get_session(session_id)

    async def set_session(
        self,
        session_id: str,
        model: str,
        tier: Tier | str | None = None,
        user_explicit: bool = False,
    ) -> None:
        self._sync.set_session(session_id, model, tier, user_explicit)

    async def touch_session(self, session_id: str) -> None:
        self._sync.touch_session(session_id)

    async def clear_session(self, session_id: str) -> None:
        self._sync.clear_session(session_id)

    async def clear_all(self) -> None:
        self._sync.clear_all()

    async def get_stats(self, limit: int | None = None) -> Stats:
        return self._sync.get_stats(limit)

    async def record_request_hash(self, session_id: str, request_hash: str) -> int:
        return self._sync.record_request_hash(session_id, request_hash)

    async def escalate_session(
        self, session_id: str, models: Mapping[Tier, str] | Mapping[str, str] | None = None
    ) -> Tier | None:
        return self._sync.escalate_session(session_id, models)

    async def add_session_cost(self, session_id: str, micros: int) -> int:
        return self._sync.add_session_cost(session_id, micros)

    async def get_session_cost_usd(self, session_id: str) -> float:
        return self._sync.get_session_cost_usd(session_id)

    async def get_session_cost_micros(self, session_id: str) -> int:
        return self._sync.get_session_cost_micros(session_id)

    async def set_cache_sticky(self, session_id: str, provider: str) -> None:
        self._sync.set_cache_sticky(session_id, provider)

    async def is_cache_sticky(self, session_id: str) -> bool:
        return self._sync.is_cache_sticky(session_id)

    async def transact(
        self,
        session_id: str,
        fn: Transition[T],
        *,
        busy_timeout_ms: float | None = None,
        links: Mapping[str, str] | None = None,
        event: EventOf | None = None,
    ) -> T:
        return self._sync.transact(session_id, fn, links=links, event=event)

    async def get_events(self, session_id: str) -> list[str]:
        return self._sync.get_events(session_id)

    async def resolve_link(self, name: str) -> str | None:
        return self._sync.resolve_link(name)

    async def list_sessions(
        self, scope: str | None = "", *, limit: int = 100, cursor: str = ""
    ) -> SessionPage:
        """`SessionStore.list_sessions`, run in a worker thread off the event loop."""
        return await asyncio.to_thread(self._sync.list_sessions, scope, limit=limit, cursor=cursor)

    async def ping(self) -> bool:
        return True

    def expire(self) -> int:
        return self._sync.expire()

    async def aclose(self) -> None:
        self._sync.close()

    async def __aenter__(self) -> AsyncSessionStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
