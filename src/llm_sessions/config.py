"""Store configuration and the provider prefix-cache TTL table."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "DEFAULT_CACHE_TTL_MS",
    "MAX_EVENTS_KEPT",
    "Config",
    "cache_ttl_for_provider",
    "default_config",
]

_MINUTE = 60_000

#: How long each provider keeps a prompt prefix cached, in milliseconds.
DEFAULT_CACHE_TTL_MS: Mapping[str, int] = MappingProxyType(
    {
        "anthropic": 5 * _MINUTE,
        "openai": 5 * _MINUTE,
        "deepseek": 5 * _MINUTE,
        "google": 5 * _MINUTE,
        "groq": 5 * _MINUTE,
        "vllm": 10 * _MINUTE,
        "dosrouter": 10 * _MINUTE,
        "default": 5 * _MINUTE,
    }
)

#: The most events a session's log may keep (`Config.events_kept`).
MAX_EVENTS_KEPT = 10_000

_HEADER_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def cache_ttl_for_provider(provider: str) -> int:
    """Prefix-cache TTL in ms for `provider`; unknown providers get the ``default`` entry."""
    ttl = DEFAULT_CACHE_TTL_MS.get(provider)
    return DEFAULT_CACHE_TTL_MS["default"] if ttl is None else ttl


def _int_field(name: str, value: object) -> int:
    if type(value) is not int:
        raise ValueError(f"Config.{name} must be an int, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class Config:
    """How a session store behaves. Invalid values raise `ValueError` at construction.

    - `enabled`: when False every read returns nothing and every write does nothing.
    - `timeout_ms`: a session idle longer than this is expired.
    - `header_name`: the HTTP header carrying a client-chosen session id.
    - `max_sessions`: bound on live sessions in memory; at the bound the least recently
      used one is evicted (the Redis store ignores it: Redis' ``maxmemory`` applies).
    - `cleanup_interval_ms`: period of the in-memory store's background sweep, 0 for none.
    - `cache_ttl_ms`: overrides or extends `DEFAULT_CACHE_TTL_MS`.
    - `events_kept`: how many events (the newest) each session's event log keeps, 0 for
      none (see `transact`'s `event`); at most `MAX_EVENTS_KEPT`.
    """

    enabled: bool = True
    timeout_ms: int = 30 * _MINUTE
    header_name: str = "x-session-id"
    max_sessions: int = 100_000
    cleanup_interval_ms: int = 5 * _MINUTE
    cache_ttl_ms: Mapping[str, int] = field(default_factory=dict, hash=False)
    events_kept: int = 100

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError("Config.enabled must be a bool")
        if _int_field("timeout_ms", self.timeout_ms) <= 0:
            raise ValueError(f"Config.timeout_ms must be > 0, got {self.timeout_ms}")
        if _int_field("max_sessions", self.max_sessions) < 1:
            raise ValueError(f"Config.max_sessions must be >= 1, got {self.max_sessions}")
        if _int_field("cleanup_interval_ms", self.cleanup_interval_ms) < 0:
            raise ValueError(
                f"Config.cleanup_interval_ms must be >= 0, got {self.cleanup_interval_ms}"
            )
        if not 0 <= _int_field("events_kept", self.events_kept) <= MAX_EVENTS_KEPT:
            raise ValueError(
                f"Config.events_kept must be between 0 and {MAX_EVENTS_KEPT}, "
                f"got {self.events_kept}"
            )
        if not isinstance(self.header_name, str) or not self.header_name:
            raise ValueError("Config.header_name must be a non-empty string")
        if not _HEADER_TOKEN.match(self.header_name):
            raise ValueError(f"Config.header_name {self.header_name!r} is not a valid header name")
        if not isinstance(self.cache_ttl_ms, Mapping):
            raise ValueError("Config.cache_ttl_ms must be a mapping of provider -> ms")
        ttls: dict[str, int] = {}
        for provider, ttl in self.cache_ttl_ms.items():
            if not isinstance(provider, str) or not provider:
                raise ValueError(f"Config.cache_ttl_ms key {provider!r} must be a non-empty str")
            if type(ttl) is not int or ttl < 0:
                raise ValueError(
                    f"Config.cache_ttl_ms[{provider!r}] must be an int >= 0, got {ttl!r}"
                )
            ttls[provider] = ttl
        object.__setattr__(self, "cache_ttl_ms", MappingProxyType(ttls))

    def cache_ttl_for(self, provider: str) -> int:
        """Prefix-cache TTL in ms for `provider`, with this config's overrides applied."""
        ttl = self.cache_ttl_ms.get(provider)
        if ttl is None:
            ttl = DEFAULT_CACHE_TTL_MS.get(provider)
        if ttl is None:
            ttl = self.cache_ttl_ms.get("default", DEFAULT_CACHE_TTL_MS["default"])
        return ttl


def default_config() -> Config:
    """The default configuration, ``Config()``."""
    return Config()
