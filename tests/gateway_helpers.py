"""Starting a gateway in front of a stand-in upstream, for the end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import openai

from llm_sessions import Pricing, routing_table
from llm_sessions.server import Gateway
from llm_sessions.server.run import running
from llm_sessions.server.settings import Settings, UpstreamSettings, load_settings
from llm_sessions.server.standin import StandIn

TIERS = routing_table(
    {
        "SIMPLE": {"primary": "openai/s1", "fallback": ["groq/s2"]},
        "MEDIUM": {"primary": "anthropic/m1", "fallback": ["openai/m2"]},
        "COMPLEX": {"primary": "anthropic/c1", "fallback": ["openai/c2", "google/c3"]},
        "REASONING": {"primary": "openai/r1", "fallback": ["anthropic/r2"]},
    }
)
PRICES = {m: Pricing(1, 2) for t in TIERS.values() for m in t.chain}

#: A gateway.toml of one upstream serving one model ("m/m", 1 and 2 USD per million input
#: and output tokens) on a store; `{extra}` is more TOML for the end ([store] is open).
ONE_MODEL_TOML = """
[upstream]
base_url = "{upstream}/v1"
apis = ["chat", "messages", "responses"]

[routing.tiers.SIMPLE]
primary = "m/m"

[pricing."m/m"]
input_per_mtok = 1
output_per_mtok = 2

[store]
url = "{store}"
{extra}
"""
ONE_MODEL_PRICE = Pricing(1, 2)


@dataclass
class Running:
    url: str
    standin: StandIn
    gateway: Gateway
    clients: list[openai.OpenAI] = field(default_factory=list)

    def client(self, key: str = "sk-test", **kw: Any) -> openai.OpenAI:
        """An SDK client of the gateway, closed when the gateway stops."""
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **kw)
        self.clients.append(client)
        return client

    def http(self, key: str | None = "sk-test") -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def session(self, session_id: str, key: str | None = "sk-test") -> dict[str, Any] | None:
        with self.http(key) as http:
            reply = http.get(f"/v1/sessions/{session_id}")
        if reply.status_code == 404:
            return None
        reply.raise_for_status()
        return dict(reply.json())


def settings_for(upstream_url: str, **overrides: Any) -> Settings:
    upstream = UpstreamSettings(
        base_url=f"{upstream_url}/v1",
        api_key_env="TEST_UPSTREAM_KEY",
        apis=("chat", "messages", "responses", "embeddings"),
    )
    upstream = replace(upstream, **overrides.pop("upstream", {}))
    base = Settings(upstream=upstream, tiers=TIERS, pricing=PRICES)
    return replace(base, **overrides)


@contextmanager
def gateway_with_standin(**overrides: Any) -> Iterator[Running]:
    """A stand-in upstream and a gateway in front of it, both on loopback ports."""
    standin = StandIn()
    with ExitStack() as stack:
        upstream_url = stack.enter_context(running(standin.app()))
        gateway = Gateway(settings_for(upstream_url, **overrides))
        url = stack.enter_context(running(gateway.app()))
        gw = Running(url, standin, gateway)
        try:
            yield gw
        finally:
            for client in gw.clients:
                client.close()


@contextmanager
def gateway_over_standins(
    directory: Path, template: str, names: tuple[str, ...], **fields: str
) -> Iterator[tuple[str, dict[str, StandIn], Gateway]]:
    """A stand-in upstream per name, and a gateway configured by `template` (TOML, with
    each name's ``{name}`` filled with that stand-in's URL, and `fields`); yields the
    gateway's URL, the stand-ins by name, and the gateway."""
    standins = {name: StandIn() for name in names}
    with ExitStack() as stack:
        urls = {name: stack.enter_context(running(s.app())) for name, s in standins.items()}
        path = directory / "gateway.toml"
        path.write_text(template.format(**urls, **fields))
        gateway = Gateway(load_settings(path))
        yield stack.enter_context(running(gateway.app())), standins, gateway


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


def wait_until_up(url: str, proc: subprocess.Popen[Any] | None = None) -> None:
    """Poll `url` until it answers at all (within 30 s, and while `proc` is alive)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            raise AssertionError(f"{url} did not come up")
        time.sleep(0.05)


@contextmanager
def gateway_processes(directory: Path, toml: str, count: int = 2) -> Iterator[list[int]]:
    """`count` `llm-sessions serve` processes with the configuration `toml`, on free
    loopback ports (each logs to gateway-PORT.log in `directory`); yields the ports once
    every one answers /health."""
    from redis_server import free_port

    config = directory / "gateway.toml"
    config.write_text(toml)
    ports = [free_port() for _ in range(count)]
    command = [sys.executable, "-m", "llm_sessions", "serve", "--config", str(config)]
    with ExitStack() as stack:
        procs = []
        for port in ports:
            log = stack.enter_context(open(directory / f"gateway-{port}.log", "wb"))
            proc = subprocess.Popen(
                [*command, "--port", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "OPENAI_API_KEY": "sk-x"},
            )
            procs.append(proc)
        try:
            for port, proc in zip(ports, procs, strict=True):
                wait_until_up(f"http://127.0.0.1:{port}/health", proc)
            yield ports
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(15)


@contextmanager
def standin_process(apis: str = "chat,messages,responses") -> Iterator[str]:
    """The stand-in upstream (`llm-sessions standin`, serving `apis`) in a process of its
    own, for load that must not share this process's GIL; yields its base URL."""
    from redis_server import free_port

    port = free_port()
    command = [sys.executable, "-m", "llm_sessions", "standin", "--port", str(port),
               "--apis", apis]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(15)
