"""Who is calling: the caller's key (``Authorization: Bearer`` or ``x-api-key``), the
scope a key puts its sessions in, the key files, and the headers a request carries to
an upstream (the client's own that are passed on, its key where that upstream forwards
callers' keys)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from starlette.requests import Request

from .settings import UpstreamSettings

__all__ = [
    "bearer",
    "caller_key",
    "digest",
    "headers_for",
    "load_api_keys",
    "may_serve",
    "scope_of",
]


def caller_key(request: Request) -> tuple[str, str] | None:
    """The caller's key and the header it came in: ``Authorization: Bearer KEY`` (OpenAI
    clients), else ``x-api-key`` (Anthropic clients, Claude Code); None without one."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), "authorization"
    key = request.headers.get("x-api-key", "").strip()
    return (key, "x-api-key") if key else None


def bearer(request: Request) -> str | None:
    """The caller's key (`caller_key`), or None."""
    found = caller_key(request)
    return found[0] if found is not None else None


def may_serve(upstream: UpstreamSettings, request: Request, forwarded: frozenset[str]) -> bool:
    """Whether `upstream` may serve this caller: a forwarding upstream only a caller whose
    key came in a header it takes keys from (or one without a key); an operator-key
    upstream any caller, except one whose key some forwarding upstream takes (`forwarded`:
    those headers), unless it is configured to (``serve_callers_with_keys``)."""
    found = caller_key(request)
    if found is None:
        return True
    if upstream.forward_client_key:
        return found[1] in upstream.takes_keys_from
    return upstream.serve_callers_with_keys or found[1] not in forwarded


def digest(token: str | None) -> str:
    """The SHA-256 hex digest a key file holds for `token` (that of "" for none)."""
    return hashlib.sha256((token or "").encode("utf-8", "surrogatepass")).hexdigest()


def scope_of(token: str | None) -> str:
    """Callers are scoped by a hash of their bearer token; no token, no scope."""
    return "" if not token else digest(token)[:32]


def load_api_keys(path: str) -> frozenset[str]:
    """SHA-256 digests of the keys in `path`, one per line (blank lines and # comments skipped)."""
    keys = set()
    for line in Path(path).read_text("utf-8").splitlines():
        key = line.strip()
        if key and not key.startswith("#"):
            keys.add(hashlib.sha256(key.encode()).hexdigest())
    return frozenset(keys)


def headers_for(
    upstream: UpstreamSettings, request: Request, passed: tuple[str, ...] = ()
) -> dict[str, str]:
    """The headers a request sends to `upstream`: the client's own that are `passed` on,
    and its key where the upstream forwards callers' keys from the header it came in."""
    headers = {h: request.headers[h] for h in passed if h in request.headers}
    found = caller_key(request) if upstream.forward_client_key else None
    if found is not None and found[1] in upstream.takes_keys_from:  # only where it is meant
        if upstream.auth == "x-api-key":
            headers["x-api-key"] = found[0]
        else:
            headers["authorization"] = f"Bearer {found[0]}"
    return headers
