"""Opening a store from a URL: ``memory://``, ``redis://``, ``rediss://``, ``unix://``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..config import Config
from .base import AsyncStore, Store
from .memory import AsyncSessionStore, SessionStore

__all__ = ["open_async_store", "open_store"]

_REDIS_SCHEMES = ("redis", "rediss", "unix")


def _scheme(url: str) -> str:
    if not isinstance(url, str):
        raise TypeError(f"store url must be a str, got {type(url).__name__}")
    scheme = urlsplit(url).scheme.lower()
    if scheme != "memory" and scheme not in _REDIS_SCHEMES:
        raise ValueError(
            f"unsupported store url {url!r}: use memory://, redis://, rediss:// or unix://"
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
