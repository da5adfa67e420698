"""Fixtures shared by the suite: a fake clock and every store kind, built the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from llm_sessions import (
    AsyncRedisSessionStore,
    AsyncSessionStore,
    Config,
    RedisSessionStore,
    SessionStore,
)

from helpers import FakeClock, SyncFacade
from redis_server import RedisClusterServers, RedisSentinelServers, RedisServer

# "redis-cluster": a Redis Cluster of 3 masters and 3 replicas (redis+cluster://), where
# a script that touches keys of two slots fails with CROSSSLOT; "redis-sentinel": a
# primary, a replica and 3 sentinels (redis+sentinel://). Each sync and asyncio.
STORE_KINDS = [
    "memory", "async-memory", "redis", "async-redis",
    "redis-cluster", "async-redis-cluster", "redis-sentinel", "async-redis-sentinel",
]  # fmt: skip

StoreFactory = Callable[..., Any]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the whole run. Never skipped: if it can't start, the
    run fails."""
    server = RedisServer(Path(tmp_path_factory.mktemp("redis"))).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A private Redis Cluster: 3 masters, 3 replicas, on loopback ports."""
    cluster = RedisClusterServers(Path(tmp_path_factory.mktemp("redis-cluster"))).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisClusterServers) -> str:
    """The cluster's ``redis+cluster://`` URL, every master emptied."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelServers]:
    """A private Sentinel set-up: a primary, a replica, 3 sentinels, on loopback ports."""
    servers = RedisSentinelServers(Path(tmp_path_factory.mktemp("redis-sentinel"))).start()
    yield servers
    servers.stop()


@pytest.fixture
def redis_sentinel_url(redis_sentinel: RedisSentinelServers) -> str:
    """The set-up's ``redis+sentinel://`` URL, its primary emptied."""
    redis_sentinel.flush()
    return redis_sentinel.url


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The private server's URL, with an empty database."""
    client = redis.Redis(port=redis_server.port)
    client.flushall()
    client.close()
    return redis_server.url


def _build(
    kind: str, config: Config, clock: Any, loop: asyncio.AbstractEventLoop, url: str, **kw: Any
) -> Any:
    if kind == "memory":
        return SessionStore(config, clock=clock)
    if kind == "async-memory":
        return SyncFacade(AsyncSessionStore(config, clock=clock), loop)
    if kind.startswith("async-redis"):
        return SyncFacade(AsyncRedisSessionStore(url, config, clock=clock, **kw), loop)
    if kind.startswith("redis"):
        return RedisSessionStore(url, config, clock=clock, **kw)
    raise AssertionError(kind)


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(
    store_kind: str, clock: FakeClock, request: pytest.FixtureRequest
) -> Iterator[StoreFactory]:
    """make_store(config=None, clock=<the test's FakeClock>, **store kwargs) -> a store of
    this kind, sync or behind a `SyncFacade`; all are closed at the end of the test."""
    url = ""
    if store_kind.endswith("redis-cluster"):
        url = request.getfixturevalue("redis_cluster_url")
    elif store_kind.endswith("redis-sentinel"):
        url = request.getfixturevalue("redis_sentinel_url")
    elif "redis" in store_kind:
        url = request.getfixturevalue("redis_url")
    loop = asyncio.new_event_loop()
    made: list[Any] = []

    def make(config: Config | None = None, **kw: Any) -> Any:
        cfg = config or Config(cleanup_interval_ms=0)
        use_clock = kw.pop("clock", clock)
        store = _build(store_kind, cfg, use_clock, loop, url, **kw)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()
    loop.close()


@pytest.fixture
def store(make_store: StoreFactory) -> Any:
    return make_store()


@pytest.fixture
def make_policy(make_store: StoreFactory) -> Callable[..., tuple[Any, Any]]:
    """make_policy(tiers=TIERS, config=None, **policy kwargs) -> (policy, store): a
    `SessionPolicy` over this test's store kind; async kinds run abegin/afinish."""
    from llm_sessions import SessionPolicy

    from helpers import PolicyFacade

    def make(tiers: Any = None, config: Config | None = None, **kw: Any) -> tuple[Any, Any]:
        store = make_store(config)
        inner = getattr(store, "store", store)
        policy = SessionPolicy(inner, TIERS if tiers is None else tiers, **kw)
        if inner is not store:
            return PolicyFacade(policy, store.loop), store
        return policy, store

    return make


TIERS = {
    "SIMPLE": {"primary": "openai/s1", "fallback": ["groq/s2"]},
    "MEDIUM": {"primary": "anthropic/m1", "fallback": ["openai/m2"]},
    "COMPLEX": {"primary": "anthropic/c1", "fallback": ["openai/c2", "google/c3"]},
    "REASONING": {"primary": "openai/r1", "fallback": ["anthropic/r2"]},
}
