"""llm-sessions: session state for LLM routers.

Pin a model to a conversation, escalate a session that loops, keep a large-context
session on the provider whose prefix cache is warm, and track and cap what each session
costs. See the README for the rules every store follows.
"""

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
from .tiers import Tier, tier_rank

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CACHE_TTL_MS",
    "STRIKE_LIMIT",
    "AsyncSessionStore",
    "AsyncStore",
    "BudgetExceeded",
    "Clock",
    "Config",
    "Entry",
    "FlowState",
    "InvalidSessionId",
    "LLMSessionsError",
    "MessageInfo",
    "MissingDependency",
    "monotonic_wall_clock",
    "Reservation",
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
    "provider_from_model",
    "should_cache_sticky",
    "tier_rank",
]
