"""A minimal signed key-value application: the engine's reference app for tests and examples.

Enrolled meters may ``reading``-style write a value under their own key id: each accepted
``reading`` transaction stores ``{interval, import_wh, export_wh}`` as the meter's latest entry
and counts it. It exercises the whole engine (intake, blocks, seals, verify) with no market logic;
``due_every_s`` (a community parameter) asks for a block at each multiple of that period, to test
the engine's "next block due" contract.
"""

from __future__ import annotations

from typing import Any

from chain.app import AppContext
from chain.envelope import Envelope, Rejected


class KeyValueApp:
    """Stores each meter's latest reading; asks for periodic blocks."""

    name = "kv"
    tx_types = frozenset({"reading"})

    def init_state(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"latest": {}, "writes": 0, "ticks": 0}

    def check_params(self, params: dict[str, Any], bounded: bool = False, rules: int = 1) -> None:
        due = params.get("due_every_s", 0)
        if type(due) is not int or due < 0:
            raise ValueError("due_every_s must be a non-negative integer")
        limit = params.get("max_writes_per_meter", 0)
        if type(limit) is not int or limit < 0:
            raise ValueError("max_writes_per_meter must be a non-negative integer")

    def check_tx(self, ctx: AppContext, env: Envelope) -> None:
        limit = ctx.params.get("max_writes_per_meter", 0)
        entry = ctx.state["latest"].get(env.signer)
        if limit and entry is not None and entry["count"] >= limit:
            raise Rejected("quota", f"at most {limit} writes per meter")
        if entry is not None and env.body["interval"] < entry["interval"]:
            raise Rejected("stale", "an older interval than the stored one")

    def deliver_tx(self, ctx: AppContext, env: Envelope, position: int) -> list[dict[str, Any]]:
        self.check_tx(ctx, env)
        previous = ctx.state["latest"].get(env.signer, {"count": 0})
        ctx.state["latest"][env.signer] = {
            "interval": env.body["interval"],
            "import_wh": env.body["import_wh"],
            "export_wh": env.body["export_wh"],
            "count": previous["count"] + 1,
        }
        ctx.state["writes"] += 1
        return [{"kind": "kv", "meter": env.signer, "interval": env.body["interval"], "position": position}]

    def end_block(self, ctx: AppContext) -> list[dict[str, Any]]:
        due = ctx.params.get("due_every_s", 0)
        if due and ctx.time % due == 0 and ctx.time // due > ctx.state["ticks"]:
            ctx.state["ticks"] = ctx.time // due
            return [{"kind": "tick", "time": ctx.time}]
        return []

    def next_block_due(self, ctx: AppContext) -> int | None:
        due = ctx.params.get("due_every_s", 0)
        if not due:
            return None
        return (max(ctx.state["ticks"], ctx.time // due) + 1) * due
