"""Failovers under load: two gateway processes, a cap on, requests all along, and a Redis
Cluster master killed (SIGKILL) or a Sentinel failover forced in the middle. The clients
see 200s and, while the store can't be written, the documented 503 of a capped request;
nothing is billed twice; the gateways recover by themselves. (The figures: bench/
failover_bench.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import failover

from redis_server import RedisClusterServers, RedisSentinelServers


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A cluster of the test's own: it loses a master."""
    cluster = RedisClusterServers(tmp_path / "cluster").start()
    yield cluster
    cluster.stop()


def _check(report: failover.Report, capped: bool) -> None:
    assert report.served > 100, report.line()
    allowed = {200, 503} if capped else {200}
    assert set(report.statuses) <= allowed, report.line()
    assert report.over_billed == 0, report.line()  # billed once
    assert report.failed_late == 0, report.line()  # recovered within after_s - 3 s


@pytest.mark.parametrize("capped", [True, False], ids=["cap", "no-cap"])
def test_a_cluster_master_killed_mid_load(
    capped: bool, own_cluster: RedisClusterServers, tmp_path: Path
) -> None:
    victim = own_cluster.primaries()[0]
    report = failover.run(
        tmp_path, own_cluster.url, victim.kill, cap=capped, before_s=1.5, after_s=8
    )
    _check(report, capped)
    assert (report.unrecorded > 0) != capped, report.line()  # uncapped: served regardless


def test_a_sentinel_failover_mid_load(
    redis_sentinel_url: str, redis_sentinel: RedisSentinelServers, tmp_path: Path
) -> None:
    before = redis_sentinel.current_primary_port()

    def fault() -> None:
        watcher = redis.Redis(port=redis_sentinel.sentinel_ports[0])
        watcher.execute_command("SENTINEL", "FAILOVER", redis_sentinel.service)
        watcher.close()

    report = failover.run(tmp_path, redis_sentinel_url, fault, before_s=1.5, after_s=8)
    assert redis_sentinel.current_primary_port() != before
    _check(report, capped=True)
    assert report.lost_sessions == 0 and report.backwards == 0, report.line()
