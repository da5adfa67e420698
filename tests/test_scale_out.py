"""Redis Cluster and Sentinel beyond the conformance suite: every key of a session in one
slot, `wait_replicas`, and what a store does across a failover."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from llm_sessions import AsyncRedisSessionStore, Config, RedisSessionStore, Tier

from redis_server import RedisClusterServers, RedisSentinelServers

CFG = Config(cleanup_interval_ms=0)


def _each_write(store: Any) -> int:
    """Every kind of session write once, through `store` (sync); the cost it ends with."""
    store.set_session("s", "m", Tier.SIMPLE)
    store.record_request_hash("s", "h")
    store.escalate_session("s")
    store.set_cache_sticky("s", "openai")
    store.touch_session("s")
    return int(store.add_session_cost("s", 7))


def _sync_and_async(url: str, **kw: Any) -> list[tuple[int, int]]:
    """(cost, writes fewer replicas than asked acknowledged) from a sync and an async store."""
    sync = RedisSessionStore(url, CFG, **kw)
    try:
        results = [(_each_write(sync), sync.unreplicated)]
    finally:
        sync.close()

    async def run() -> tuple[int, int]:
        async with AsyncRedisSessionStore(url, CFG, **kw) as store:
            await store.set_session("a", "m", Tier.SIMPLE)
            await store.record_request_hash("a", "h")
            await store.touch_session("a")
            cost = await store.add_session_cost("a", 7)
            return cost, store.unreplicated

    results.append(asyncio.run(run()))
    return results


@pytest.mark.parametrize("kind", ["redis_cluster", "redis_sentinel"])
def test_wait_replicas_writes_and_waits_for_a_replica(
    kind: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{kind}_url")
    assert _sync_and_async(url, wait_replicas=1, wait_timeout_ms=400) == [(7, 0), (7, 0)]


def test_wait_replicas_past_what_there_is_counts_and_keeps_the_write(redis_url: str) -> None:
    """One server has no replica: each write waits its timeout, stands, and is counted."""
    results = _sync_and_async(redis_url, wait_replicas=1, wait_timeout_ms=5)
    assert [cost for cost, _ in results] == [7, 7]
    assert all(counted >= 4 for _, counted in results)  # each write (at least 4 of each)


def test_wait_replicas_is_checked(redis_url: str) -> None:
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="wait_replicas"):
            RedisSessionStore(redis_url, CFG, wait_replicas=bad)  # type: ignore[arg-type]


def test_a_sessions_keys_share_its_slot_on_the_cluster(
    redis_cluster_url: str, redis_cluster: RedisClusterServers
) -> None:
    """Sessions spread over every master (their digests are their hash tags), and the
    listing finds each of them, scanning each master in turn."""
    store = RedisSessionStore(redis_cluster_url, CFG)
    ids = [f"s{i}" for i in range(60)]
    for sid in ids:
        store.add_session_cost(f"t:{sid}" if int(sid[1:]) % 2 else sid, 1)
    holding = []
    for node in redis_cluster.primaries():
        client = node.client()
        holding.append(len(client.keys("*")))
        client.close()
    assert all(count > 0 for count in holding), holding
    assert sum(holding) == 60
    listed = store.list_sessions(None, limit=1000).sessions
    assert sorted(row.id for row in listed) == sorted(ids)
    assert len(store.list_sessions("t", limit=1000).sessions) == 30
    store.close()


def test_sentinel_follows_a_failover(
    redis_sentinel_url: str, redis_sentinel: RedisSentinelServers
) -> None:
    """After `SENTINEL FAILOVER` the store reads and writes the new primary, which has
    the write made before (`wait_replicas`). A call may fail (`StoreUnavailable`) while it
    happens; only reads are tried again here, since a write that failed may have landed."""
    import time

    from llm_sessions.errors import StoreUnavailable

    store = RedisSessionStore(redis_sentinel_url, CFG, wait_replicas=1, wait_timeout_ms=300)
    store.add_session_cost("s", 5)
    before = redis_sentinel.current_primary_port()
    watcher = redis.Redis(port=redis_sentinel.sentinel_ports[0])
    watcher.execute_command("SENTINEL", "FAILOVER", redis_sentinel.service)
    watcher.close()
    deadline = time.monotonic() + 30
    while redis_sentinel.current_primary_port() == before:
        assert time.monotonic() < deadline, "no failover"
        time.sleep(0.1)
    while True:
        try:
            seen = store.get_session_cost_micros("s")
            if store._client.connection_pool.get_master_address()[1] != before:
                break
        except StoreUnavailable:
            pass
        assert time.monotonic() < deadline, "the store never reached the new primary"
        time.sleep(0.1)
    assert seen == 5  # the write before the failover reached the replica
    assert store.add_session_cost("s", 5) == 10
    store.close()


def test_wait_timeout_must_end_before_the_socket_timeout(redis_url: str) -> None:
    """A WAIT still running when the socket times out would make a write that landed look
    like an outage, and a caller that tries it again would count it twice."""
    with pytest.raises(ValueError, match="wait_timeout_ms"):
        RedisSessionStore(redis_url, CFG, wait_replicas=1, wait_timeout_ms=500)
    RedisSessionStore(redis_url, CFG, wait_replicas=1, wait_timeout_ms=499).close()
    store = RedisSessionStore(
        redis_url, CFG, wait_replicas=1, wait_timeout_ms=900, socket_timeout=1
    )
    store.close()


def _commands_run(nodes: list[Any]) -> tuple[int, int]:
    """(scripts, cluster topology reads) the nodes ran: each script is one round trip of
    the store (the commands it runs inside are not), and a topology read would be one more."""
    scripts = topology = 0
    for node in nodes:
        client = node.client()
        for name, stat in client.info("commandstats").items():
            if name.startswith("cmdstat_eval"):
                scripts += int(stat["calls"])
            elif name.startswith("cmdstat_cluster"):
                topology += int(stat["calls"])
        client.close()
    return scripts, topology


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("kind", ["redis_cluster", "redis_sentinel"])
def test_a_routed_request_is_two_round_trips_in_the_steady_state(
    kind: str, flavour: str, request: pytest.FixtureRequest
) -> None:
    """On a cluster and behind Sentinel as on one server, sync or asyncio: begin and
    finish each one command, on the session's node (counted by the servers themselves),
    the turn's event in the session's log included."""
    from llm_sessions import Pricing, SessionPolicy

    from conftest import TIERS
    from helpers import PolicyFacade, SyncFacade

    url = request.getfixturevalue(f"{kind}_url")
    servers = request.getfixturevalue(kind)
    nodes = servers.nodes if kind == "redis_cluster" else [servers.primary, *servers.replica_nodes]
    nodes = [n for n in nodes if n.process is not None]
    prices = {
        m: Pricing(1, 2) for t in TIERS.values() for m in [t["primary"], *t.get("fallback", [])]
    }
    loop = asyncio.new_event_loop()
    store: Any
    if flavour == "sync":
        store = RedisSessionStore(url, CFG)
        policy: Any = SessionPolicy(store, TIERS, pricing=prices, max_session_cost_usd=100)
    else:
        store = SyncFacade(AsyncRedisSessionStore(url, CFG), loop)
        inner = SessionPolicy(store.store, TIERS, pricing=prices, max_session_cost_usd=100)
        policy = PolicyFacade(inner, loop)

    def turn(i: int) -> None:
        body = {"messages": [{"role": "user", "content": f"turn {i}"}]}
        decision = policy.begin({"x-session-id": "s"}, body)
        policy.finish(decision, served_model=decision.model, cost_micros=5)

    try:
        turn(0)
        turn(1)  # scripts loaded on the node, the session known
        scripts, topology = _commands_run(nodes)
        for i in range(2, 12):
            turn(i)
        assert _commands_run(nodes) == (scripts + 2 * 10, topology)
        assert store.get_session_cost_micros("s") == 12 * 5
        # each turn's event went in its finish's compare-and-set: no command of its own
        totals = [e["total_micros"] for e in policy.events("s")]
        assert totals == [5 * (i + 1) for i in range(12)]
    finally:
        store.close()
        loop.close()


def test_behind_sentinel_a_busy_pool_waits_as_one_servers_does(redis_sentinel_url: str) -> None:
    """Past `max_connections`, a call waits for a free connection instead of failing as
    if Redis were down (Sentinel's own pool would refuse it at once)."""
    from concurrent.futures import ThreadPoolExecutor

    store = RedisSessionStore(redis_sentinel_url, CFG, max_connections=1)
    try:
        with ThreadPoolExecutor(8) as pool:
            costs = list(pool.map(lambda i: store.add_session_cost(f"s{i % 2}", 1), range(200)))
        assert sorted(costs)[-1] == 100 and store.get_session_cost_micros("s0") == 100
    finally:
        store.close()


def test_the_gateway_refuses_a_wait_longer_than_a_reply_may_take(tmp_path: Any) -> None:
    from llm_sessions.server.settings import ConfigError, load_settings

    path = tmp_path / "gateway.toml"
    path.write_text("[store]\nwait_replicas = 1\nwait_timeout_ms = 800\nsocket_timeout_s = 0.5\n")
    with pytest.raises(ConfigError, match=r"store\.wait_timeout_ms"):
        load_settings(path)
    path.write_text("[store]\nwait_replicas = 1\nwait_timeout_ms = 800\nsocket_timeout_s = 1\n")
    assert load_settings(path).store_wait_timeout_ms == 800
