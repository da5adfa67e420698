"""Where session state lives: in memory or in Redis, with sync and asyncio APIs."""

from .base import AsyncStore, Store, Transition
from .memory import AsyncSessionStore, SessionStore

__all__ = ["AsyncSessionStore", "AsyncStore", "SessionStore", "Store", "Transition"]
