"""Anti-replay window per signer (as IPsec's): the highest seq plus a bitmap of seqs seen below it.

A seq already seen, or older than the window, is a replay. Out-of-order arrival within the window
is accepted exactly once. Memory and time per signer are O(window) whatever the seq gap (one int
and a ``window``-bit bitmap): a jump beyond the window starts a fresh bitmap instead of shifting the
old one by the gap (seqs go up to 2^53 - 1; an agent that lost its state restarts at the clock).
This is node-local state, kept apart from the ledger; it can be saved and restored as JSON.
"""

from __future__ import annotations

from typing import Any

DEFAULT_WINDOW = 4096


class ReplayGuard:
    """Tracks, per signer, which sequence numbers were accepted."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError("replay window must be at least 1")
        self.window = window
        self._mask = (1 << window) - 1
        self._state: dict[str, tuple[int, int]] = {}  # signer -> (highest seq, bitmap)

    def why_replay(self, signer: str, seq: int) -> str | None:
        """None if (signer, seq) is fresh, else a sentence saying why it is a replay."""
        state = self._state.get(signer)
        if state is None:
            return None
        highest, bitmap = state
        if seq > highest:
            return None
        offset = highest - seq
        if offset >= self.window:
            return f"seq {seq} is older than the replay window (highest {highest})"
        if bitmap >> offset & 1:
            return f"seq {seq} was already seen"
        return None

    def behind(self, signer: str, seq: int) -> bool:
        """True if ``seq`` is older than the window: the sender's counter is behind, not resending."""
        state = self._state.get(signer)
        return state is not None and state[0] - seq >= self.window

    def record(self, signer: str, seq: int) -> None:
        """Mark (signer, seq) as seen; call only after :meth:`why_replay` returned None."""
        state = self._state.get(signer)
        if state is None:
            self._state[signer] = (seq, 1)
            return
        highest, bitmap = state
        if seq > highest:
            gap = seq - highest
            # never shift by more than the window: everything older falls out anyway
            shifted = (bitmap << gap) & self._mask if gap < self.window else 0
            self._state[signer] = (seq, shifted | 1)
        elif highest - seq < self.window:
            self._state[signer] = (highest, bitmap | (1 << (highest - seq)))
        # else: older than the window, a replay by definition; nothing to record

    def accept(self, signer: str, seq: int) -> str | None:
        """Check and record in one step: None if accepted, else why it is a replay."""
        why = self.why_replay(signer, seq)
        if why is None:
            self.record(signer, seq)
        return why

    def highest(self, signer: str) -> int | None:
        """The highest seq accepted from ``signer``, or None."""
        state = self._state.get(signer)
        return None if state is None else state[0]

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of the guard."""
        return {
            "window": self.window,
            "signers": {s: [h, format(b, "x")] for s, (h, b) in sorted(self._state.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplayGuard:
        """Restore a guard saved with :meth:`to_json`."""
        guard = cls(int(data["window"]))
        for signer, (highest, bitmap_hex) in data["signers"].items():
            guard._state[signer] = (int(highest), int(bitmap_hex, 16) & guard._mask)
        return guard

    def __len__(self) -> int:
        return len(self._state)
