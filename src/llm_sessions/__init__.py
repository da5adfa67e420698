"""llm-sessions: session state for LLM routers.

Pin a model to a conversation, escalate a session that loops, keep a large-context
session on the provider whose prefix cache is warm, and track and cap what each session
costs. See the README for the rules every store follows.

`SessionPolicy` (`policy`) is the routing flow's facade over `flow/` (reading a request,
the begin rules, chains of stored responses, finish and charging, the sync/async shell);
the stores sit side by side in `stores/`; the gateway is `server/` (extra ``server``).
"""

import importlib
from typing import TYPE_CHECKING, Any

from .clock import Clock, monotonic_wall_clock
from .config import DEFAULT_CACHE_TTL_MS, Config, cache_ttl_for_provider, default_config
from .errors import (
    BudgetExceeded,
    InvalidRequest,
    InvalidSessionId,
    LLMSessionsError,
    MissingDependency,
    SessionBusy,
    StoreUnavailable,
    UnknownState,
)
from .fingerprint import (
    hash_request_content,
    provider_from_model,
    should_cache_sticky,
    turn_fingerprint,
)
from .ids import (
    derive_session_id,
    derive_session_id_from_messages,
    get_session_id,
    session_key,
    split_key,
)
from .policy import REASONS, Decision, SessionPolicy
from .records import (
    Entry,
    FlowState,
    MessageInfo,
    Reservation,
    SessionInfo,
    SessionPage,
    SessionRow,
    Stats,
)
from .routing import (
    Classifier,
    Pricing,
    TierModels,
    TokenUsage,
    default_classify,
    routing_table,
    token_usage,
)
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
    "Classifier",
    "Clock",
    "Config",
    "DEFAULT_CACHE_TTL_MS",
    "Decision",
    "Entry",
    "FlowState",
    "InvalidRequest",
    "InvalidSessionId",
    "LLMSessionsError",
    "MessageInfo",
    "MissingDependency",
    "Pricing",
    "REASONS",
    "RedisSessionStore",
    "Reservation",
    "STRIKE_LIMIT",
    "SessionBusy",
    "SessionInfo",
    "SessionPage",
    "SessionPolicy",
    "SessionRow",
    "SessionStore",
    "Stats",
    "Store",
    "StoreUnavailable",
    "Tier",
    "TierModels",
    "TokenUsage",
    "UnknownState",
    "__version__",
    "cache_ttl_for_provider",
    "default_classify",
    "default_config",
    "derive_session_id",
    "derive_session_id_from_messages",
    "get_session_id",
    "hash_request_content",
    "monotonic_wall_clock",
    "open_async_store",
    "open_store",
    "provider_from_model",
    "routing_table",
    "session_key",
    "should_cache_sticky",
    "split_key",
    "tier_rank",
    "token_usage",
    "turn_fingerprint",
]
