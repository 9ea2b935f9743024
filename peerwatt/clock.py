"""Ledger time for a process: the wall clock, or an accelerated simulated clock (demo, tests).

Every part of one community reads time from the same kind of clock, so gate closures, readings and
block times agree. ``speed`` simulated seconds pass per real second, starting at ``start``.
"""

from __future__ import annotations

import time


class Clock:
    """Unix time, possibly accelerated: ``start + (real elapsed) * speed``."""

    def __init__(self, start: float | None = None, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self._real_start = time.time()
        self.start = self._real_start if start is None else float(start)
        self.speed = float(speed)

    def now(self) -> float:
        """Current ledger time (Unix seconds, float)."""
        return self.start + (time.time() - self._real_start) * self.speed

    def now_s(self) -> int:
        """Current ledger time in whole Unix seconds."""
        return int(self.now())

    def real_seconds(self, ledger_seconds: float) -> float:
        """How long ``ledger_seconds`` of ledger time take in real time."""
        return ledger_seconds / self.speed
