"""`Gateway`: everything one gateway holds (settings, store, routing flow, upstream
clients, metrics, keys), and who a caller is. Its endpoints live in modules of their own
(`llm`, `stored`, `passthrough`, `operator`), each a few functions of a `Gateway`;
`app` assembles them into the ASGI app."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp

from ..fingerprint import provider_from_model
from ..policy import SessionPolicy
from ..stores.base import AsyncStore
from ..stores.urls import open_async_store
from .callers import bearer, digest, load_api_keys, scope_of
from .console import ConsoleHub
from .metrics import Metrics
from .model_routes import model_objects
from .rejections import Reject
from .settings import Settings
from .upstream import Upstream

__all__ = ["Gateway"]


class Gateway:
    """Everything one gateway holds: settings, store, routing flow, upstream client, metrics."""

    def __init__(self, settings: Settings, *, store: AsyncStore | None = None) -> None:
        self.settings = settings
        self.store = store if store is not None else _open_store(settings)
        self.console = ConsoleHub()
        self.policy = SessionPolicy(
            self.store,
            settings.tiers,
            pricing=settings.pricing,
            profiles=settings.profiles,
            max_session_cost_usd=settings.max_session_cost_usd,
            budget_mode=settings.budget_mode,
            default_max_tokens=settings.default_max_tokens,
            reservation_ttl_ms=settings.reservation_ttl_ms,
            fallback_pin_ms=settings.fallback_pin_ms,
            on_store_error=settings.budget_on_store_error,
            finish_retry_ms=settings.store_finish_retry_ms,
            id_sources=settings.id_sources,
            unknown_state=settings.unknown_state,
            fit_output=settings.fit_output,
            min_output_tokens=settings.min_output_tokens,
            state_holder=self.upstream_of,
            on_event=self.console.turn if settings.console_enabled else None,
        )
        self.upstreams = {up.name: Upstream(up) for up in settings.upstreams}
        self.max_attempts = settings.upstream.max_attempts
        self.metrics = Metrics(lambda: float(getattr(self.store, "errors", 0)))
        self.api_keys = load_api_keys(settings.api_keys_file) if settings.api_keys_file else None
        self.admin_keys = (
            load_api_keys(settings.admin_keys_file) if settings.admin_keys_file else frozenset()
        )
        self.model_objects = model_objects(settings)
        # the caller's headers whose key some upstream forwards (bring your own key)
        self.forwarded_key_headers = frozenset(
            h for up in settings.upstreams if up.forward_client_key for h in up.takes_keys_from
        )
        # some upstream takes a request of another API than its own: translation may be needed
        self.translates = any(
            up.sends_as(api) not in (None, api)
            for up in settings.upstreams
            for api in settings.apis
        )
        # metric labels come from configuration only, never from what a client sends
        self.providers = frozenset(provider_from_model(m) for m in settings.models)

    def app(self) -> ASGIApp:
        """The ASGI app (`app.build`)."""
        from .app import build

        return build(self)

    def upstream_of(self, model: str) -> str:
        """The name of the upstream `model` goes to ("" for none): a stored response's
        state lives there, and only its models can continue it."""
        route = self.settings.route(model)
        return route[0].name if route is not None else ""

    def authorize(self, request: Request) -> str:
        """The caller's scope; 401 when keys are required and this one is not among them."""
        token = bearer(request)
        if self.api_keys is not None and (token is None or digest(token) not in self.api_keys):
            raise Reject(
                401,
                "a valid API key is required (Authorization: Bearer ..., or x-api-key)",
                code="invalid_api_key",
            )
        return scope_of(token)

    def is_admin(self, request: Request) -> bool:
        """The caller's key is one of the admin keys."""
        token = bearer(request)
        return token is not None and digest(token) in self.admin_keys

    def metric_provider(self, model: str) -> str:
        """`model`'s provider as a metric label: one of the routing table's, else "other"."""
        provider = provider_from_model(model)
        return provider if provider in self.providers else "other"


def _open_store(settings: Settings) -> AsyncStore:
    """The store `settings` name (``store.url``), with its options."""
    kwargs: dict[str, Any] = {
        "link_bytes": settings.store_memory_links_mb << 20,
        "event_bytes": settings.store_memory_events_mb << 20,
    }
    if not settings.store_url.startswith("memory:"):
        kwargs = {
            "key_prefix": settings.store_key_prefix,
            "on_error": settings.store_on_error,
            "busy_timeout_ms": settings.store_busy_timeout_ms,
            "socket_timeout": settings.store_socket_timeout_s,
            "max_connections": settings.store_max_connections or settings.upstream.max_connections,
            "wait_replicas": settings.store_wait_replicas,
            "wait_timeout_ms": settings.store_wait_timeout_ms,
        }
    return open_async_store(settings.store_url, settings.sessions, **kwargs)
