"""The baseline the store benchmark compares against: a minimal dict + threading.Lock
session store doing the same bookkeeping as `SessionStore` (expiry check, timestamps,
request count, 3-hash window and strikes, cost) and nothing else: no bound, no ordering,
no validation. Reads return a copy, as any store handing out snapshots must."""

from __future__ import annotations

import threading
import time
from typing import Any

MODEL, TIER, CREATED, USED, COUNT, HASHES, STRIKES, COST = range(8)


class MinimalStore:
    def __init__(self, timeout_ms: int = 30 * 60 * 1000) -> None:
        self._d: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        self._timeout = timeout_ms

    def _now(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def _live(self, sid: str, now: int) -> list[Any] | None:
        e = self._d.get(sid)
        if e is not None and now - e[USED] > self._timeout:
            del self._d[sid]
            return None
        return e

    def get_session(self, sid: str) -> tuple[Any, ...] | None:
        with self._lock:
            e = self._live(sid, self._now())
            return None if e is None else tuple(e)

    def set_session(self, sid: str, model: str, tier: str | None = None) -> None:
        with self._lock:
            now = self._now()
            e = self._live(sid, now)
            if e is None:
                self._d[sid] = [model, tier, now, now, 1, [], 0, 0]
            else:
                if e[MODEL] != model:
                    e[MODEL], e[TIER] = model, tier
                e[USED] = now
                e[COUNT] += 1

    def touch_session(self, sid: str) -> None:
        with self._lock:
            now = self._now()
            e = self._live(sid, now)
            if e is not None:
                e[USED] = now
                e[COUNT] += 1

    def record_request_hash(self, sid: str, h: str) -> int:
        with self._lock:
            e = self._live(sid, self._now())
            if e is None:
                return 0
            hashes = e[HASHES]
            e[STRIKES] = e[STRIKES] + 1 if hashes and hashes[-1] == h else 0
            hashes.append(h)
            if len(hashes) > 3:
                del hashes[0]
            return int(e[STRIKES])

    def add_session_cost(self, sid: str, micros: int) -> int:
        with self._lock:
            now = self._now()
            e = self._live(sid, now)
            if e is None:
                e = self._d[sid] = ["", None, now, now, 0, [], 0, 0]
            e[COST] += micros
            return int(e[COST])
