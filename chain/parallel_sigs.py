"""Signature checks spread over worker processes, ahead of the code that needs them.

`peerwatt verify` must execute blocks in order, but a signature check depends only on the key,
the signed bytes and the signature, so the checks of the next blocks can run on other cores while
this core executes the current one. A :class:`SignatureAhead` takes batches of such checks and
answers later which of them verified; the caller still decides, at execution time, that the key
it checked against is the key enrolled there (a check that failed, or used another key, is simply
done again in order, with the same error as without workers).

Workers are separate processes (``spawn``: no state is inherited), each with its own key cache.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context

from chain.execute import public_key_from_hex
from chain.keys import KeyFileError
from chain.signature import SignatureError, verify

# (key as SEC1 hex, signed bytes, b64url signature)
Check = tuple[str, bytes, str]
BATCH = 256  # checks per task: amortises the hand-over (a check itself costs ~70-100 us)


def _verify_batch(checks: list[Check]) -> list[bool]:
    """In a worker: which of ``checks`` verify."""
    out = []
    for sec1, data, sig in checks:
        try:
            verify(public_key_from_hex(sec1), data, sig)
            out.append(True)
        except (SignatureError, KeyFileError, ValueError):
            out.append(False)
    return out


def default_workers() -> int:
    """The cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class SignatureAhead:
    """Batches of signature checks running on ``workers`` processes (use as a context manager).

    Each check is tagged with the height of the block it belongs to, so the caller can wait for
    exactly the checks of the block it is about to execute (:meth:`collect`).
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
        self._pending: list[tuple[int, list[object], Future[list[bool]]]] = []  # (lowest height, ...)
        self._batch_keys: list[object] = []
        self._batch: list[Check] = []
        self._batch_low: int | None = None
        self.in_flight = 0

    def add(self, height: int, key: object, check: Check) -> None:
        """Queue one check of block ``height``; ``key`` names it in :meth:`collect`."""
        self._batch_keys.append((height, key))
        self._batch.append(check)
        self._batch_low = height if self._batch_low is None else min(self._batch_low, height)
        self.in_flight += 1
        if len(self._batch) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            assert self._batch_low is not None
            future = self._pool.submit(_verify_batch, self._batch)
            self._pending.append((self._batch_low, self._batch_keys, future))
            self._batch_keys, self._batch, self._batch_low = [], [], None

    def collect(self, into: dict[int, set[object]], through_height: int) -> None:
        """Add to ``into[height]`` the keys of checks that verified: all checks of blocks up to
        ``through_height`` (waiting for them), and whatever else has already finished."""
        if self._batch_low is not None and self._batch_low <= through_height:
            self._flush()
        still = []
        for low, keys, future in self._pending:
            if low <= through_height or future.done():
                for (height, key), ok in zip(keys, future.result(), strict=True):
                    if ok:
                        into.setdefault(height, set()).add(key)
                self.in_flight -= len(keys)
            else:
                still.append((low, keys, future))
        self._pending = still

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> SignatureAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
