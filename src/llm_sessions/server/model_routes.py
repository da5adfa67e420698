"""Where a model goes: which upstream serves a model on an API, the id it is sent as, the
models an endpoint may be asked for (an explicit model no upstream of the API takes, or
one without a price under a cap, is refused before the session), and the model objects
``GET /v1/models`` lists."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from .callers import headers_for, may_serve
from .rejections import Reject
from .settings import Settings
from .upstream import Upstream
from .wire import Wire

if TYPE_CHECKING:
    from .gateway import Gateway

__all__ = [
    "after",
    "check_api",
    "check_explicit_model",
    "model_objects",
    "route",
    "served_on",
    "serves",
    "takes_caller",
]


def serves(settings: Settings, model: str, wire: Wire) -> bool:
    """`model`'s upstream takes a request of the wire's API, itself or translated."""
    return settings.sends_as(model, wire.api) is not None


def served_on(settings: Settings, model: str, wire: Wire) -> str | None:
    """`model` if an upstream of the wire's API serves it, else the first model after it
    in a tier chain that holds it that one does (as a turn of that API on a session
    pinned to `model` would be served); None when there is none."""
    return next((m for m in (model, *after(settings, model)) if serves(settings, m, wire)), None)


def after(settings: Settings, model: str) -> list[str]:
    """The models after `model` in the tier chains that hold it: where a turn of a
    session pinned to it may go when it can't."""
    chains = [t.chain for t in settings.tiers.values() if model in t.chain]
    return [m for chain in chains for m in chain[chain.index(model) + 1 :]]


def route(
    gateway: Gateway, model: str, request: Request, passed: tuple[str, ...] = ()
) -> tuple[Upstream, str, dict[str, str]]:
    """The client of `model`'s upstream, the id it is sent as, and the headers to
    send: the client's own that are `passed` on, and its key where the upstream
    forwards callers' keys; 403 when that upstream may not serve this caller."""
    found = gateway.settings.route(model)
    assert found is not None  # callers keep to models that `serves`
    upstream, sent_as = found
    if not may_serve(upstream, request, gateway.forwarded_key_headers):
        raise Reject(
            403,
            f"model {model[:256]!r} goes to an upstream that does not take this caller's key "
            "(a key goes only to the upstreams that forward keys from the header it came in)",
            "permission_error",
            code="client_key_not_accepted",
        )
    return gateway.upstreams[upstream.name], sent_as, headers_for(upstream, request, passed)


def takes_caller(gateway: Gateway, model: str, request: Request) -> bool:
    """`model`'s upstream may serve this caller (`callers.may_serve`)."""
    found = gateway.settings.route(model)
    return found is not None and may_serve(found[0], request, gateway.forwarded_key_headers)


def check_api(settings: Settings, wire: Wire) -> None:
    """400 when no upstream of this gateway serves the wire's API."""
    if wire.api not in settings.apis:
        raise Reject(
            400,
            f"no upstream of this gateway serves the {wire.api} API (it serves: "
            f"{', '.join(settings.apis)}); the models {settings.models} can't "
            "be reached through it",
            param="model",
        )


def check_explicit_model(gateway: Gateway, body: dict[str, Any], wire: Wire) -> None:
    """An explicit model no upstream of this API takes, or one without a price under a
    cap (its worst case would be 0: the cap would not hold): refused before the
    session."""
    model = body.get("model")
    if not isinstance(model, str) or not model or model in gateway.settings.profiles:
        return
    if not serves(gateway.settings, model, wire):
        raise Reject(
            400,
            f"model {model[:256]!r} does not go to an upstream that serves the {wire.api} API",
            param="model",
        )
    if gateway.policy.cap_micros is not None and model not in gateway.policy.pricing:
        raise Reject(
            400,
            f"model {model[:256]!r} has no price in this gateway's pricing, and sessions "
            "have a cost cap: only priced models can be named",
            param="model",
        )


def model_objects(settings: Settings) -> dict[str, dict[str, Any]]:
    """The routing profiles, then every model of the routing table, in OpenAI's model
    object shape, each with the APIs it can be reached through (built at start-up), and
    which of those are translated, into what API."""
    created = int(time.time())
    objects = {}
    for model in [*settings.profiles, *settings.models]:
        translated: dict[str, str] = {}
        if model in settings.profiles:
            apis = list(settings.apis)
        else:
            sent = {a: settings.sends_as(model, a) for a in settings.apis}
            apis = [a for a, target in sent.items() if target is not None]
            translated = {a: t for a, t in sent.items() if t is not None and t != a}
        objects[model] = {"id": model, "object": "model", "created": created,
                          "owned_by": "llm-sessions", "apis": apis}  # fmt: skip
        if translated:  # the APIs it is reached through by translation, and into what
            objects[model]["translated"] = translated
    return objects
