"""Starting a gateway in front of a stand-in upstream, for the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
import openai

from llm_sessions import Pricing, routing_table
from llm_sessions.server import Gateway
from llm_sessions.server.run import running
from llm_sessions.server.settings import Settings, UpstreamSettings
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


@dataclass
class Running:
    url: str
    standin: StandIn
    gateway: Gateway

    def client(self, key: str = "sk-test", **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **kw)

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
    upstream = UpstreamSettings(base_url=f"{upstream_url}/v1", api_key_env="TEST_UPSTREAM_KEY")
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
        yield Running(url, standin, gateway)


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}
