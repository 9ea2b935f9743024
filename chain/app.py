"""The interface between the ledger engine and the application it runs (shaped after ABCI).

CometBFT's ABCI splits an application into CheckTx (is this transaction acceptable now?),
FinalizeBlock (execute a block's ordered transactions at the block's time, giving results and an
app hash) and Commit. Here:

- ``check_tx``   ~ CheckTx: the sequencer's intake asks before a transaction enters the mempool.
- ``deliver_tx`` + ``end_block`` ~ FinalizeBlock: run inside the engine's pure block execution;
  the engine computes the app hash (state root) over the resulting state.
- the engine's store commit ~ Commit.

The app's state is a JSON object (``ctx.state``) that the engine copies before each block, so an
app is a pure function of (previous state, block time, ordered transactions). Apps must be
deterministic: no clocks, randomness, floats or I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from chain.envelope import Envelope


@dataclass
class AppContext:
    """What an app may see and change while a block executes.

    ``state``: the app's own namespace (mutable). ``params``: community parameters (read-only by
    convention; changed only through governance). ``meters``: enrolled meters by key id
    (key, serial, owner, capacity_w, active). ``height``/``time``: the block's. ``rules``: the
    ledger's rules version (genesis chain.rules, absent = 1; docs/ledger.md "Rules"), so that a
    rule changing what a block does applies to new ledgers only.
    """

    state: dict[str, Any]
    params: dict[str, Any]
    meters: dict[str, dict[str, Any]]
    height: int
    time: int
    rules: int = 1


class Application(Protocol):
    """What the engine needs of an application."""

    name: str
    # Message types this app handles; their signers must be enrolled meters, except for those also
    # in an optional ``operator_tx_types``: signed by a member or validator (the app says which).
    # Such a transaction may carry a meter's personal data: an optional ``subject_results``
    # ({result kind: field}) names the results that say which key id it is about, so that its
    # payload is erased with that meter's (chain.verify.transactions_about).
    tx_types: frozenset[str]
    # An optional ``pending_budget(ctx, env) -> (key, remaining, reason) | None``: how many more
    # transactions counted under ``key`` the ledger will take (what the state already holds is
    # counted there; those waiting for a block are not), so a node's intake refuses the ones a
    # block could only record as rejected (chain.engine.Ledger.pending_budget).

    def init_state(self, params: dict[str, Any]) -> dict[str, Any]:
        """The app's state at genesis, from the community parameters."""

    def check_params(self, params: dict[str, Any], bounded: bool = False, rules: int = 1) -> None:
        """Raise ValueError with a one-line reason if the parameters are unusable; ``bounded``: the
        ledger has the bounds on proposals' arguments (genesis chain.max_open_proposals), so the
        app may also cap sizes it could not cap in ledgers from before them; ``rules``: the
        ledger's rules version (genesis chain.rules), for checks that came with a later one."""

    def check_tx(self, ctx: AppContext, env: Envelope) -> None:
        """Raise Rejected if ``env`` would be refused in a block at ``ctx.time`` (intake check)."""

    def deliver_tx(self, ctx: AppContext, env: Envelope, position: int) -> list[dict[str, Any]]:
        """Apply one transaction (raise Rejected to refuse it); return results to record.

        ``position`` is the transaction's ledger position (for tie-breaks: earlier is smaller).
        """

    def end_block(self, ctx: AppContext) -> list[dict[str, Any]]:
        """Work due at the block's time (clearing at gate closure, settlement); return results."""

    def next_block_due(self, ctx: AppContext) -> int | None:
        """The next time (Unix s) after ``ctx.time`` at which the app needs a block, or None."""
