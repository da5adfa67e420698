"""Endpoints passed through without session rules: embeddings, model lookups, and a 404
that says what the gateway serves."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from gateway_helpers import chat, gateway_with_standin
from llm_sessions import Pricing
from llm_sessions.server.standin import Behaviour


def test_embeddings_go_to_the_upstream_with_tenancy_and_cost() -> None:
    prices = {"text-embedding-3-small": Pricing("0.02", 0)}
    with gateway_with_standin(
        upstream={"apis": ("chat", "messages", "embeddings")}, pricing=prices
    ) as gw:
        client = gw.client("sk-tenant-a")
        result = client.embeddings.create(model="text-embedding-3-small", input=["a", "bb"])
        with gw.http() as http:
            metrics = http.get("/metrics").text
            sessions = http.get("/v1/sessions").json()["sessions"]
    assert [len(e.embedding) for e in result.data] == [3, 3]
    assert gw.standin.received[-1]["model"] == "text-embedding-3-small"
    assert sessions == []  # no session rules
    line = next(m for m in metrics.splitlines() if m.startswith("llm_sessions_embeddings_cost"))
    assert 'tenant="' in line and float(line.split()[-1]) > 0


def test_embeddings_need_an_upstream_that_serves_them() -> None:
    with (
        gateway_with_standin(upstream={"apis": ("chat", "messages", "responses")}) as gw,
        pytest.raises(openai.BadRequestError) as info,
    ):
        gw.client().embeddings.create(model="text-embedding-3-small", input="x")
    assert "embeddings" in info.value.message
    assert gw.standin.received == []


def test_model_lookups() -> None:
    with gateway_with_standin() as gw:
        client = gw.client()
        auto = client.models.retrieve("auto")
        table = client.models.retrieve("anthropic/c1")
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("no-such-model")
    assert (auto.id, auto.object) == ("auto", "model")
    assert table.id == "anthropic/c1"


def test_an_unknown_path_lists_what_is_served() -> None:
    with gateway_with_standin() as gw:
        reply = httpx.post(f"{gw.url}/v1/assistants", json={"model": "auto", "input": "hi"})
    assert reply.status_code == 404
    message = reply.json()["error"]["message"]
    assert "POST /v1/chat/completions" in message and "POST /v1/messages" in message
    assert "POST /v1/responses" in message


def test_metric_labels_come_from_configuration_only(tmp_path: Path) -> None:
    """A label a client could choose is a series per choice: tenants are the key file's
    (else one bucket), providers the routing table's (else ``other``)."""
    prices = {"text-embedding-3-small": Pricing("0.02", 0), "zzz/explicit": Pricing(1, 1)}
    with gateway_with_standin(upstream={"apis": ("chat", "embeddings")}, pricing=prices) as gw:
        gw.standin.default = Behaviour(cached_tokens=100)
        for i in range(3):
            gw.client(f"sk-tenant-{i}").embeddings.create(model="text-embedding-3-small", input="a")
            with gw.http(f"sk-tenant-{i}") as http:
                http.post("/v1/chat/completions", json=chat("hi", model=f"p{i}/explicit"))
        with gw.http() as http:
            metrics = http.get("/metrics").text.splitlines()
    tenants = [m for m in metrics if m.startswith("llm_sessions_embeddings_cost_usd_total{")]
    assert len(tenants) == 1, tenants
    providers = [m for m in metrics if m.startswith("llm_sessions_cache_read_tokens_total{")]
    assert providers == ['llm_sessions_cache_read_tokens_total{provider="other"} 300.0']


def test_metrics_can_require_an_admin_key(tmp_path: Path) -> None:
    keys = tmp_path / "admin.txt"
    keys.write_text("sk-admin\n")
    with gateway_with_standin(admin_keys_file=str(keys), metrics_admin_only=True) as gw:
        with gw.http("sk-tenant") as http:
            refused = http.get("/metrics")
        with gw.http(None) as http:
            anonymous = http.get("/metrics")
        with gw.http("sk-admin") as http:
            allowed = http.get("/metrics")
    assert (refused.status_code, anonymous.status_code, allowed.status_code) == (403, 403, 200)
    assert "llm_sessions_" in allowed.text
