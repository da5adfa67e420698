"""llm-sessions: session state for LLM routers.

Pin a model to a conversation, escalate a session that loops, keep a large-context
session on the provider whose prefix cache is warm, and track and cap what each session
costs. See the README for the rules every store follows.
"""

import importlib
from typing import TYPE_CHECKING, Any

from .clock import Clock, monotonic_wall_clock
from .config import DEFAULT_CACHE_TTL_MS, Config, cache_ttl_for_provider, default_config
from .errors import (
    BudgetExceeded,
    InvalidSessionId,
    LLMSessionsError,
    MissingDependency,
    StoreUnavailable,
)
from .fingerprint import hash_request_content, provider_from_model, should_cache_sticky
from .ids import derive_session_id, derive_session_id_from_messages, get_session_id
from .records import Entry, FlowState, MessageInfo, Reservation, SessionInfo, Stats
from .rules import STRIKE_LIMIT
from .stores import AsyncSessionStore, AsyncStore, SessionStore, Store
from .stores.urls import open_async_store, open_store
from .tiers import Tier, tier_rank

if TYPE_CHECKING:
    from .stores.redis import AsyncRedisSessionStore, RedisSessionStore

__version__ = "0.1.0"

_LAZY = {
    "AsyncRedisSessionStore": "llm_sessions.stores.redis",
    "RedisSessionStore": "llm_sessions.stores.redis",
}


def __getattr__(name: str) -> Any:
    # The Redis stores import redis-py, an optional extra: only when first asked for.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llm_sessions' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AsyncRedisSessionStore",
    "AsyncSessionStore",
    "AsyncStore",
    "BudgetExceeded",
    "Clock",
    "Config",
    "DEFAULT_CACHE_TTL_MS",
    "Entry",
    "FlowState",
    "InvalidSessionId",
    "LLMSessionsError",
    "MessageInfo",
    "MissingDependency",
    "RedisSessionStore",
    "Reservation",
    "STRIKE_LIMIT",
    "SessionInfo",
    "SessionStore",
    "Stats",
    "Store",
    "StoreUnavailable",
    "Tier",
    "__version__",
    "cache_ttl_for_provider",
    "default_config",
    "derive_session_id",
    "derive_session_id_from_messages",
    "get_session_id",
    "hash_request_content",
    "monotonic_wall_clock",
    "open_async_store",
    "open_store",
    "provider_from_model",
    "should_cache_sticky",
    "tier_rank",
]
