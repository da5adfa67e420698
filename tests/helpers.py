"""Test helpers: a controllable clock and a synchronous face for async stores."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

START_MS = 1_700_000_000_000


class FakeClock:
    """A clock the test moves by hand: ``clock.advance(ms)``."""

    def __init__(self, now: int = START_MS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


class SyncFacade:
    """Calls an async store's coroutine methods on one private event loop, so the same
    test can drive sync and async stores. The async store itself runs unmodified."""

    def __init__(self, store: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if inspect.iscoroutinefunction(attr):

            def call(*args: Any, **kwargs: Any) -> Any:
                return self.loop.run_until_complete(attr(*args, **kwargs))

            return call
        return attr

    def close(self) -> None:
        self.loop.run_until_complete(self.store.aclose())


class PolicyFacade:
    """Drives an async `SessionPolicy` (abegin/afinish) with sync calls, on the loop of
    the `SyncFacade` of its store."""

    def __init__(self, policy: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.policy = policy
        self.loop = loop

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        return self.loop.run_until_complete(self.policy.abegin(*args, **kwargs))

    def finish(self, *args: Any, **kwargs: Any) -> Any:
        return self.loop.run_until_complete(self.policy.afinish(*args, **kwargs))

    def response_session(self, *args: Any, **kwargs: Any) -> Any:
        return self.loop.run_until_complete(self.policy.aresponse_session(*args, **kwargs))

    def bill_response(self, *args: Any, **kwargs: Any) -> Any:
        return self.loop.run_until_complete(self.policy.abill_response(*args, **kwargs))

    def events(self, *args: Any, **kwargs: Any) -> Any:
        return self.loop.run_until_complete(self.policy.aevents(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)
