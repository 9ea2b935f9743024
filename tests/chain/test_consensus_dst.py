"""Deterministic simulation of the consensus core (tests/chain/dst.py) over many seeds.

Each case plays a fixed range of seeds (bounded by count, not by wall clock, so a run is the same
everywhere) and fails with the one-line reproduction of every failing seed. The counts keep the
whole file near 30 s on the 2-core CI machine; scripts/soak_consensus.py runs many more.
The last tests break the protocol (or the fault budget) on purpose and show the checks catch it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chain.consensus import Height
from tests.chain.dst import FAULT_MIXES, Config, run

ROOT = Path(__file__).resolve().parents[2]

# seeds per (n, fault mix): 4 x (60 + 100 + 350 + 150) = 2,640 runs, about 20 s of CPU
SEEDS = {1: 60, 3: 100, 4: 350, 7: 150}


def _failures(n: int, faults: str, seeds: range, **kw) -> list[str]:
    return [o.line() for s in seeds if not (o := run(Config(s, n, faults, **kw))).ok]


@pytest.mark.parametrize("faults", FAULT_MIXES)
@pytest.mark.parametrize("n", sorted(SEEDS))
def test_safety_and_liveness_hold_for_every_seed(n, faults):
    failed = _failures(n, faults, range(SEEDS[n]))
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("faults", ["crash", "mixed"])
@pytest.mark.parametrize("n", [4, 7])
def test_relaying_only_what_the_record_holds_is_enough(n, faults):
    """Gossip that re-sends only a validator's own messages and the polka behind its lock and
    valid value (what a node can keep signed copies of) still decides every height in time."""
    failed = [o.line() for s in range(40) if not (o := run(Config(s, n, faults, relay="record"))).ok]
    assert not failed, "\n".join(failed)


def test_a_seed_replays_exactly():
    config = Config(4242, 4, "mixed")
    first, second = run(config), run(config)
    assert first.trace_hash == second.trace_hash and first.events == second.events > 100
    assert first.decided == second.decided
    assert run(Config(4243, 4, "mixed")).trace_hash != first.trace_hash


def test_a_seed_replays_exactly_in_another_process_with_another_hash_seed():
    """The printed reproduction must replay anywhere: nothing may depend on str hashing."""
    config = Config(77, 7, "mixed")
    here = run(config)
    lines = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.chain.dst",
                "--seed",
                "77",
                "--validators",
                "7",
                "--faults",
                "mixed",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines.append(proc.stdout)
    assert all(f"trace={here.trace_hash[:16]}" in out for out in lines), lines


# -- the checker has teeth -----------------------------------------------------------------------


class IgnoresLock(Height):
    """Lines 22 and 28 without the lock: prevote any valid proposal."""

    def _step_once(self, out):
        lock = (self.locked_value, self.locked_round)
        self.locked_value, self.locked_round = None, -1
        try:
            return super()._step_once(out)
        finally:
            if (self.locked_value, self.locked_round) == (None, -1):  # line 36 did not lock anew
                self.locked_value, self.locked_round = lock


class IgnoresLocking(IgnoresLock):
    """...and lines 15-16 without the valid value: every proposer builds a new block."""

    def _begin_propose(self, out):
        valid = self.valid_value
        self.valid_value = None
        try:
            super()._begin_propose(out)
        finally:
            self.valid_value = valid


class ForgetsOnRestart(Height):
    """A validator that persists nothing: after a restart it may vote again, differently."""

    def restore(self, record):
        return None


def test_more_than_f_byzantine_validators_break_agreement_and_the_check_says_so():
    failed = [o for s in range(40) if not (o := run(Config(s, 4, "none", byzantine=2))).ok]
    assert len(failed) >= 5
    assert all("disagreement" in o.violation for o in failed), [o.line() for o in failed]


def test_ignoring_the_locking_rules_breaks_agreement_and_the_check_says_so():
    """Two honest validators decide different blocks once a value a quorum may have locked is
    neither kept (lines 22, 28) nor re-proposed (line 16); f = 1 Byzantine, n = 4. The race is
    narrow (about 2 seeds in 100), which is why the simulation runs thousands."""
    failed = [o for s in range(60) if not (o := run(Config(s, 4, "byzantine"), IgnoresLocking)).ok]
    assert any("disagreement" in o.violation for o in failed), [o.line() for o in failed]


def test_forgetting_the_record_on_restart_is_a_double_vote_and_the_check_says_so():
    failed = [o for s in range(30) if not (o := run(Config(s, 4, "crash"), ForgetsOnRestart)).ok]
    assert len(failed) >= 5
    assert all("honest" in o.violation and "sent two" in o.violation for o in failed)


def test_relaying_only_its_own_messages_halts_and_the_liveness_check_says_so():
    """A validator locked on a polka whose other signers crashed (or restarted) must pass that
    polka on: if every node re-sends only what it signed itself, some heights never finish."""
    failed = [o for s in range(100) if not (o := run(Config(s, 4, "crash", relay="own"))).ok]
    assert failed and all("liveness" in o.violation for o in failed), [o.line() for o in failed]
