"""Per-key locks: one session's transactions run one at a time inside a process.

A hot session (an agent fanning out, many clients on one derived id) then contends only
with other processes. Both forms keep an entry only while some caller holds or waits for
the key, so idle keys cost nothing. A wait is bounded by a time, never by a count.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["AsyncKeyedLock", "KeyedLock", "LockTimeout"]


class LockTimeout(TimeoutError):
    """A key's lock was not had within the time allowed."""


class KeyedLock:
    """A lock per key for threads."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, list[int]]] = {}

    def __len__(self) -> int:
        """Keys held or waited for right now."""
        return len(self._locks)

    @contextmanager
    def hold(self, key: str, timeout: float | None) -> Iterator[None]:
        """Hold `key`'s lock; `LockTimeout` when not had within `timeout` seconds (None:
        wait as long as it takes)."""
        with self._guard:
            lock, users = self._locks.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            if not lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
                raise LockTimeout(f"lock on {key!r} not had within {timeout} s")
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._guard:
                users[0] -= 1
                if users[0] == 0:
                    del self._locks[key]


class _Slot:
    __slots__ = ("held", "waiters")

    def __init__(self) -> None:
        self.held = False
        self.waiters: deque[asyncio.Future[None]] = deque()


class AsyncKeyedLock:
    """A lock per key for asyncio tasks of one event loop, handed over in FIFO order."""

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def hold(self, key: str, timeout: float | None) -> _Held:
        """Hold `key`'s lock (``async with``); `LockTimeout` when not had within `timeout`
        seconds."""
        return _Held(self, key, timeout)

    async def _acquire(self, key: str, timeout: float | None) -> _Slot:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        if slot.held or slot.waiters:
            await self._wait(key, slot, timeout)
        else:
            slot.held = True
        return slot

    async def _wait(self, key: str, slot: _Slot, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        slot.waiters.append(turn)

        def expire() -> None:
            if not turn.done():
                turn.set_exception(LockTimeout(f"lock on {key!r} not had within {timeout} s"))

        timer = None if timeout is None else loop.call_later(max(timeout, 0.0), expire)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self._release(key, slot)  # handed the lock just as we were cancelled
            else:
                if turn in slot.waiters:  # a release may have skipped it already
                    slot.waiters.remove(turn)
                if not slot.held and not slot.waiters:
                    del self._slots[key]
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _release(self, key: str, slot: _Slot) -> None:
        while slot.waiters:
            turn = slot.waiters.popleft()
            if not turn.done():
                turn.set_result(None)  # handed over: `held` stays True
                return
        slot.held = False
        del self._slots[key]


class _Held:
    """One ``async with`` of `AsyncKeyedLock.hold` (a class: a generator-based context
    manager costs more than the lock itself)."""

    __slots__ = ("_key", "_locks", "_slot", "_timeout")

    def __init__(self, locks: AsyncKeyedLock, key: str, timeout: float | None) -> None:
        self._locks, self._key, self._timeout = locks, key, timeout
        self._slot: _Slot | None = None

    async def __aenter__(self) -> None:
        self._slot = await self._locks._acquire(self._key, self._timeout)

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._slot is not None
        self._locks._release(self._key, self._slot)
