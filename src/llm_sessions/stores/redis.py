"""Redis stores: `RedisSessionStore` and its asyncio twin `AsyncRedisSessionStore`.

Both run the same `RedisOps` generators (see ``redis_core``); the only code here is how a
command reaches Redis, once with blocking calls and once with ``await``, and what a
store does when Redis can't be reached (``on_error``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal, TypeVar

from ..clock import Clock
from ..config import Config
from ..errors import MissingDependency, SessionBusy, StoreUnavailable
from ..records import Entry, SessionPage, Stats
from ..rules import MAX_COST_MICROS
from ..tiers import Tier
from .base import EventOf, Transition
from .keyed import AsyncKeyedLock, KeyedLock, LockTimeout
from .redis_core import (
    DEFAULT_BUSY_TIMEOUT_MS,
    SCRIPTS,
    Eval,
    Fetch,
    Now,
    Op,
    Pipeline,
    RedisOps,
    Scan,
    Sleep,
    Unlink,
)
from .redis_urls import RedisTarget, parse_redis_url

try:
    import redis as redis_sync
    import redis.asyncio as redis_async
    import redis.asyncio.cluster as async_cluster
    import redis.asyncio.sentinel as async_sentinel
    import redis.cluster as sync_cluster
    import redis.sentinel as sync_sentinel
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.exceptions import (
        AskError,
        ClusterDownError,
        NoScriptError,
        OutOfMemoryError,
        ReadOnlyError,
        RedisError,
        ResponseError,
        TryAgainError,
    )
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependency(
        "the Redis store needs the redis client: pip install 'llm-sessions[redis]'"
    ) from exc
_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is in the extra; redis-py packs without it
    _hiredis_pack = None

__all__ = ["AsyncRedisSessionStore", "OnError", "RedisSessionStore"]

log = logging.getLogger("llm_sessions.redis")

R = TypeVar("R")
T = TypeVar("T")
OnError = Literal["raise", "fail_open"]

DEFAULT_SOCKET_TIMEOUT = 0.5
DEFAULT_CONNECT_TIMEOUT = 1.0  # a connect includes the handshake, on a loop that may be busy
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_WAIT_TIMEOUT_MS = 100  # wait_replicas: the longest a write waits for its replicas
SCAN_COUNT = 1000
_LOG_EVERY_S = 10.0
# Errors that mean "Redis can't take this now", as opposed to a bug. Connection errors
# include LOADING (BusyLoadingError); BUSY and NOREPLICAS arrive as plain ResponseErrors.
_UNAVAILABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    OutOfMemoryError,
    ReadOnlyError,
    ClusterDownError,
    TryAgainError,
)
_UNAVAILABLE_REPLIES = ("BUSY", "NOREPLICAS", "OOM")


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, _UNAVAILABLE):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(_UNAVAILABLE_REPLIES)


class _ErrorPolicy:
    """``on_error``: raise `StoreUnavailable`, or count, log at most every 10 s, and answer
    the method's fail-open default. No redis-py exception ever leaves a store: a reply
    that is not an outage (a key of another type, a script error) is `StoreUnavailable`
    too, chained, and never failed open."""

    def __init__(self, on_error: str) -> None:
        if on_error not in ("raise", "fail_open"):
            raise ValueError(f"on_error must be 'raise' or 'fail_open', got {on_error!r}")
        self.on_error = on_error
        self.fail_open = on_error == "fail_open"
        self.errors = 0
        self._last_log = -_LOG_EVERY_S

    def handle(self, op: Op[R], exc: BaseException) -> R:
        if isinstance(exc, ResponseError) and "overflow" in str(exc):
            raise ValueError(f"the session cost would pass {MAX_COST_MICROS} micro-USD") from exc
        if not _unavailable(exc):
            raise StoreUnavailable(
                f"Redis refused a command ({type(exc).__name__}: {exc})"
            ) from exc
        self.errors += 1
        if not self.fail_open or op.default is None:
            raise StoreUnavailable(f"Redis is unavailable ({type(exc).__name__}: {exc})") from exc
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY_S:
            self._last_log = now
            log.warning("Redis unavailable, failing open (%d errors so far): %s", self.errors, exc)
        return op.default()


def _no_retry(module: Any) -> Retry | AsyncRetry:
    """Retries off, in the kind `module`'s clients take (an asyncio client given the
    synchronous ``Retry`` converts it, with a warning since redis-py 8.2).

    A write that may have reached the server is never sent again (a retried script could
    count a cost twice); reads retry once, in the drivers below."""
    return AsyncRetry(NoBackoff(), 0) if module is redis_async else Retry(NoBackoff(), 0)


def _connect(
    module: Any,
    target: Any,
    socket_timeout: float | None,
    connect_timeout: float | None,
    max_connections: int | None,
    wait_s: float,
) -> tuple[Any, Any]:
    """``(client, pool)`` of `module` (``redis`` or ``redis.asyncio``) for a store URL (see
    `redis_urls`) or a client of one server: retries off, explicit timeouts applied. One
    server's pool is blocking: past `max_connections` a caller waits for a free
    connection, up to `wait_s`, instead of failing (a hung server frees its connections
    after the socket timeout, so a wait is bounded either way; a busy one must not fail
    callers who would have been served). A cluster client keeps a pool per node, of
    `max_connections` each, and has no pool of its own (None)."""
    size = DEFAULT_MAX_CONNECTIONS if max_connections is None else max_connections
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"max_connections must be an int >= 1, got {max_connections!r}")
    timeouts: dict[str, Any] = {
        "socket_timeout": DEFAULT_SOCKET_TIMEOUT if socket_timeout is None else socket_timeout,
        "socket_connect_timeout": DEFAULT_CONNECT_TIMEOUT
        if connect_timeout is None
        else connect_timeout,
        "retry": _no_retry(module),
    }
    if isinstance(target, str):
        found = parse_redis_url(target)
        if found.topology == "cluster":
            return _cluster_client(module, found, size, timeouts), None
        if found.topology == "sentinel":
            client = _sentinel_client(module, found, size, wait_s, timeouts)
            return client, client.connection_pool
        pool = module.BlockingConnectionPool.from_url(
            target, max_connections=size, timeout=wait_s, **timeouts
        )
        return module.Redis(connection_pool=pool), pool
    if isinstance(target, module.Redis):
        pool = target.connection_pool
        kwargs = dict(pool.connection_kwargs)
        kwargs.update(retry=_no_retry(module), decode_responses=False)
        if socket_timeout is not None:
            kwargs["socket_timeout"] = socket_timeout
        if connect_timeout is not None:
            kwargs["socket_connect_timeout"] = connect_timeout
        pool = module.BlockingConnectionPool(
            connection_class=pool.connection_class,
            max_connections=size,
            timeout=wait_s,
            **kwargs,
        )
        return module.Redis(connection_pool=pool), pool
    raise TypeError(
        f"expected a redis URL or a {module.__name__}.Redis client, got {type(target).__name__}"
    )


def _auth(found: RedisTarget) -> dict[str, Any]:
    """A target's credentials and TLS options, for each node's connections."""
    kwargs: dict[str, Any] = {"username": found.username, "password": found.password}
    if found.tls:
        kwargs.update(ssl=True, **found.options)
    return kwargs


def _cluster_client(module: Any, found: RedisTarget, size: int, timeouts: dict[str, Any]) -> Any:
    cluster = async_cluster if module is redis_async else sync_cluster
    return cluster.RedisCluster(
        startup_nodes=[cluster.ClusterNode(host, port) for host, port in found.hosts],
        max_connections=size,
        decode_responses=False,
        **_auth(found),
        **timeouts,
    )


def _sentinel_client(
    module: Any, found: RedisTarget, size: int, wait_s: float, timeouts: dict[str, Any]
) -> Any:
    """The primary's client, on a blocking pool like one server's."""
    sentinel = async_sentinel if module is redis_async else sync_sentinel
    pool_class = _BlockingSentinelPool if module is redis_sync else _AsyncBlockingSentinelPool
    own = {k: v for k, v in timeouts.items() if k != "retry"}
    if found.sentinel_password is not None:
        own["password"] = found.sentinel_password
    if found.tls:
        own.update(ssl=True, **found.options)
    watchers = sentinel.Sentinel(list(found.hosts), sentinel_kwargs=own)
    return watchers.master_for(
        found.service,
        redis_class=module.Redis,
        connection_pool_class=pool_class,
        db=found.db,
        max_connections=size,
        timeout=wait_s,
        decode_responses=False,
        **_auth(found),
        **timeouts,
    )


class _BlockingSentinelPool(
    sync_sentinel.SentinelConnectionPool, redis_sync.BlockingConnectionPool
):
    """Sentinel's pool (it asks the sentinels where the primary is), blocking: past its
    size a caller waits for a free connection rather than failing."""


class _AsyncBlockingSentinelPool(
    async_sentinel.SentinelConnectionPool, redis_async.BlockingConnectionPool
):
    """`_BlockingSentinelPool` for ``redis.asyncio``."""


async def _exchange(conn: Any, commands: tuple[tuple[Any, ...], ...]) -> list[Any]:
    """`commands` written at once on an async connection (reopened first when the server
    closed it since its last use), then each reply read in turn, under the socket
    timeout; an error reply is returned in its place, so nothing is left unread on it."""
    reader = getattr(conn, "_reader", None)
    if reader is None or reader.at_eof():
        await conn.disconnect()
        await conn.connect()
    for args in commands:
        conn._writer.writelines(
            conn.pack_command(*args) if _hiredis_pack is None else [_hiredis_pack(args)]
        )
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await conn.read_response())
        except ResponseError as exc:
            replies.append(exc)
    return replies


def _sentinels(pool: Any) -> list[Any]:
    """The clients of the sentinels a Sentinel pool asks (none for any other pool)."""
    manager = getattr(pool, "sentinel_manager", None)
    return list(getattr(manager, "sentinels", ()))


#: A cluster SCAN's cursor: the node's own cursor times this, plus the node's index
_NODES = 1024


def _scan_step(cursor: int) -> tuple[int, int]:
    """``(node index, node cursor)`` of a cluster-wide SCAN cursor."""
    return cursor % _NODES, cursor // _NODES


def _scan_next(index: int, following: Any, nodes: int) -> int:
    """The cluster-wide cursor after node `index` answered `following` (0: that node is
    done, so the next one from its start; 0 after the last one). redis-py's cluster
    client answers a node's cursor in a dict by node name."""
    if isinstance(following, dict):
        (following,) = following.values()
    if following:
        return int(following) * _NODES + index
    return 0 if index + 1 >= nodes else index + 1


def _server_ms(reply: Any) -> int:
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


class _RedisStoreBase:
    """What the two Redis stores share; each names its redis-py module and lock kind."""

    _module: Any
    _lock_kind: type[KeyedLock] | type[AsyncKeyedLock]

    def __init__(
        self,
        client_or_url: Any,
        config: Config | None = None,
        *,
        key_prefix: str = "llm-sessions:",
        clock: Clock | None = None,
        on_error: OnError = "raise",
        socket_timeout: float | None = None,
        socket_connect_timeout: float | None = None,
        max_connections: int | None = None,
        busy_timeout_ms: float = DEFAULT_BUSY_TIMEOUT_MS,
        wait_replicas: int = 0,
        wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS,
    ) -> None:
        cfg = Config() if config is None else config
        if not isinstance(cfg, Config):
            raise TypeError(f"config must be a Config, got {type(cfg).__name__}")
        self._ops = RedisOps(cfg, key_prefix, clock, busy_timeout_ms)
        # Script digests, computed here (EVALSHA needs no prior SCRIPT LOAD to be tried).
        self._shas = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in SCRIPTS.items()}
        self._errors = _ErrorPolicy(on_error)
        for name, value in (("wait_replicas", wait_replicas), ("wait_timeout_ms", wait_timeout_ms)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        reply_s = DEFAULT_SOCKET_TIMEOUT if socket_timeout is None else socket_timeout
        if wait_replicas and wait_timeout_ms >= reply_s * 1000:
            raise ValueError(
                f"wait_timeout_ms ({wait_timeout_ms}) must be less than the socket timeout "
                f"({reply_s * 1000:g} ms): a write whose WAIT outlasts it would look failed"
            )
        self._wait = ("WAIT", wait_replicas, wait_timeout_ms) if wait_replicas else None
        self.unreplicated = 0  # writes fewer replicas than wait_replicas acknowledged in time
        self._clock = clock
        self._client, self._pool = _connect(
            self._module,
            client_or_url,
            socket_timeout,
            socket_connect_timeout,
            max_connections,
            max(busy_timeout_ms / 1000, DEFAULT_SOCKET_TIMEOUT),
        )
        self._cluster = self._pool is None
        self._locks = self._lock_kind()
        # Connections of the pool that the async store's scripts reuse without handing them
        # back (the pool's wait, lock and bookkeeping cost more than a round trip): still
        # the pool's, so max_connections bounds them, at most all but one of them (the
        # other commands always find one), and a failed one goes back to it, closed.
        self._idle: list[Any] = []
        self._idle_cap = max(int(getattr(self._pool, "max_connections", 1) or 1) - 1, 0)
        if self._cluster:  # a command goes to its key's node: the client's own path
            self._idle_cap = 0

    @property
    def config(self) -> Config:
        return self._ops.config

    @property
    def key_prefix(self) -> str:
        return self._ops.key_prefix

    @property
    def errors(self) -> int:
        """How many times Redis could not be reached (or refused a write)."""
        return self._errors.errors

    @property
    def on_error(self) -> str:
        """``"raise"`` or ``"fail_open"``."""
        return self._errors.on_error

    @staticmethod
    def _wait_s(op: Op[Any]) -> float | None:
        return None if op.deadline is None else op.deadline - time.monotonic()

    @staticmethod
    def _busy(exc: LockTimeout) -> SessionBusy:
        return SessionBusy(f"session busy: in-process writers held it past busy_timeout_ms ({exc})")

    def key(self, session_id: str) -> str:
        """The Redis key of a session."""
        return self._ops.key(session_id)

    def _replicated(self, acked: Any) -> None:
        """WAIT's answer: fewer replicas than asked for is counted and logged (the write
        stands: the primary has it, and a failover now could lose it)."""
        assert self._wait is not None
        if isinstance(acked, int) and acked < self._wait[1]:
            self.unreplicated += 1
            if self.unreplicated == 1 or self.unreplicated % 1000 == 0:
                log.warning(
                    "a write reached %d of %d replicas within %d ms (%d such writes so far)",
                    acked, self._wait[1], self._wait[2], self.unreplicated,
                )  # fmt: skip

    def _evalsha(self, cmd: Eval) -> tuple[Any, ...]:
        return ("EVALSHA", self._shas[cmd.script], *cmd.argv)


class RedisSessionStore(_RedisStoreBase):
    """A session store in Redis (>= 7) or Valkey, shared by every process that uses it.

    Same methods, results and rules as `SessionStore`, except that ``max_sessions`` does
    not apply (Redis' ``maxmemory`` does). Each per-session method is one round trip,
    atomic on the server. `client_or_url` is a ``redis://``, ``rediss://`` or ``unix://``
    URL or a `redis.Redis` (its settings are reused on a pool of the store's own, with
    automatic retries off; `socket_timeout` and `socket_connect_timeout` override them when
    given). The pool holds at most `max_connections`; past that a call waits for a free
    connection, up to `busy_timeout_ms`. With `clock` None the server's clock is used.
    ``on_error="fail_open"`` answers reads with None/0/False and drops writes while Redis
    is unreachable, instead of raising `StoreUnavailable` (`transact` always raises).
    `transact` calls on one session wait for each other in this process, and retry after
    other processes' writes for up to `busy_timeout_ms` before raising `SessionBusy`.
    """

    _module = redis_sync
    _lock_kind = KeyedLock
    _locks: KeyedLock

    def _run(self, op: Op[R]) -> R:
        if op.lock is None:
            return self._steps(op)
        try:
            with self._locks.hold(op.lock, self._wait_s(op)):
                return self._steps(op)
        except LockTimeout as exc:
            raise self._busy(exc) from None

    def _steps(self, op: Op[R]) -> R:
        steps, client, shas = op.steps, self._client, self._shas
        try:
            cmd = next(steps)
            while True:
                try:
                    if type(cmd) is Eval:
                        try:
                            if self._wait is not None and not cmd.read:
                                reply = self._eval_waiting(cmd)
                            else:
                                reply = client.execute_command(
                                    "EVALSHA", shas[cmd.script], *cmd.argv,
                                )  # fmt: skip
                        except (NoScriptError, RedisConnectionError) as exc:
                            reply = self._eval_again(cmd, exc)
                    elif type(cmd) is Sleep:
                        time.sleep(cmd.seconds)
                        reply = None
                    else:
                        reply = self._keyspace(cmd)
                except RedisError as exc:
                    return self._errors.handle(op, exc)
                cmd = steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _eval_again(self, cmd: Eval, exc: RedisError) -> Any:
        """A script's second chance: load a script Redis lost (it did not run), or repeat a
        read whose pooled connection died. A write that may have run is never repeated."""
        if isinstance(exc, NoScriptError):
            self._shas[cmd.script] = self._client.script_load(SCRIPTS[cmd.script])
            if self._wait is not None and not cmd.read:
                return self._eval_waiting(cmd)
        elif not cmd.read:
            raise exc
        return self._client.evalsha(self._shas[cmd.script], *cmd.argv)

    def _eval_waiting(self, cmd: Eval) -> Any:
        """A write, then WAIT for `wait_replicas`, on one connection in one round trip (WAIT
        counts the writes of the connection it is sent on): a cluster's goes to the node
        holding the key, and a node that no longer holds it has the client re-read the
        cluster's layout (the write is then an outage, as any other failover)."""
        target = self._client
        if self._cluster:
            target = self._client.get_node_from_key(cmd.key).redis_connection
        pipe = target.pipeline(transaction=False)
        pipe.execute_command(*self._evalsha(cmd))
        pipe.execute_command(*self._wait)  # type: ignore[misc]
        try:
            reply, acked = pipe.execute(raise_on_error=False)
            if isinstance(reply, AskError):  # MOVED too: its slot is elsewhere now
                raise RedisConnectionError(f"the key's slot moved: {reply}")
        except RedisConnectionError:
            if self._cluster:
                self._client.nodes_manager.initialize()
            raise
        if isinstance(reply, Exception):
            raise reply
        self._replicated(acked)
        return reply

    def _keyspace(self, cmd: Any) -> Any:
        client = self._client
        if isinstance(cmd, Unlink):  # one key a command: keys of any slots
            pipe = client.pipeline(transaction=False)
            for key in cmd.keys:
                pipe.execute_command("UNLINK", key)
            return sum(pipe.execute())
        for attempt in (1, 2):  # reads and link writes: one retry after a connection error
            try:
                if isinstance(cmd, Now):
                    return self._clock() if self._clock is not None else _server_ms(client.time())
                if isinstance(cmd, Scan):
                    if not self._cluster:
                        return client.scan(
                            cmd.cursor, match=cmd.match, count=SCAN_COUNT, _type=cmd.type
                        )
                    index, at = _scan_step(cmd.cursor)  # each primary in turn
                    nodes = sorted(client.get_primaries(), key=lambda node: node.name)
                    following, keys = client.scan(
                        at, match=cmd.match, count=SCAN_COUNT, _type=cmd.type,
                        target_nodes=nodes[index],
                    )  # fmt: skip
                    return _scan_next(index, following, len(nodes)), keys
                if isinstance(cmd, Fetch):
                    pipe = client.pipeline(transaction=False)
                    for key in cmd.keys:
                        pipe.hmget(key, cmd.fields)
                    return pipe.execute()
                if isinstance(cmd, Pipeline):
                    pipe = client.pipeline(transaction=False)
                    for each in cmd.evals:
                        pipe.evalsha(self._shas[each.script], *each.argv)
                    return pipe.execute()
                raise AssertionError(cmd)
            except NoScriptError:  # Redis lost a script: load it, send them all again
                for each in cmd.evals:
                    self._shas[each.script] = client.script_load(SCRIPTS[each.script])
            except RedisConnectionError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get_session(self, session_id: str) -> Entry | None:
        return self._run(self._ops.get_session(session_id))

    def set_session(
        self,
        session_id: str,
        model: str,
        tier: Tier | str | None = None,
        user_explicit: bool = False,
    ) -> None:
        self._run(self._ops.set_session(session_id, model, tier, user_explicit))

    def touch_session(self, session_id: str) -> None:
        self._run(self._ops.touch_session(session_id))

    def clear_session(self, session_id: str) -> None:
        self._run(self._ops.clear_session(session_id))

    def clear_all(self) -> None:
        self._run(self._ops.clear_all())

    def get_stats(self, limit: int | None = None) -> Stats:
        return self._run(self._ops.get_stats(limit))

    def record_request_hash(self, session_id: str, request_hash: str) -> int:
        return self._run(self._ops.record_request_hash(session_id, request_hash))

    def escalate_session(
        self, session_id: str, models: Mapping[Tier, str] | Mapping[str, str] | None = None
    ) -> Tier | None:
        return self._run(self._ops.escalate_session(session_id, models))

    def add_session_cost(self, session_id: str, micros: int) -> int:
        return self._run(self._ops.add_session_cost(session_id, micros))

    def get_session_cost_micros(self, session_id: str) -> int:
        return self._run(self._ops.get_session_cost_micros(session_id))

    def get_session_cost_usd(self, session_id: str) -> float:
        return self.get_session_cost_micros(session_id) / 1_000_000

    def set_cache_sticky(self, session_id: str, provider: str) -> None:
        self._run(self._ops.set_cache_sticky(session_id, provider))

    def is_cache_sticky(self, session_id: str) -> bool:
        return self._run(self._ops.is_cache_sticky(session_id))

    def transact(
        self,
        session_id: str,
        fn: Transition[T],
        *,
        busy_timeout_ms: float | None = None,
        links: Mapping[str, str] | None = None,
        event: EventOf | None = None,
    ) -> T:
        return self._run(self._ops.transact(session_id, fn, busy_timeout_ms, links, event))

    def get_events(self, session_id: str) -> list[str]:
        return self._run(self._ops.get_events(session_id))

    def resolve_link(self, name: str) -> str | None:
        return self._run(self._ops.resolve_link(name))

    def list_sessions(
        self, scope: str | None = "", *, limit: int = 100, cursor: str = ""
    ) -> SessionPage:
        """One page of `scope`'s live sessions (every scope's with None): one SCAN that
        selects only that scope's keys."""
        return self._run(self._ops.list_sessions(scope, limit, cursor))

    def ping(self) -> bool:
        """True when Redis answers a PING."""
        try:
            return bool(self._client.ping())
        except RedisError:
            return False

    def close(self) -> None:
        """Close the store's connection pool and its connections. Idempotent."""
        self._client.close()
        if self._pool is not None:
            self._pool.disconnect()
        for watcher in _sentinels(self._pool):
            watcher.close()

    def __enter__(self) -> RedisSessionStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncRedisSessionStore(_RedisStoreBase):
    """`RedisSessionStore` on ``redis.asyncio``: the same methods as coroutines."""

    _module = redis_async
    _lock_kind = AsyncKeyedLock
    _locks: AsyncKeyedLock

    async def _run(self, op: Op[R]) -> R:
        if op.lock is None:
            return await self._steps(op)
        try:
            async with self._locks.hold(op.lock, self._wait_s(op)):
                return await self._steps(op)
        except LockTimeout as exc:
            raise self._busy(exc) from None

    async def _steps(self, op: Op[R]) -> R:
        steps, shas = op.steps, self._shas
        try:
            cmd = next(steps)
            while True:
                try:
                    if type(cmd) is Eval:
                        try:
                            if self._wait is not None and not cmd.read:
                                reply = await self._eval_waiting(cmd)
                            else:
                                reply = await self._command(
                                    "EVALSHA", shas[cmd.script], *cmd.argv,
                                )  # fmt: skip
                        except (NoScriptError, RedisConnectionError) as exc:
                            reply = await self._eval_again(cmd, exc)
                    elif type(cmd) is Sleep:
                        await asyncio.sleep(cmd.seconds)
                        reply = None
                    else:
                        reply = await self._keyspace(cmd)
                except RedisError as exc:
                    return self._errors.handle(op, exc)
                cmd = steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _command(self, *args: Any) -> Any:
        """One command (EVALSHA, SCRIPT LOAD) on a pooled connection, packed by hiredis:
        redis-py's command path (its retry wrapper, observability hooks, pure-Python
        packer, and a task per write to time it) cost more CPU than the round trip itself.
        The command goes to the connection's writer as redis-py writes it, without waiting:
        a connection carries one command at a time, which its transport takes whole, and
        the reply is read by redis-py under the socket timeout, which so bounds a server
        that never answers. A connection the server closed since its last use (a restart)
        is reopened before anything is sent on it; one that fails mid-command is closed,
        as redis-py does; an error reply (``NOSCRIPT``, ``OOM``...) is raised as redis-py
        raises it."""
        if self._cluster:
            return await self._client.execute_command(*args)
        conn = self._idle.pop() if self._idle else await self._pool.get_connection()
        try:
            (reply,) = await _exchange(conn, (args,))
        except BaseException:
            await conn.disconnect()
            await self._pool.release(conn)
            raise
        await self._put_back(conn)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def _eval_waiting(self, cmd: Eval) -> Any:
        """`RedisSessionStore._eval_waiting`: the write and its WAIT written at once on one
        connection (a cluster's: of the node holding the key), both replies read."""
        assert self._wait is not None
        client, node = self._client, None
        if self._cluster:
            if not client.get_primaries():
                await client.initialize()
            node = client.get_node_from_key(cmd.key)
            conn = node.acquire_connection()
        else:
            conn = self._idle.pop() if self._idle else await self._pool.get_connection()
        try:
            reply, acked = await _exchange(conn, (self._evalsha(cmd), self._wait))
        except BaseException:
            await conn.disconnect()
            if node is not None:
                node.release(conn)
                await client.nodes_manager.initialize()
            else:
                await self._pool.release(conn)
            raise
        if node is not None:
            node.release(conn)
        else:
            await self._put_back(conn)
        if isinstance(reply, AskError):  # MOVED too: its slot is elsewhere now
            await client.nodes_manager.initialize()
            raise RedisConnectionError(f"the key's slot moved: {reply}")
        for answer in (reply, acked):
            if isinstance(answer, ResponseError):
                raise answer
        self._replicated(acked)
        return reply

    async def _put_back(self, conn: Any) -> None:
        if len(self._idle) < self._idle_cap:
            self._idle.append(conn)
        else:
            await self._pool.release(conn)

    async def _eval_again(self, cmd: Eval, exc: RedisError) -> Any:
        """A script's second chance: load a script Redis lost (it did not run), or repeat a
        read whose pooled connection died. A write that may have run is never repeated."""
        if isinstance(exc, NoScriptError):
            sha = await self._command("SCRIPT", "LOAD", SCRIPTS[cmd.script])
            self._shas[cmd.script] = sha.decode() if isinstance(sha, bytes) else sha
            if self._wait is not None and not cmd.read:
                return await self._eval_waiting(cmd)
        elif not cmd.read:
            raise exc
        return await self._command("EVALSHA", self._shas[cmd.script], *cmd.argv)

    async def _keyspace(self, cmd: Any) -> Any:
        client = self._client
        if isinstance(cmd, Unlink):  # one key a command: keys of any slots
            pipe = client.pipeline(transaction=False)
            for key in cmd.keys:
                pipe.execute_command("UNLINK", key)
            return sum(await pipe.execute())
        for attempt in (1, 2):  # reads and link writes: one retry after a connection error
            try:
                if isinstance(cmd, Now):
                    if self._clock is not None:
                        return self._clock()
                    return _server_ms(await client.time())
                if isinstance(cmd, Scan):
                    if not self._cluster:
                        return await client.scan(
                            cmd.cursor, match=cmd.match, count=SCAN_COUNT, _type=cmd.type
                        )
                    index, at = _scan_step(cmd.cursor)  # each primary in turn
                    if not client.get_primaries():  # not one command sent yet
                        await client.initialize()
                    nodes = sorted(client.get_primaries(), key=lambda node: node.name)
                    following, keys = await client.scan(
                        at, match=cmd.match, count=SCAN_COUNT, _type=cmd.type,
                        target_nodes=nodes[index],
                    )  # fmt: skip
                    return _scan_next(index, following, len(nodes)), keys
                if isinstance(cmd, Fetch):
                    pipe = client.pipeline(transaction=False)
                    for key in cmd.keys:
                        pipe.hmget(key, cmd.fields)
                    return await pipe.execute()
                if isinstance(cmd, Pipeline):
                    pipe = client.pipeline(transaction=False)
                    for each in cmd.evals:
                        pipe.evalsha(self._shas[each.script], *each.argv)
                    return await pipe.execute()
                raise AssertionError(cmd)
            except NoScriptError:  # Redis lost a script: load it, send them all again
                for each in cmd.evals:
                    self._shas[each.script] = await client.script_load(SCRIPTS[each.script])
            except RedisConnectionError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def get_session(self, session_id: str) -> Entry | None:
        return await self._run(self._ops.get_session(session_id))

    async def set_session(
        self,
        session_id: str,
        model: str,
        tier: Tier | str | None = None,
        user_explicit: bool = False,
    ) -> None:
        await self._run(self._ops.set_session(session_id, model, tier, user_explicit))

    async def touch_session(self, session_id: str) -> None:
        await self._run(self._ops.touch_session(session_id))

    async def clear_session(self, session_id: str) -> None:
        await self._run(self._ops.clear_session(session_id))

    async def clear_all(self) -> None:
        await self._run(self._ops.clear_all())

    async def get_stats(self, limit: int | None = None) -> Stats:
        return await self._run(self._ops.get_stats(limit))

    async def record_request_hash(self, session_id: str, request_hash: str) -> int:
        return await self._run(self._ops.record_request_hash(session_id, request_hash))

    async def escalate_session(
        self, session_id: str, models: Mapping[Tier, str] | Mapping[str, str] | None = None
    ) -> Tier | None:
        return await self._run(self._ops.escalate_session(session_id, models))

    async def add_session_cost(self, session_id: str, micros: int) -> int:
        return await self._run(self._ops.add_session_cost(session_id, micros))

    async def get_session_cost_micros(self, session_id: str) -> int:
        return await self._run(self._ops.get_session_cost_micros(session_id))

    async def get_session_cost_usd(self, session_id: str) -> float:
        return await self.get_session_cost_micros(session_id) / 1_000_000

    async def set_cache_sticky(self, session_id: str, provider: str) -> None:
        await self._run(self._ops.set_cache_sticky(session_id, provider))

    async def is_cache_sticky(self, session_id: str) -> bool:
        return await self._run(self._ops.is_cache_sticky(session_id))

    async def transact(
        self,
        session_id: str,
        fn: Transition[T],
        *,
        busy_timeout_ms: float | None = None,
        links: Mapping[str, str] | None = None,
        event: EventOf | None = None,
    ) -> T:
        return await self._run(self._ops.transact(session_id, fn, busy_timeout_ms, links, event))

    async def get_events(self, session_id: str) -> list[str]:
        return await self._run(self._ops.get_events(session_id))

    async def resolve_link(self, name: str) -> str | None:
        return await self._run(self._ops.resolve_link(name))

    async def list_sessions(
        self, scope: str | None = "", *, limit: int = 100, cursor: str = ""
    ) -> SessionPage:
        """`RedisSessionStore.list_sessions`."""
        return await self._run(self._ops.list_sessions(scope, limit, cursor))

    async def ping(self) -> bool:
        """True when Redis answers a PING."""
        try:
            return bool(await self._client.ping())
        except RedisError:
            return False

    async def aclose(self) -> None:
        """Close the store's connection pool and its connections. Idempotent."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._pool.release(conn)
        await self._client.aclose()
        if self._pool is not None:
            await self._pool.disconnect()
        for watcher in _sentinels(self._pool):
            await watcher.aclose()

    async def __aenter__(self) -> AsyncRedisSessionStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
