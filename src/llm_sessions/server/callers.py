"""Who is calling: the caller's key (``Authorization: Bearer`` or ``x-api-key``), the
scope a key puts its sessions in, the key files, and the headers a request carries to
an upstream (the client's own that are passed on, its key where that upstream forwards
callers' keys)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from starlette.requests import Request

from .settings import UpstreamSettings

__all__ = ["bearer", "digest", "headers_for", "load_api_keys", "scope_of"]


def bearer(request: Request) -> str | None:
    """The caller's key: ``Authorization: Bearer KEY`` (OpenAI clients), else ``x-api-key``
    (Anthropic clients, Claude Code)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key", "").strip() or None


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
    and its key where the upstream forwards callers' keys."""
    headers = {h: request.headers[h] for h in passed if h in request.headers}
    if upstream.forward_client_key:
        key = bearer(request)
        if key and upstream.auth == "x-api-key":
            headers["x-api-key"] = key
        elif key:
            headers["authorization"] = f"Bearer {key}"
    return headers
