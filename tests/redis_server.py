"""A private redis-server for the tests: a free loopback port, its own directory."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis


class CountingConnection(redis.Connection):
    """Counts socket writes: one per round trip (a pipeline is sent in one write); `last`
    is what the latest one sent."""

    sends = 0
    last = b""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        type(self).last = command if isinstance(command, bytes) else b"".join(command)
        super().send_packed_command(command, check_health)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``redis-server`` on 127.0.0.1; `restart()` keeps the port and the data directory."""

    def __init__(self, directory: Path, *extra: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: `make test` installs it with apt-get"
            )
        self.binary = binary
        self.directory = directory
        self.extra = extra
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 15
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {' '.join(args)}") from None
                time.sleep(0.02)
        client.close()
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


def _wait(check: Any, what: str, seconds: float = 30) -> None:
    """Poll `check()` until true (redis errors count as not yet)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {seconds} s")
        time.sleep(0.05)


def _in_sync(info: dict[str, Any]) -> bool:
    return bool(info["master_link_status"] == "up" and not info["master_sync_in_progress"])


def _replicas_in_sync(nodes: list[RedisServer]) -> None:
    """Wait until every replica among `nodes` has its primary's data and follows it (a
    WAIT before then times out: the first sync is still under way)."""
    for node in nodes:
        client = node.client()
        info = client.info("replication")
        if info["role"] == "slave":
            _wait(lambda c=client: _in_sync(c.info("replication")), f"replica {node.port} in sync")
        client.close()
    for node in nodes:
        client = node.client()
        if client.info("replication")["role"] == "master":
            _wait(lambda c=client: c.execute_command("WAIT", 1, 1000) >= 1,
                  f"primary {node.port} acknowledged by its replica")  # fmt: skip
        client.close()


class RedisClusterServers:
    """A Redis Cluster on loopback: `masters` masters, each with `replicas` replicas, made
    by ``redis-cli --cluster create``. Each node is a `RedisServer` (`nodes`)."""

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 1) -> None:
        self.directory = directory
        self.masters, self.replicas = masters, replicas
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[: self.masters])
        return f"redis+cluster://{hosts}"

    def start(self) -> RedisClusterServers:
        for i in range(self.masters * (1 + self.replicas)):
            node = RedisServer(
                self.directory / f"node{i}",
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "1000",  # a master down this long fails over
                "--cluster-port", str(free_port()),
                "--cluster-replica-validity-factor", "0",  # any replica may take over
            )  # fmt: skip
            self.nodes.append(node.start())
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed: `make test` installs it")
        hosts = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *hosts, "--cluster-replicas", str(self.replicas),
             "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
        )  # fmt: skip
        for node in self.nodes:
            client = node.client()
            _wait(lambda c=client: b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO"),
                  f"cluster node {node.port} ok")  # fmt: skip
            client.close()
        _replicas_in_sync(self.nodes)
        return self

    def primaries(self) -> list[RedisServer]:
        """The nodes that are masters now."""
        found = []
        for node in self.nodes:
            if node.process is None:
                continue
            client = node.client()
            try:
                if client.info("replication")["role"] == "master":
                    found.append(node)
            except redis.RedisError:
                pass
            finally:
                client.close()
        return found

    def flush(self) -> None:
        for node in self.primaries():
            client = node.client()
            client.flushall()
            client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RedisSentinelServers:
    """A primary, `replicas` replicas and `sentinels` sentinels on loopback, the primary
    watched as `service`. `primary` is the node that was primary when it started."""

    def __init__(
        self, directory: Path, replicas: int = 1, sentinels: int = 3, service: str = "mymaster"
    ) -> None:
        self.directory, self.service = directory, service
        self.primary = RedisServer(directory / "primary")
        self.replica_nodes = [RedisServer(directory / f"replica{i}") for i in range(replicas)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}"

    def start(self) -> RedisSentinelServers:
        self.primary.start()
        for node in self.replica_nodes:
            node.extra = ("--replicaof", "127.0.0.1", str(self.primary.port))
            node.start()
        for i, port in enumerate(self.sentinel_ports):
            conf = self.directory / f"sentinel{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.service} 1000\n"
                f"sentinel failover-timeout {self.service} 5000\n"
            )
            binary = shutil.which("redis-sentinel") or self.primary.binary
            self.sentinels.append(subprocess.Popen(
                [binary, str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        _replicas_in_sync([self.primary, *self.replica_nodes])
        for port in self.sentinel_ports:
            client = redis.Redis(port=port)
            _wait(lambda c=client: len(c.execute_command("SENTINEL", "REPLICAS", self.service))
                  >= len(self.replica_nodes)
                  and len(c.execute_command("SENTINEL", "SENTINELS", self.service))
                  >= len(self.sentinel_ports) - 1, f"sentinel {port} sees every node")  # fmt: skip
            client.close()
        return self

    def current_primary_port(self) -> int:
        client = redis.Redis(port=self.sentinel_ports[0])
        try:
            _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            return int(port)
        finally:
            client.close()

    def flush(self) -> None:
        client = redis.Redis(port=self.current_primary_port())
        client.flushall()
        client.close()

    def stop(self) -> None:
        for proc in self.sentinels:
            proc.terminate()
        for proc in self.sentinels:
            proc.wait(10)
        self.sentinels = []
        for node in (self.primary, *self.replica_nodes):
            node.stop()
