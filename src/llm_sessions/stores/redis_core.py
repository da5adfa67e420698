"""The Redis stores' logic, with no I/O: every store method as a generator of commands.

Each method of `RedisOps` checks its arguments, then yields the commands it needs (a
read, a script, a scan step...) and receives their replies, and returns the method's
result. `RedisSessionStore` and `AsyncRedisSessionStore` only run these generators, one
synchronously and one with ``await``; neither holds any rule of its own.

Layout: one hash per session under ``key_prefix + tag + ":{" + blake2b(key) + "}"``, where
the tag is a digest of the key's scope half (see `ids.session_key`), so one SCAN MATCH
selects a scope's sessions; a raw id never becomes a key. The braces are a Redis Cluster
hash tag: whatever keys a session ever has share its slot, so no script spans two.
Fields: the `Entry` fields (``cost`` for the session cost, ``h1``..``h3`` for the hash
window), the flow state when set, ``id`` and the record version ``v``. The session's event
log is a capped list beside it, its key the session's with ``:events`` after it (same
hash tag), written, expired and deleted by the scripts that write the session.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Generic, TypeVar

from .. import rules
from ..clock import Clock
from ..config import Config
from ..errors import SessionBusy
from ..ids import escape_scope, key_scope, split_key
from ..records import (
    EMPTY_FLOW,
    Entry,
    FlowState,
    Reservation,
    SessionInfo,
    SessionPage,
    SessionRow,
    Stats,
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

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_MS",
    "FIELDS",
    "SCRIPTS",
    "Eval",
    "Fetch",
    "Now",
    "Op",
    "Pipeline",
    "RedisOps",
    "Scan",
    "Sleep",
    "Unlink",
]

R = TypeVar("R")
T = TypeVar("T")

#: The fields of a session hash, in the order every read returns them.
FIELDS = (
    "id", "model", "tier", "created_at", "last_used_at", "request_count", "h1", "h2", "h3",
    "strikes", "escalated", "user_explicit", "cache_sticky", "cache_sticky_at", "provider",
    "cost", "reservations", "explicit_model", "fallback_from", "fallback_at", "sticky_ttl_ms",
    "failed_fingerprint", "finished", "v",
)  # fmt: skip

WRITE_SCRIPTS = (
    "set_session",
    "touch_session",
    "record_request_hash",
    "escalate_session",
    "add_session_cost",
    "set_cache_sticky",
    "compare_and_set",
    "write_link",
)


def _load_scripts() -> dict[str, str]:
    lua = resources.files(__package__).joinpath("lua")
    fields = ", ".join(f"'{name}'" for name in FIELDS)
    prelude = lua.joinpath("_prelude.lua").read_text("utf-8").replace("__FIELDS__", fields)
    # The shebang (Redis >= 7) declares what a script may do. Writers carry no flags, so
    # Redis refuses them whole when over maxmemory, instead of letting a first
    # non-growing write (DEL, HINCRBY...) through and with it every later one.
    reads = dict.fromkeys(
        ("read_session", "read_events", "resolve_link"), "#!lua flags=no-writes\n"
    )
    flags = dict.fromkeys(WRITE_SCRIPTS, "#!lua\n") | reads
    return {
        name: shebang + prelude + lua.joinpath(f"{name}.lua").read_text("utf-8")
        for name, shebang in flags.items()
    }


#: Script sources by name: a shebang, the shared prelude, then the script's own body.
SCRIPTS = _load_scripts()

DEFAULT_BUSY_TIMEOUT_MS = 5000
#: Sessions whose last written record a process remembers, to write the next version
#: without reading it first (least recently written forgotten first).
KNOWN_SESSIONS = 10_000
_BACKOFF_BASE_S = 0.001  # the first pause after a lost compare-and-set; doubles to the cap
_BACKOFF_CAP_S = 0.05


# -- commands a method can yield ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Eval:
    """EVALSHA of one of `SCRIPTS` on `key` (and `more_keys`, of its slot). Reply: the
    script's raw reply. A `read` may be sent again after a connection error; a write
    never is."""

    script: str
    key: str
    args: tuple[bytes, ...]
    read: bool = False
    more_keys: tuple[str, ...] = ()

    @property
    def argv(self) -> tuple[Any, ...]:
        """EVALSHA's arguments after the script's digest: numkeys, the keys, the args."""
        return (1 + len(self.more_keys), self.key, *self.more_keys, *self.args)


@dataclass(frozen=True, slots=True)
class Now:
    """The current time in ms (the injected clock, or the server's TIME). Reply: int."""


@dataclass(frozen=True, slots=True)
class Scan:
    """One SCAN step over keys matching `match` (of Redis type `type` only, when set).
    Reply: ``(next_cursor, keys)``."""

    cursor: int
    match: str
    type: str | None = None


@dataclass(frozen=True, slots=True)
class Fetch:
    """HMGET `fields` of every key in one pipeline. Reply: a list of value lists."""

    keys: tuple[bytes, ...]
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Several `Eval` writes that may be repeated (each on its own key, any slot), in
    one pipeline: one round trip. Reply: their replies."""

    evals: tuple[Eval, ...]


@dataclass(frozen=True, slots=True)
class Sleep:
    """Pause before trying again (another process won a compare-and-set). Reply: None."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Unlink:
    """UNLINK keys, one a command in one pipeline (keys of any slots). Reply: the number
    removed."""

    keys: tuple[bytes, ...]


Command = Eval | Now | Scan | Fetch | Unlink | Sleep | Pipeline


@dataclass(slots=True)
class Op(Generic[R]):
    """A running store method: `steps` yields commands and returns the result; `default`
    is what a fail-open store answers when Redis can't be reached (None: it raises even
    then). A `lock` key is held in-process while it runs, waited for until `deadline`
    (``time.monotonic()``; None waits as long as it takes)."""

    steps: Generator[Command, Any, R]
    default: Callable[[], R] | None
    write: bool
    lock: str | None = None
    deadline: float | None = None


# -- encoding -------------------------------------------------------------------------------


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _s(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")


_TIER_BYTES: dict[bytes | None, Tier] = {t.value.encode(): t for t in Tier}
_HASH_FIELDS = (b"h1", b"h2", b"h3")


def _tier_arg(tier: Tier | None) -> bytes:
    return b"" if tier is None else tier.value.encode()


def decode_entry(values: list[bytes | None]) -> Entry:
    """An `Entry` from a record's values in `FIELDS` order (the record must exist)."""
    (
        _, model, tier, created, used, count, h1, h2, h3, strikes, escalated, explicit,
        sticky, sticky_at, provider, cost, reservations, explicit_model, fallback_from,
        fallback_at, sticky_ttl, failed, finished, _,
    ) = values  # fmt: skip
    hashes = tuple(_s(h) for h in (h1, h2, h3) if h is not None)
    flow = EMPTY_FLOW
    if explicit_model is not None:  # the flow fields are written together, or not at all
        flow = FlowState(
            _decode_reservations(reservations or b""),
            _s(explicit_model),
            _s(fallback_from or b""),
            int(fallback_at or 0),
            int(sticky_ttl or 0),
            _s(failed or b""),
            _decode_finished(finished or b""),
        )
    return Entry(
        _s(model),  # type: ignore[arg-type]
        _TIER_BYTES.get(tier),
        int(created),  # type: ignore[arg-type]
        int(used),  # type: ignore[arg-type]
        int(count),  # type: ignore[arg-type]
        hashes,
        int(strikes),  # type: ignore[arg-type]
        escalated == b"1",
        explicit == b"1",
        sticky == b"1",
        int(sticky_at),  # type: ignore[arg-type]
        _s(provider),  # type: ignore[arg-type]
        int(cost),  # type: ignore[arg-type]
        flow,
    )


def _decode_reservations(raw: bytes) -> tuple[Reservation, ...]:
    out = []
    for item in raw.split(b";") if raw else ():
        rid, micros, expires = item.split(b",")
        out.append(Reservation(rid.decode(), int(micros), int(expires)))
    return tuple(out)


def _decode_finished(raw: bytes) -> tuple[tuple[str, int], ...]:
    if not raw:
        return ()
    pairs = (item.split(b",") for item in raw.split(b";"))
    return tuple((rid.decode(), int(total)) for rid, total in pairs)


def _int_arg(value: int) -> bytes:
    return b"%d" % value


def _flag_arg(value: bool) -> bytes:
    return b"1" if value else b"0"


def _reservations_arg(reservations: tuple[Reservation, ...]) -> bytes:
    return b";".join(b"%s,%d,%d" % (r.id.encode(), r.micros, r.expires_at) for r in reservations)


def _finished_arg(finished: tuple[tuple[str, int], ...]) -> bytes:
    return b";".join(b"%s,%d" % (rid.encode(), total) for rid, total in finished)


# (index in Entry / FlowState, hash field, encoder) of the fields always written; the
# hashes h1-h3 are written as many as there are, the flow's fields all or none.
_ENTRY_ARGS: tuple[tuple[int, bytes, Callable[[Any], bytes]], ...] = (
    (0, b"model", _b), (1, b"tier", _tier_arg), (2, b"created_at", _int_arg),
    (3, b"last_used_at", _int_arg), (4, b"request_count", _int_arg), (6, b"strikes", _int_arg),
    (7, b"escalated", _flag_arg), (8, b"user_explicit", _flag_arg),
    (9, b"cache_sticky", _flag_arg), (10, b"cache_sticky_at", _int_arg),
    (11, b"provider", _b), (12, b"cost", _int_arg),
)  # fmt: skip
_FLOW_ARGS: tuple[tuple[int, bytes, Callable[[Any], bytes]], ...] = (
    (0, b"reservations", _reservations_arg), (1, b"explicit_model", _b),
    (2, b"fallback_from", _b), (3, b"fallback_at", _int_arg), (4, b"sticky_ttl_ms", _int_arg),
    (5, b"failed_fingerprint", _b), (6, b"finished", _finished_arg),
)  # fmt: skip
_FLOW_FIELDS = tuple(name for _, name, _ in _FLOW_ARGS)


def encode_entry(session_id: str, entry: Entry) -> list[bytes]:
    """Field/value pairs of a whole session record (without its version)."""
    out = [b"id", _b(session_id)]
    for i, name, arg in _ENTRY_ARGS:
        out += (name, arg(entry[i]))
    for name, value in zip(_HASH_FIELDS, entry.recent_hashes, strict=False):
        out += (name, _b(value))
    flow = entry.flow
    if flow != EMPTY_FLOW:
        for i, name, arg in _FLOW_ARGS:
            out += (name, arg(flow[i]))
    return out


def encode_changes(stored: Entry, entry: Entry) -> tuple[list[bytes], list[bytes]]:
    """What turns the hash of `stored` (as `encode_entry` wrote it) into that of `entry`:
    the fields to delete, and the field/value pairs to set (only those that differ)."""
    pairs: list[bytes] = []
    for i, name, arg in _ENTRY_ARGS:
        if entry[i] != stored[i]:
            pairs += (name, arg(entry[i]))
    dropped: list[bytes] = []
    hashes, before = entry.recent_hashes, stored.recent_hashes
    if hashes != before:
        for name, value in zip(_HASH_FIELDS, hashes, strict=False):
            pairs += (name, _b(value))
        dropped += _HASH_FIELDS[len(hashes) : len(before)]
    flow, was = entry.flow, stored.flow
    if flow is not was and flow != was:
        if flow == EMPTY_FLOW:
            dropped += _FLOW_FIELDS  # the flow's fields go together
        else:
            whole = was == EMPTY_FLOW  # ... and come together
            for i, name, arg in _FLOW_ARGS:
                if whole or flow[i] != was[i]:
                    pairs += (name, arg(flow[i]))
    return dropped, pairs


@functools.lru_cache(maxsize=4096)
def _scope_tag(scope: str) -> str:
    return hashlib.blake2b(_b(scope), digest_size=8).hexdigest()


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# -- the methods ----------------------------------------------------------------------------


class RedisOps:
    """Every store method as an `Op`; shared by the sync and the async Redis store."""

    def __init__(
        self,
        config: Config,
        key_prefix: str,
        clock: Clock | None,
        busy_timeout_ms: float = DEFAULT_BUSY_TIMEOUT_MS,
    ) -> None:
        if not isinstance(key_prefix, str):
            raise TypeError(f"key_prefix must be a str, got {type(key_prefix).__name__}")
        if "{" in key_prefix or "}" in key_prefix:  # it would be every key's hash tag
            raise ValueError(f"key_prefix must not hold braces, got {key_prefix!r}")
        if (
            isinstance(busy_timeout_ms, bool)
            or not isinstance(busy_timeout_ms, int | float)
            or not busy_timeout_ms >= 0
        ):
            raise ValueError(f"busy_timeout_ms must be a number >= 0, got {busy_timeout_ms!r}")
        self.busy_timeout_ms = busy_timeout_ms
        self.config = config
        self.key_prefix = key_prefix
        self.clock = clock
        self._enabled = config.enabled
        self._timeout = config.timeout_ms
        self._timeout_arg = b"%d" % config.timeout_ms
        self._kept_arg = b"%d" % config.events_kept
        # session id -> (the record this process last wrote, its version). A transaction
        # starts from it instead of a read; the compare-and-set fails (and answers with
        # the current record) when another writer got there first.
        self._known: OrderedDict[str, tuple[Entry, bytes]] = OrderedDict()
        self._server_offset_ms: int | None = None  # the server's clock minus ours

    def key(self, session_id: str) -> str:
        """The session's key: the prefix, its scope's tag and a 128-bit digest of the id,
        in braces (the session's Redis Cluster hash tag)."""
        digest = hashlib.blake2b(_b(session_id), digest_size=16).hexdigest()
        return f"{self.key_prefix}{_scope_tag(key_scope(session_id))}:{{{digest}}}"

    def events_key(self, session_id: str) -> str:
        """The session's event log: a list beside its hash, on the same hash tag."""
        return self.key(session_id) + ":events"

    def link_key(self, name: str) -> str:
        """A link's key: in its scope's key space, beside the sessions (`key`)."""
        digest = hashlib.blake2b(b"link\0" + _b(name), digest_size=16).hexdigest()
        return f"{self.key_prefix}{_scope_tag(key_scope(name))}:L{digest}"

    def scope_match(self, scope: str | None) -> str:
        """The SCAN MATCH pattern of one scope's keys (the escaped scope half of a key),
        or of every key with None."""
        tag = "" if scope is None else _scope_tag(scope) + ":"
        return _glob_escape(self.key_prefix) + tag + "*"

    def _now_arg(self) -> bytes:
        return b"" if self.clock is None else b"%d" % self.clock()

    def _eval(self, script: str, session_id: str, *args: bytes) -> Eval:
        """One of the single-script writes: the record this process remembers is stale."""
        self._known.pop(session_id, None)
        return Eval(
            script,
            self.key(session_id),
            (self._now_arg(), self._timeout_arg, _b(session_id), *args),
            more_keys=(self.events_key(session_id),),
        )

    def _read(self, session_id: str) -> Eval:
        """The session's record and the time: ``[now_ms, [values in FIELDS order]]``."""
        return Eval("read_session", self.key(session_id), (self._now_arg(),), read=True)

    def _live(self, session_id: str, values: list[bytes | None], now: int) -> Entry | None:
        """The session in a record's `values` as a reader sees it at `now`, or None."""
        if values[0] != _b(session_id):
            return None  # no key, or (never in practice) another id with the same digest
        return self._alive(decode_entry(values), now)

    def _alive(self, entry: Entry, now: int) -> Entry | None:
        if rules.is_expired(entry, now, self._timeout):
            return None
        return rules.snapshot(list(entry), now) if entry.flow.reservations else entry

    def _as_read(
        self, session_id: str, values: list[bytes | None], now: int
    ) -> tuple[Entry | None, bytes]:
        """The live entry and version in a record read at `now` (the server's time, which
        the next writes without a read estimate from)."""
        if self.clock is None:
            self._server_offset_ms = now - _monotonic_ms()
        return self._live(session_id, values, now), values[-1] or b""

    def _remembered(self, session_id: str) -> tuple[int, Entry, bytes] | None:
        """``(now, entry, version)`` of the record this process last wrote for the
        session, with the time as the server's clock has it (estimated from a monotonic
        clock and the offset the last read measured); None when there is none."""
        known = self._known.get(session_id)
        if known is None:
            return None
        if self.clock is not None:
            now = self.clock()
        elif self._server_offset_ms is not None:  # steps of the host's clock don't count
            now = _monotonic_ms() + self._server_offset_ms
        else:
            return None
        entry, version = known
        return max(now, entry.last_used_at), entry, version

    def _remember(self, session_id: str, entry: Entry | None, version: bytes | None) -> None:
        known = self._known
        if entry is None or version is None:
            known.pop(session_id, None)
            return
        known[session_id] = (entry, version)
        known.move_to_end(session_id)
        if len(known) > KNOWN_SESSIONS:
            with contextlib.suppress(KeyError):
                known.popitem(last=False)

    def _off(self, session_id: str) -> bool:
        return not self._enabled or not session_id

    # reads

    def get_session(self, session_id: str) -> Op[Entry | None]:
        check_id(session_id)
        return Op(self._get(session_id), lambda: None, False)

    def _get(self, session_id: str) -> Generator[Command, Any, Entry | None]:
        if self._off(session_id):
            return None
        now, values = yield self._read(session_id)
        return self._live(session_id, values, now)

    def get_events(self, session_id: str) -> Op[list[str]]:
        check_id(session_id)

        def steps() -> Generator[Command, Any, list[str]]:
            if self._off(session_id):
                return []
            keys = (self.events_key(session_id),)
            read = Eval("read_events", self.key(session_id), (self._now_arg(), self._timeout_arg,
                        _b(session_id)), read=True, more_keys=keys)  # fmt: skip
            return [_s(text) for text in (yield read)]

        return Op(steps(), list, False)

    def get_session_cost_micros(self, session_id: str) -> Op[int]:
        check_id(session_id)

        def steps() -> Generator[Command, Any, int]:
            entry = yield from self._get(session_id)
            return 0 if entry is None else entry.session_cost_micros

        return Op(steps(), lambda: 0, False)

    def is_cache_sticky(self, session_id: str) -> Op[bool]:
        check_id(session_id)

        def steps() -> Generator[Command, Any, bool]:
            if self._off(session_id):
                return False
            now, values = yield self._read(session_id)
            return rules.is_cache_sticky(self._live(session_id, values, now), now, self.config)

        return Op(steps(), lambda: False, False)

    def get_stats(self, limit: int | None = None) -> Op[Stats]:
        limit = check_limit(limit)

        def steps() -> Generator[Command, Any, Stats]:
            now = yield Now()
            live: list[tuple[str, str, int]] = []
            cursor, match = 0, self.scope_match(None)
            while True:
                cursor, keys = yield Scan(cursor, match, "hash")
                if keys:
                    rows = yield Fetch(tuple(keys), ("id", "model", "created_at", "last_used_at"))
                    for sid, model, created, used in rows:
                        if (
                            sid is not None
                            and used is not None
                            and now - int(used) <= self._timeout
                        ):
                            live.append((_s(sid), _s(model), int(created)))
                if cursor == 0:
                    break
            live.sort()
            chosen = live if limit is None else live[:limit]
            sessions = [SessionInfo(rules.cut_id(s), m, (now - c) // 1000) for s, m, c in chosen]
            return Stats(len(live), sessions)

        return Op(steps(), lambda: Stats(0, []), False)

    def list_sessions(self, scope: str | None, limit: int, cursor: str) -> Op[SessionPage]:
        """One page of `scope`'s live sessions (every scope's with None). The cursor is
        ``"<SCAN cursor>-<last key returned from that SCAN batch>"``: a batch is resumed
        after the last key it gave, in key order, so a page never exceeds `limit`."""
        limit = check_cursor(scope, limit, cursor)
        start_text, _, after = cursor.partition("-")
        if cursor and not (start_text.isascii() and start_text.isdigit()):
            raise ValueError(f"cursor is not one this store returned: {cursor!r}")
        wanted = None if scope is None else escape_scope(scope)
        match = self.scope_match(wanted)
        fields = ("id", "model", "created_at", "last_used_at", "request_count", "cost", "tier",
                  "strikes")  # fmt: skip

        def steps() -> Generator[Command, Any, SessionPage]:
            now = yield Now()
            rows: list[SessionRow] = []
            start, skip_to = int(start_text or 0), after
            while True:
                following, keys = yield Scan(start, match, "hash")
                batch: list[tuple[str, SessionRow]] = []
                values = (yield Fetch(tuple(keys), fields)) if keys else []
                for sid, model, created, used, count, cost, tier, strikes in values:
                    if sid is None or used is None or now - int(used) > self._timeout:
                        continue
                    key = _s(sid)
                    if (wanted is not None and key_scope(key) != wanted) or key <= skip_to:
                        continue  # another scope with the same tag, or already returned
                    owner, session_id = split_key(key)
                    row = SessionRow(
                        session_id, owner, _s(model), (now - int(created)) // 1000,
                        int(count), int(cost), _TIER_BYTES.get(tier),
                        int(strikes or 0), int(used),
                    )  # fmt: skip
                    batch.append((key, row))
                batch.sort(key=lambda item: item[0])
                room = limit - len(rows)
                rows += [row for _, row in batch[:room]]
                if len(batch) > room:
                    return SessionPage(rows, f"{start}-{batch[room - 1][0]}")
                if following == 0:
                    return SessionPage(rows, "")
                start, skip_to = following, ""
                if len(rows) == limit:
                    return SessionPage(rows, f"{start}-")

        return Op(steps(), lambda: SessionPage([], ""), False)

    # writes: one script each

    def set_session(
        self, session_id: str, model: str, tier: Tier | str | None, user_explicit: bool
    ) -> Op[None]:
        check_id(session_id)
        check_str("model", model)
        t = coerce_tier(tier)
        check_bool("user_explicit", user_explicit)

        def steps() -> Generator[Command, Any, None]:
            if not self._off(session_id):
                yield self._eval(
                    "set_session",
                    session_id,
                    _b(model),
                    _tier_arg(t),
                    b"1" if user_explicit else b"0",
                )

        return Op(steps(), lambda: None, True)

    def touch_session(self, session_id: str) -> Op[None]:
        check_id(session_id)

        def steps() -> Generator[Command, Any, None]:
            if not self._off(session_id):
                yield self._eval("touch_session", session_id)

        return Op(steps(), lambda: None, True)

    def record_request_hash(self, session_id: str, request_hash: str) -> Op[int]:
        check_id(session_id)
        check_str("request_hash", request_hash)

        def steps() -> Generator[Command, Any, int]:
            if self._off(session_id):
                return 0
            return int((yield self._eval("record_request_hash", session_id, _b(request_hash))))

        return Op(steps(), lambda: 0, True)

    def escalate_session(
        self, session_id: str, models: Mapping[Tier, str] | Mapping[str, str] | None
    ) -> Op[Tier | None]:
        check_id(session_id)
        by_tier = check_models(models) or {}

        def steps() -> Generator[Command, Any, Tier | None]:
            if self._off(session_id):
                return None
            args: list[bytes] = []
            for tier in (Tier.MEDIUM, Tier.COMPLEX, Tier.REASONING):
                model = by_tier.get(tier)
                args += (b"0", b"") if model is None else (b"1", _b(model))
            reply = yield self._eval("escalate_session", session_id, *args)
            return None if reply is None else _TIER_BYTES[reply]

        return Op(steps(), lambda: None, True)

    def add_session_cost(self, session_id: str, micros: int) -> Op[int]:
        check_id(session_id)
        micros = check_micros(micros)

        def steps() -> Generator[Command, Any, int]:
            if self._off(session_id):
                return 0
            return int((yield self._eval("add_session_cost", session_id, b"%d" % micros)))

        return Op(steps(), lambda: 0, True)

    def set_cache_sticky(self, session_id: str, provider: str) -> Op[None]:
        check_id(session_id)
        check_str("provider", provider)

        def steps() -> Generator[Command, Any, None]:
            if not self._off(session_id):
                yield self._eval("set_cache_sticky", session_id, _b(provider))

        return Op(steps(), lambda: None, True)

    def clear_session(self, session_id: str) -> Op[None]:
        check_id(session_id)

        def steps() -> Generator[Command, Any, None]:
            self._known.pop(session_id, None)
            yield Unlink((self.key(session_id).encode(), self.events_key(session_id).encode()))

        return Op(steps(), lambda: None, True)

    def clear_all(self) -> Op[None]:
        def steps() -> Generator[Command, Any, None]:
            self._known.clear()
            cursor, match = 0, self.scope_match(None)
            while True:
                cursor, keys = yield Scan(cursor, match)
                if keys:
                    yield Unlink(tuple(keys))
                if cursor == 0:
                    return

        return Op(steps(), lambda: None, True)

    def resolve_link(self, name: str) -> Op[str | None]:
        check_id(name)

        def steps() -> Generator[Command, Any, str | None]:
            if not self._enabled:
                return None
            args = (self._now_arg(), self._timeout_arg, _b(name))
            value = yield Eval("resolve_link", self.link_key(name), args, read=True)
            return None if value is None else _s(value)

        # never fails open: an unreadable link is not an unknown one (the turn it chains
        # would start a new session, with a budget of its own)
        return Op(steps(), None, False)

    def _link_write(self, name: str, value: str) -> Eval:
        args = (self._now_arg(), self._timeout_arg, _b(name), _b(value))
        return Eval("write_link", self.link_key(name), args)

    def transact(
        self,
        session_id: str,
        fn: Transition[T],
        busy_timeout_ms: float | None = None,
        links: Mapping[str, str] | None = None,
        event: EventOf | None = None,
    ) -> Op[T]:
        """One read, then a compare-and-set of the whole record; when another write came
        in between, the script answers with the current record and `fn` runs again at
        once, then after pauses with jitter that double up to 50 ms. Transactions of one
        session wait for each other in-process (the op's `lock`); past `busy_timeout_ms`
        (the store's default when None, ``math.inf`` for no limit) it raises `SessionBusy`.
        It never fails open: a store that can't be reached raises `StoreUnavailable`.
        `links` are written just before the record, once, in one pipeline of single-key
        scripts (`write_link.lua`): no script spans two keys, so any Redis Cluster takes
        them; nothing is written when `fn` changes nothing. The `event`'s text goes to the
        session's log in the compare-and-set (alone, when `fn` changed nothing else)."""
        check_id(session_id)
        check_links(links)
        check_event(event)
        if not self.config.events_kept:
            event = None
        limit_ms = self.busy_timeout_ms if busy_timeout_ms is None else busy_timeout_ms
        deadline = None if math.isinf(limit_ms) else time.monotonic() + limit_ms / 1000
        key = self.key(session_id)

        def steps() -> Generator[Command, Any, T]:
            if self._off(session_id):
                now = self.clock() if self.clock is not None else time.time_ns() // 1_000_000
                return fn(None, now)[1]
            old: Entry | None
            stored: Entry | None = None  # what the hash holds at `version`, when known
            remembered = self._remembered(session_id)
            if remembered is not None:  # what this process wrote last: no read
                now, stored, version = remembered
                old = self._alive(stored, now)
                if old is None and self.clock is None:  # a local estimate: the server decides
                    remembered = stored = None
            if remembered is None:
                now, values = yield self._read(session_id)
                old, version = self._as_read(session_id, values, now)
            lost, linked = 0, False
            more = (self.events_key(session_id),)
            while True:
                new, result = fn(old, now)
                text = None if event is None or new is None else event(old, new, result, now)
                if new is old and text is None and remembered is None:
                    return result
                if new is old and text is None:  # from what may be stale: a read confirms it
                    remembered = stored = None
                    now, values = yield self._read(session_id)
                    old, version = self._as_read(session_id, values, now)
                    continue
                if new is old:
                    change: list[bytes] = [b"0"]  # the event alone
                elif new is None:
                    change = [b"-1"]  # the whole record: none
                elif stored is None:
                    change = [b"-1", *encode_entry(session_id, new)]
                else:  # only what changed since the version this process wrote
                    dropped, pairs = encode_changes(stored, new)
                    change = [b"%d" % len(dropped), *dropped, *pairs]
                if links and new is not None and not linked:  # each on its own key: any slot
                    # before the record: a retry after a lost reply finds the record
                    # written and writes nothing, so links written after it could be lost
                    yield Pipeline(tuple(self._link_write(n, v) for n, v in links.items()))
                    linked = True
                logged = (b"" if text is None else _b(text), b"1" if old is None else b"0")
                reply = yield Eval(
                    "compare_and_set",
                    key,
                    (self._now_arg(), self._timeout_arg, _b(session_id), version, *logged,
                     self._kept_arg, *change),
                    more_keys=more,
                )  # fmt: skip
                if reply[0] == 1:
                    self._remember(session_id, new, reply[1] if len(reply) > 1 else None)
                    return result
                self._remember(session_id, None, None)
                stored = None
                if remembered is not None:  # another writer came first: it is not contention
                    remembered = None
                else:
                    lost += 1
                if deadline is not None and time.monotonic() >= deadline:
                    raise SessionBusy(
                        f"session busy: other writers won {lost} compare-and-sets in a row "
                        f"within busy_timeout_ms={limit_ms:g}"
                    )
                if lost <= 1:  # the reply carries the current record: try again at once
                    now = int(reply[1])
                    old, version = self._as_read(session_id, reply[2], now)
                    continue
                pause = random.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2 ** (lost - 2)))
                if deadline is not None:
                    pause = min(pause, max(deadline - time.monotonic(), 0.0))
                yield Sleep(pause)
                now, values = yield self._read(session_id)
                old, version = self._as_read(session_id, values, now)

        return Op(steps(), None, True, key, deadline)


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000
