"""Failovers under load, measured: two gateway processes, 8 client threads on 48 sessions,
a fault 2 s in, 8 s more; for each, what the clients saw and what the store kept.

    python bench/failover_bench.py

Faults: a Redis Cluster master killed (SIGKILL; 3 masters, 3 replicas, node timeout
1 s), a Sentinel failover forced (SENTINEL FAILOVER), a Sentinel primary killed (down
after 1 s); with a cap (a request the store can't check is a 503) and without (served,
its cost not recorded), with `store.wait_replicas` 0 and 1.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import failover

from redis_server import RedisClusterServers, RedisSentinelServers


def cluster_kill(work: Path, cap: bool, wait: int) -> str:
    cluster = RedisClusterServers(work / "cluster").start()
    try:
        victim = cluster.primaries()[0]
        return failover.run(work, cluster.url, victim.kill, cap=cap, wait_replicas=wait).line()
    finally:
        cluster.stop()


def _sentinel(
    work: Path, cap: bool, wait: int, fault: Callable[[RedisSentinelServers], None]
) -> str:
    servers = RedisSentinelServers(work / "sentinel").start()
    try:
        report = failover.run(
            work, servers.url, lambda: fault(servers), cap=cap, wait_replicas=wait
        )
        return report.line()
    finally:
        servers.stop()


def forced(servers: RedisSentinelServers) -> None:
    watcher = redis.Redis(port=servers.sentinel_ports[0])
    watcher.execute_command("SENTINEL", "FAILOVER", servers.service)
    watcher.close()


def killed(servers: RedisSentinelServers) -> None:
    servers.primary.kill()


def main() -> None:
    for name, run in (
        ("cluster: master killed", cluster_kill),
        ("sentinel: failover forced", lambda w, c, n: _sentinel(w, c, n, forced)),
        ("sentinel: primary killed", lambda w, c, n: _sentinel(w, c, n, killed)),
    ):
        for cap in (True, False):
            for wait in (0, 1):
                work = Path(tempfile.mkdtemp(prefix="failover-"))
                line = run(work, cap, wait)
                print(f"{name}, {'cap' if cap else 'no cap'}, wait_replicas={wait}: {line}",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
