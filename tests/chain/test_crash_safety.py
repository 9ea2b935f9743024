"""Kill -9 a process writing blocks at random moments: the store always opens, verifies, and grows."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

from chain.engine import Ledger
from chain.kvapp import KeyValueApp
from chain.store import Store
from chain.verify import verify_store


def test_sigkill_while_writing_leaves_a_verifiable_prefix(tmp_path):
    rng = random.Random(7)
    heights = []
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chain.crash_writer", str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.05, 0.6))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            proc.stdout.close()
        store = Store.open(tmp_path / "node", readonly=True)
        report = verify_store(store, KeyValueApp())
        store.close()
        heights.append(report.blocks)
        Ledger.open(tmp_path / "node", KeyValueApp()).close()  # snapshot matches the head
    assert heights == sorted(heights) and heights[-1] > heights[0] > 0
