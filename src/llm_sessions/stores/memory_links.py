"""The in-memory store's links (a name leading to a session, e.g. a response id), bounded
in bytes and fair across tenants.

Every link belongs to the session it was written with, and to that session's scope (the
tenant): it lives ``timeout_ms`` from its last write, never longer than its session (it is
removed when the session is dropped: expired, evicted, deleted or replaced), and its
memory is counted as its name and value plus `LINK_OVERHEAD` bytes, what Python holds for
one link here (the strings' headers, the record, its slots in the indexes below). At the
byte bound the scope holding the most link memory loses its least recently written links
first: a tenant that floods the store evicts its own links, and never pushes another below
an equal share. Not thread-safe: the store calls it with its lock held.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Mapping
from typing import NamedTuple

from ..ids import key_scope

__all__ = ["DEFAULT_LINK_BYTES", "LINK_OVERHEAD", "MemoryLinks"]

#: What Python holds for one link beyond its name's and value's characters (measured with
#: tracemalloc in the tests, rounded up): two str headers, the record, a slot in each index.
LINK_OVERHEAD = 680
#: ... and for each session holding links (its set of names), and each scope (its order,
#: its size, its entries in the largest-first heap), counted in the scope's size too
SESSION_OVERHEAD = 300
SCOPE_OVERHEAD = 450
DEFAULT_LINK_BYTES = 64 * 1024 * 1024


class _Held(NamedTuple):
    value: str
    expires: int
    session: str  # its store key (its scope: `key_scope` of it)
    cost: int  # bytes counted


class MemoryLinks:
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.bytes = 0
        self._held: dict[str, _Held] = {}
        # per scope: its links' names, least recently written (so soonest expiring) first
        self._scopes: dict[str, OrderedDict[str, None]] = {}
        self._scope_bytes: dict[str, int] = {}
        # (-bytes, scope) of every scope, some stale: an entry is pushed when a scope grows,
        # so the largest true value is the first entry that still matches (see `_largest`)
        self._largest_first: list[tuple[int, str]] = []
        # per session: the names of its links
        self._sessions: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def write(self, session: str, links: Mapping[str, str], expires: int) -> None:
        """Write `links` for `session` (a store key), each living until `expires`."""
        scope = key_scope(session)
        for name, value in links.items():
            self._remove(name)  # written again: the newest, and its session's
            cost = len(name) + len(value) + LINK_OVERHEAD
            self._held[name] = _Held(value, expires, session, cost)
            extra = 0
            if scope not in self._scopes:
                self._scopes[scope] = OrderedDict()
                extra += SCOPE_OVERHEAD
            if session not in self._sessions:
                self._sessions[session] = set()
                extra += SESSION_OVERHEAD
            self._scopes[scope][name] = None
            self._sessions[session].add(name)
            self._scope_bytes[scope] = self._scope_bytes.get(scope, 0) + cost + extra
            self.bytes += cost + extra
        if links:
            heapq.heappush(self._largest_first, (-self._scope_bytes[scope], scope))
        if self.bytes > self.budget:
            self._evict()

    def read(self, name: str, now: int) -> tuple[str, str] | None:
        """``(value, session key)`` of a live link; an expired one is removed."""
        held = self._held.get(name)
        if held is None:
            return None
        if held.expires < now:
            self._remove(name)
            return None
        return held.value, held.session

    def drop_session(self, session: str) -> None:
        """Remove every link of `session` (those written since for another are its)."""
        for name in list(self._sessions.get(session, ())):
            self._remove(name)

    def sweep(self, now: int, limit: int) -> int:
        """Remove up to `limit` expired links; returns how many."""
        removed = 0
        for order in list(self._scopes.values()):
            while removed < limit and order:
                name = next(iter(order))
                if self._held[name].expires >= now:
                    break
                self._remove(name)
                removed += 1
        return removed

    def clear(self) -> None:
        self._held.clear()
        self._scopes.clear()
        self._scope_bytes.clear()
        self._largest_first.clear()
        self._sessions.clear()
        self.bytes = 0

    def _remove(self, name: str) -> None:
        held = self._held.pop(name, None)
        if held is None:
            return
        session, freed = held.session, held.cost
        scope = key_scope(session)
        names = self._sessions[session]
        names.discard(name)
        if not names:
            del self._sessions[session]
            freed += SESSION_OVERHEAD
        order = self._scopes[scope]
        del order[name]
        if order:
            self._scope_bytes[scope] -= freed
        else:  # what is left is the scope's own overhead
            freed = self._scope_bytes.pop(scope)
            del self._scopes[scope]
        self.bytes -= freed

    def _evict(self) -> None:
        """Back under the budget: the oldest links of the scope holding the most memory."""
        while self.bytes > self.budget:
            scope = self._largest()
            self._remove(next(iter(self._scopes[scope])))

    def _largest(self) -> str:
        """The scope holding the most link memory, in O(log scopes) amortized: every scope
        has an entry at least its size (pushed when it grew), so the first entry that
        matches its scope's size is the largest; a stale one is replaced by the truth."""
        heap, sizes = self._largest_first, self._scope_bytes
        if len(heap) > 2 * len(sizes) + 16:  # mostly stale: start again from the truth
            heap[:] = [(-size, scope) for scope, size in sizes.items()]
            heapq.heapify(heap)
        while True:
            negative, scope = heap[0]
            size = sizes.get(scope)
            if size == -negative:
                return scope
            if size is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (-size, scope))
