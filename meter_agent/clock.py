"""Ledger time: the wall clock, or a simulated clock (accelerated, pausable) for demos and tests.

Every part of one community reads time from the same clock object, so gate closures, meter
counters, readings and block times agree. Anything with a ``now() -> float`` (Unix seconds) is a
clock here.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Current Unix time in seconds."""


class WallClock:
    """The system's real time (production)."""

    speed = 1.0

    def now(self) -> float:
        return time.time()


class SimClock:
    """Simulated Unix time: ``speed`` simulated seconds per real second; pause/advance."""

    def __init__(self, start_s: float, speed: float) -> None:
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError("speed must be a positive number")
        self.speed = speed
        self._lock = threading.Lock()
        self._base_sim = float(start_s)
        self._base_real = time.monotonic()
        self._paused = False

    def now(self) -> float:
        """The simulated Unix time in seconds."""
        with self._lock:
            if self._paused:
                return self._base_sim
            return self._base_sim + (time.monotonic() - self._base_real) * self.speed

    def pause(self) -> None:
        """Stop the clock (values and counters stay fixed until advanced)."""
        with self._lock:
            if not self._paused:
                self._base_sim += (time.monotonic() - self._base_real) * self.speed
                self._paused = True

    def advance(self, seconds: float) -> None:
        """Jump forward by ``seconds`` of simulated time."""
        if seconds < 0:
            raise ValueError("the simulated clock only moves forward")
        with self._lock:
            self._base_sim += seconds

    @property
    def paused(self) -> bool:
        return self._paused
