"""Opening a store from a URL: ``memory://``, or a Redis one (see `redis_urls`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..config import Config
from .base import AsyncStore, Store
from .memory import AsyncSessionStore, SessionStore
from .redis_urls import SCHEMES

__all__ = ["open_async_store", "open_store"]


def _scheme(url: str) -> str:
    if not isinstance(url, str):
        raise TypeError(f"store url must be a str, got {type(url).__name__}")
    scheme = urlsplit(url).scheme.lower()
    if scheme != "memory" and scheme not in SCHEMES:
        raise ValueError(
            f"unsupported store url scheme {scheme!r}: use memory://, redis://, rediss://, "
            "unix://, redis+cluster:// or redis+sentinel:// (rediss+ for TLS)"
        )
    return scheme


def open_store(url: str, config: Config | None = None, **kw: Any) -> Store:
    """A sync store for `url`; keyword arguments go to the store's constructor."""
    if _scheme(url) == "memory":
        return SessionStore(config, **kw)
    from .redis import RedisSessionStore

    return RedisSessionStore(url, config, **kw)


def open_async_store(url: str, config: Config | None = None, **kw: Any) -> AsyncStore:
    """An asyncio store for `url`; keyword arguments go to the store's constructor."""
    if _scheme(url) == "memory":
        return AsyncSessionStore(config, **kw)
    from .redis import AsyncRedisSessionStore

    return AsyncRedisSessionStore(url, config, **kw)
