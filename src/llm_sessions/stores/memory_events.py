"""The in-memory store's event logs: each session's newest events, kept beside it and
dropped with it, bounded in bytes overall.

Each log keeps at most `Config.events_kept` events. Past the byte bound the oldest events
of the log appended to least recently go first, so the sessions being watched keep their
timelines and the idle ones lose theirs; a session's log never outlives the session (the
store drops it in the same step as the session).
"""

from __future__ import annotations

from collections import OrderedDict, deque

__all__ = ["DEFAULT_EVENT_BYTES", "EVENT_OVERHEAD", "MemoryEvents"]

#: The default bound on the bytes all event logs hold (64 MiB).
DEFAULT_EVENT_BYTES = 64 * 1024 * 1024
#: What an event costs beyond its text: the str object and its slot in a deque.
EVENT_OVERHEAD = 64


class MemoryEvents:
    """Event logs by session key. Not thread-safe: the store calls it under its lock."""

    def __init__(self, kept: int, limit_bytes: int) -> None:
        self.kept = kept
        self.limit_bytes = limit_bytes
        self.bytes = 0
        # session key -> its events, oldest first; the log appended to last at the end
        self._logs: OrderedDict[str, deque[str]] = OrderedDict()

    def append(self, key: str, text: str) -> None:
        """Add an event to `key`'s log (the oldest one goes past `kept`), then drop the
        oldest events of the least recently appended logs while over the byte bound."""
        if not self.kept:
            return
        logs = self._logs
        log = logs.get(key)
        if log is None:
            log = logs[key] = deque()
        else:
            logs.move_to_end(key)
        log.append(text)
        self.bytes += len(text) + EVENT_OVERHEAD
        if len(log) > self.kept:
            self.bytes -= len(log.popleft()) + EVENT_OVERHEAD
        while self.bytes > self.limit_bytes and logs:
            oldest_key, oldest = next(iter(logs.items()))
            self.bytes -= len(oldest.popleft()) + EVENT_OVERHEAD
            if not oldest:
                del logs[oldest_key]

    def read(self, key: str) -> list[str]:
        """`key`'s events, oldest first."""
        log = self._logs.get(key)
        return [] if log is None else list(log)

    def drop(self, key: str) -> None:
        """Forget `key`'s log (its session is gone)."""
        log = self._logs.pop(key, None)
        if log:
            self.bytes -= sum(len(text) for text in log) + EVENT_OVERHEAD * len(log)

    def clear(self) -> None:
        self._logs.clear()
        self.bytes = 0
