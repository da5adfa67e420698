"""Clocks: zero-argument callables returning unix time in milliseconds."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "monotonic_wall_clock"]

Clock = Callable[[], int]


def monotonic_wall_clock() -> Clock:
    """A clock that reads the wall clock once, then advances with `time.monotonic_ns`.

    An NTP step or a manual change of the system clock after start-up then neither
    expires every session at once nor makes them immortal.
    """
    offset_ns = time.time_ns() - time.monotonic_ns()
    monotonic_ns = time.monotonic_ns

    def clock() -> int:
        return (monotonic_ns() + offset_ns) // 1_000_000

    return clock
