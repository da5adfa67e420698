"""Prometheus metrics of one gateway (a registry of its own, so apps never collide)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self, store_errors: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "llm_sessions_requests",
            "Chat requests routed, by decision reason",
            ["reason"],
            registry=r,
        )
        self.responses = Counter(
            "llm_sessions_responses", "Chat responses, by HTTP status", ["status"], registry=r
        )
        self.escalations = Counter(
            "llm_sessions_escalations", "Looping sessions moved one tier up", registry=r
        )
        self.cache_sticky = Counter(
            "llm_sessions_cache_sticky_activations", "Sessions that turned cache-sticky", registry=r
        )
        self.budget_rejections = Counter(
            "llm_sessions_budget_rejections", "Requests refused by a session budget", registry=r
        )
        self.upstream_errors = Counter(
            "llm_sessions_upstream_errors",
            "Failed upstream attempts, by kind (status code, connect, timeout)",
            ["kind"],
            registry=r,
        )
        self.fallbacks = Counter(
            "llm_sessions_fallbacks", "Requests served by a fallback model", registry=r
        )
        self.cost = Counter(
            "llm_sessions_session_cost_usd", "Cost charged to sessions, in USD", registry=r
        )
        self.cache_read_tokens = Counter(
            "llm_sessions_cache_read_tokens",
            "Prompt tokens read from a provider's prompt cache, by provider",
            ["provider"],
            registry=r,
        )
        self.cache_savings = Counter(
            "llm_sessions_cache_savings_usd",
            "What cache reads would have cost at the input price, less what they cost (USD)",
            registry=r,
        )
        self.embeddings_cost = Counter(
            "llm_sessions_embeddings_cost_usd",
            "Cost of embeddings passed through, by tenant (the first 8 characters of its "
            "scope; none without a key), in USD",
            ["tenant"],
            registry=r,
        )
        self.unrecorded_cost = Counter(
            "llm_sessions_unrecorded_cost_usd",
            "Cost of served requests that could not be recorded (the store stayed down)",
            registry=r,
        )
        self.store_refusals = Counter(
            "llm_sessions_store_refusals",
            "Requests answered 503 because of the store, by code",
            ["code"],
            registry=r,
        )
        self.store_errors = Gauge(
            "llm_sessions_store_errors", "Times the session store could not be reached", registry=r
        )
        self.store_errors.set_function(store_errors)
        self.latency = Histogram(
            "llm_sessions_request_seconds",
            "Time to the response's first byte, by whether it streams",
            ["stream"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
