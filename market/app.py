"""The energy market as the ledger's application: order book, gate-closure clearing, readings,
settlement against metered delivery, and balances — a pure function of the ledger's contents.

State (the app's namespace of the ledger state, committed by the state root):
  book        {interval: {meter: order in effect}}            open intervals only
  cleared     {interval: {"trades": [...]}}                    awaiting settlement
  readings    {meter: {interval: [import_wh, export_wh, serial]}}  counters at interval end
  settled     {interval: {trades, settlement}}                 kept for corrections
  resettle    [interval, ...]                                  corrected readings to apply
  balances    {account: micro-units}                           members + "grid_fees"
  gridops     {meter: {interval: [import_wh, export_wh, quality]}}  the grid operator's data
  resettle_gridops [interval, ...]                             intervals its new data changes
  gridops_pruned   interval                                    its data before this is forgotten
  corrections {meter: {interval: count}}                       corrections of a recorded reading
  orders_placed {interval: {meter: count}}                     orders placed, open intervals only
  cancelled   {interval: {meter: seq}}                         cancellations, open intervals only
  gate_closed interval                                         the latest interval cleared (rules 4)
(``gridops``, ``resettle_gridops`` and ``gridops_pruned`` appear with the first grid operator's
data, ``corrections`` with the first correction under ``max_reading_corrections``,
``orders_placed`` with the first order under ``max_orders_per_interval`` and ``cancelled`` with
the first cancellation on a ledger with rules 3, so a community that uses none of them keeps the
state it always had.)
Rules 3 (genesis chain.rules, ``ctx.rules``; docs/ledger.md "Rules"): a reading correction that
moves no money still updates the figures kept for a later re-settlement (``settled``'s
``measured``), and an order older than a cancellation of the same meter and interval is refused as
``stale_order``. Rules 4: an interval clears once (an order for an interval at or before
``gate_closed`` is refused as ``interval_closed`` also when a vote lowered ``gate_s`` since: its
second clearing replaced the first one's trades, which never settled), and the market parameters'
checks take the rules-4 bounds (market/params.py). Rules 5: every ``settled`` entry keeps its
``measured`` whatever the source, and re-settling an interval already settled under ``gridops``
(after a vote to it) changes only the meters with a row of the grid operator's data, the others
keeping what they settled on; the readings of intervals waiting under ``gridops`` are kept until
they settle (a vote back to ``meter`` settles them on them). Ledgers on earlier rules re-execute as
they were made.
Results per block: ``order_outcome`` and ``trade`` and ``clearing`` at gate closure;
``settlement``, ``balance`` and ``adjustment`` at settlement; ``reading_flag`` when a reading
arrives that cannot be true (a serial that is not the enrolled one, or counters that moved more
than the meter's enrolled capacity allows since its neighbouring reading); ``gridops`` when the
grid operator's data is recorded; rejections are the engine's. Where the community's
``settlement_source`` is not ``meter``, settlements and adjustments say where their energy came
from (``source``: ``meter``, ``gridops`` or ``mixed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from chain.app import AppContext
from chain.envelope import Envelope, Rejected
from market import params as market_params
from market.clearing import COMMUNITY, Order, Trade, clear
from market.params import GRIDOPS, METER
from market.settlement import (
    MISSING_GRIDOPS,
    Delivery,
    Reading,
    Settlement,
    TradeSettlement,
    adjust,
    check_reading,
    settle,
)

# The grid operator's qualities an estimate never replaces (docs/market.md, quality flags).
FINAL_QUALITIES = ("measured", "replaced")


def estimate_ignored(held: Sequence[Any] | None, quality: str) -> bool:
    """Whether the ledger keeps the grid operator's value it holds for an interval (``held``:
    ``[import_wh, export_wh, quality]``, or None) over a new value of ``quality``: an estimate never
    replaces a measured or replaced value (docs/market.md, quality flags). The market applies the
    rule here; peerwatt.statements replays it and peerwatt.gridops leaves such rows out of an import."""
    return held is not None and quality == "estimated" and held[2] in FINAL_QUALITIES


class MarketApp:
    """peerwatt's market application (see module docstring)."""

    name = "market"
    tx_types = frozenset({"order", "reading", "gridops"})
    # signed by a member's or validator's key (the engine checks that), not a meter's
    operator_tx_types = frozenset({"gridops"})
    # results naming the meter an operator's transaction is about (its erasure follows the meter's)
    subject_results = {"gridops": "meter"}

    # -- genesis and parameters ----------------------------------------------------------------

    def init_state(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"book": {}, "cleared": {}, "readings": {}, "settled": {}, "balances": {}, "resettle": []}

    def check_params(self, params: dict[str, Any], bounded: bool = False, rules: int = 1) -> None:
        market_params.check_params(params, bounded, rules)

    # -- transactions --------------------------------------------------------------------------

    def pending_budget(self, ctx: AppContext, env: Envelope) -> tuple[Any, int, str] | None:
        """How many more transactions of one kind the ledger takes, so a node turns away a burst
        that would otherwise all be booked (the extras as rejected) before the block that fills
        the count (chain.app): orders of one meter for one interval under
        ``max_orders_per_interval``, and readings of one meter for one interval under
        ``max_reading_corrections`` (the first reading, when none is recorded yet, and the
        corrections still allowed)."""
        if env.type not in ("order", "reading"):
            return None
        p = market_params.with_defaults(ctx.params)
        interval = str(env.body["interval"])
        if env.type == "order":
            limit = p["max_orders_per_interval"]
            if limit is None:
                return None
            placed = ctx.state.get("orders_placed", {}).get(interval, {}).get(env.signer, 0)
            return ("orders", env.signer, interval), limit - placed, "too_many_orders"
        limit = p["max_reading_corrections"]
        if limit is None:
            return None
        # as _check_reading and deliver_tx count: a reading is a correction when one is recorded
        # for its interval, and each correction taken counts in ``corrections``
        recorded = interval in ctx.state["readings"].get(env.signer, {})
        done = ctx.state.get("corrections", {}).get(env.signer, {}).get(interval, 0)
        remaining = limit - done + (0 if recorded else 1)
        return ("readings", env.signer, interval), remaining, "too_many_corrections"

    def check_tx(self, ctx: AppContext, env: Envelope) -> None:
        p = market_params.with_defaults(ctx.params)
        if env.type == "order":
            self._check_order(ctx, p, env)
        elif env.type == "gridops":
            _gridops_changes(ctx, p, env)
        else:
            self._check_reading(ctx, p, env)

    def deliver_tx(self, ctx: AppContext, env: Envelope, position: int) -> list[dict[str, Any]]:
        self.check_tx(ctx, env)
        body = env.body
        if env.type == "gridops":
            return self._deliver_gridops(ctx, market_params.with_defaults(ctx.params), env)
        if env.type == "order":
            interval = str(body["interval"])
            if market_params.with_defaults(ctx.params)["max_orders_per_interval"] is not None:
                placed = ctx.state.setdefault("orders_placed", {}).setdefault(interval, {})
                placed[env.signer] = placed.get(env.signer, 0) + 1
            book = ctx.state["book"].setdefault(interval, {})
            if body["energy_wh"] == 0:
                book.pop(env.signer, None)
                if not book:
                    del ctx.state["book"][interval]
                if ctx.rules >= 3:  # so that an older order arriving later cannot bring it back
                    ctx.state.setdefault("cancelled", {}).setdefault(interval, {})[env.signer] = env.seq
                return [{"kind": "order_cancelled", "interval": body["interval"], "meter": env.signer}]
            book[env.signer] = {
                "side": body["side"],
                "energy_wh": body["energy_wh"],
                "limit_price": body["limit_price"],
                "seq": env.seq,
                "position": position,
                "order": env.tx_hash.hex(),
            }
            return []
        meter_readings = ctx.state["readings"].setdefault(env.signer, {})
        key = str(body["interval"])
        previous = meter_readings.get(key)
        meter_readings[key] = [body["import_wh"], body["export_wh"], body["serial"]]
        interval_s = market_params.with_defaults(ctx.params)["interval_s"]
        for affected in (body["interval"], body["interval"] + interval_s):
            if str(affected) in ctx.state["settled"] and affected not in ctx.state["resettle"]:
                ctx.state["resettle"].append(affected)
        results = []
        if previous is not None:
            results.append({"kind": "reading_corrected", "interval": body["interval"], "meter": env.signer})
            if market_params.with_defaults(ctx.params)["max_reading_corrections"] is not None:
                counts = ctx.state.setdefault("corrections", {}).setdefault(env.signer, {})
                counts[key] = counts.get(key, 0) + 1
        flag = _reading_flag(ctx, env.signer, body["interval"], meter_readings)
        if flag is not None:
            results.append(
                {"kind": "reading_flag", "interval": body["interval"], "meter": env.signer, "flag": flag}
            )
        return results

    def _check_order(self, ctx: AppContext, p: dict[str, Any], env: Envelope) -> None:
        body = env.body
        interval = body["interval"]
        if interval % p["interval_s"]:
            raise Rejected("interval_not_aligned", f"interval must be a multiple of {p['interval_s']} s")
        if interval - p["gate_s"] <= ctx.time:
            raise Rejected("interval_closed", "the gate of this interval has closed")
        if ctx.rules >= 4 and interval <= ctx.state.get("gate_closed", -1):
            raise Rejected("interval_closed", "this interval was cleared before a vote moved its gate")
        if interval > ctx.time + p["horizon_s"]:
            raise Rejected("too_far_ahead", f"orders are accepted at most {p['horizon_s']} s ahead")
        newest = _newest_order_seq(ctx, str(interval), env.signer)
        if newest is not None and env.seq <= newest:
            raise Rejected(
                "stale_order", "a newer order or cancellation of this meter for this interval was booked"
            )
        limit = p["max_orders_per_interval"]
        if limit is not None:
            placed = ctx.state.get("orders_placed", {}).get(str(interval), {}).get(env.signer, 0)
            if placed >= limit:
                raise Rejected(
                    "too_many_orders",
                    f"a meter may place {limit} orders (replacements and cancellations included) "
                    "for one interval",
                )
        if body["energy_wh"] == 0:
            return
        if not p["feed_in_price"] <= body["limit_price"] <= p["retail_price"]:
            raise Rejected(
                "price_out_of_range",
                f"limit price must lie within [{p['feed_in_price']}, {p['retail_price']}]",
            )
        capacity_wh = ctx.meters[env.signer]["capacity_w"] * p["interval_s"] // 3600
        if body["energy_wh"] > capacity_wh:
            raise Rejected("above_capacity", f"at most {capacity_wh} Wh per interval for this meter")

    def _check_reading(self, ctx: AppContext, p: dict[str, Any], env: Envelope) -> None:
        body = env.body
        interval = body["interval"]
        if interval % p["interval_s"]:
            raise Rejected("interval_not_aligned", f"interval must be a multiple of {p['interval_s']} s")
        if interval + p["interval_s"] > ctx.time + 60:
            raise Rejected(
                "reading_too_early",
                "its interval has not ended yet (readings count from 60 s before the end)",
            )
        oldest = ctx.time - p["correction_window_intervals"] * p["interval_s"]
        if interval < oldest:
            raise Rejected("reading_too_old", "the interval is outside the correction window")
        previous = ctx.state["readings"].get(env.signer, {}).get(str(interval))
        if previous == [body["import_wh"], body["export_wh"], body["serial"]]:
            raise Rejected("duplicate_reading", "the same reading is already recorded")
        limit = p["max_reading_corrections"]
        if previous is not None and limit is not None:
            done = ctx.state.get("corrections", {}).get(env.signer, {}).get(str(interval), 0)
            if done >= limit:
                raise Rejected(
                    "too_many_corrections", f"a meter may correct its reading of an interval {limit} times"
                )

    # -- block end: gate closure clearing and settlement ----------------------------------------

    def end_block(self, ctx: AppContext) -> list[dict[str, Any]]:
        p = market_params.with_defaults(ctx.params)
        results: list[dict[str, Any]] = []
        for interval in sorted(ctx.state["book"], key=int):
            if int(interval) - p["gate_s"] <= ctx.time:
                results.extend(self._clear_interval(ctx, p, int(interval)))
                if ctx.rules >= 4:  # it clears once, whatever a later gate_s vote says
                    ctx.state["gate_closed"] = int(interval)
        results.extend(self._settle_due(ctx, p))
        results.extend(self._apply_corrections(ctx, p))
        self._prune(ctx, p)
        return results

    # -- settlement ----------------------------------------------------------------------------

    def _deliver_gridops(self, ctx: AppContext, p: dict[str, Any], env: Envelope) -> list[dict[str, Any]]:
        """Record the grid operator's changed rows and queue exactly the settled intervals they change."""
        body = env.body
        changed, ignored = _gridops_changes(ctx, p, env)
        rows = ctx.state.setdefault("gridops", {}).setdefault(body["meter"], {})
        queue = ctx.state.setdefault("resettle_gridops", [])
        settled = ctx.state["settled"]
        for row in changed:
            key = str(row["interval"])
            rows[key] = [row["import_wh"], row["export_wh"], row["quality"]]
            traded = key in settled and any(
                body["meter"] in (t["seller"], t["buyer"]) for t in settled[key]["trades"]
            )
            if traded and row["interval"] not in queue:
                queue.append(row["interval"])
        result: dict[str, Any] = {
            "kind": "gridops",
            "meter": body["meter"],
            "metering_point": body["metering_point"],
            "recorded": len(changed),
            "unchanged": len(body["rows"]) - len(changed) - len(ignored),
            "ignored_estimates": ignored,
        }
        if changed:
            result["from"] = min(r["interval"] for r in changed)
            result["to"] = max(r["interval"] for r in changed)
        return [result]

    def _measured(
        self,
        ctx: AppContext,
        p: dict[str, Any],
        interval: int,
        meters: list[str],
        recorded: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Delivery | str], set[str]]:
        """The meters whose delivery in ``interval`` does not come from their readings, by the
        settlement source: the grid operator's row; under ``gridops`` without one, missing; under
        ``meter_then_gridops`` without one, once the readings have left the state (they can no
        longer be corrected then), what they gave when the interval was settled (``recorded``).
        Also the meters whose figures are the grid operator's (its row, or missing from it).
        On rules 5, re-settling an interval already settled (``recorded``, kept whatever the
        source was) under ``gridops``, a meter without a row keeps what the interval settled on:
        a vote to ``gridops`` does not undo the intervals settled on the meters before it."""
        if p["settlement_source"] == METER:
            return {}, set()
        data = ctx.state.get("gridops", {})
        readings = ctx.state["readings"]
        measured: dict[str, Delivery | str] = {}
        kept: set[str] = set()  # rules 5: meters that keep what they settled on under gridops
        for m in meters:
            row = data.get(m, {}).get(str(interval))
            if row is not None:
                measured[m] = Delivery(import_wh=row[0], export_wh=row[1])
            elif p["settlement_source"] == GRIDOPS and ctx.rules >= 5 and recorded and m in recorded:
                outcome = recorded[m]
                measured[m] = outcome if isinstance(outcome, str) else Delivery(*outcome)
                if outcome != MISSING_GRIDOPS:
                    kept.add(m)
            elif p["settlement_source"] == GRIDOPS:
                measured[m] = MISSING_GRIDOPS
            elif recorded is not None and m in recorded:
                kept = readings.get(m, {})
                if str(interval - p["interval_s"]) not in kept or str(interval) not in kept:
                    outcome = recorded[m]
                    measured[m] = outcome if isinstance(outcome, str) else Delivery(*outcome)
        if p["settlement_source"] == GRIDOPS:
            return measured, set(measured) - kept
        return measured, {m for m in meters if str(interval) in data.get(m, {})}

    def _settlement(
        self,
        ctx: AppContext,
        p: dict[str, Any],
        interval: int,
        trades: list[dict],
        recorded: dict[str, Any] | None = None,
        rates: list[int] | None = None,
    ) -> tuple[Settlement, set[str]]:
        """``rates``: the [grid fee, levies] per kWh kept at the interval's gate closure
        (``fee_rates_at = "clearing"``); without them, the rates in force now."""
        grid_fee_per_kwh, levies_per_kwh = rates or (p["grid_fee_per_kwh"], p["levies_per_kwh"])
        readings = ctx.state["readings"]

        def reading(meter: str, at: int) -> Reading | None:
            r = readings.get(meter, {}).get(str(at))
            return None if r is None else Reading(*r)

        objs = [
            Trade(
                t["seller"],
                t["buyer"],
                t["sell_order"],
                t["buy_order"],
                t["energy_wh"],
                t["price"],
                t["value"],
                t["grid_fee"],
                t["levies"],
            )
            for t in trades
        ]
        meters = sorted({t.seller for t in objs} | {t.buyer for t in objs})
        measured, from_gridops = self._measured(ctx, p, interval, meters, recorded)
        settlement = settle(
            objs,
            start_readings={m: reading(m, interval - p["interval_s"]) for m in meters},
            end_readings={m: reading(m, interval) for m in meters},
            capacity_w={m: ctx.meters[m]["capacity_w"] for m in meters},
            enrolled_serials={m: ctx.meters[m]["serial"] for m in meters},
            interval_s=p["interval_s"],
            grid_fee_per_kwh=grid_fee_per_kwh,
            levies_per_kwh=levies_per_kwh,
            measured=measured,
        )
        return settlement, from_gridops

    def _all_readings_in(self, ctx: AppContext, p: dict[str, Any], interval: int, trades: list[dict]) -> bool:
        """Whether every traded meter's figures for ``interval`` are in, from the settlement's source."""
        readings = ctx.state["readings"]
        data = ctx.state.get("gridops", {})
        meters = {t["seller"] for t in trades} | {t["buyer"] for t in trades}

        def has_data(m: str) -> bool:
            return str(interval) in data.get(m, {})

        def has_readings(m: str) -> bool:
            return all(str(at) in readings.get(m, {}) for at in (interval - p["interval_s"], interval))

        if p["settlement_source"] == GRIDOPS:
            return all(has_data(m) for m in meters)
        if p["settlement_source"] == METER:
            return all(has_readings(m) for m in meters)
        return all(has_data(m) or has_readings(m) for m in meters)

    def _deadline(self, p: dict[str, Any], interval: int) -> int:
        """When an interval is settled with whatever is in (missing figures flag its trades)."""
        if p["settlement_source"] == GRIDOPS:
            return interval + p["interval_s"] + p["gridops_window_s"]
        return interval + (1 + p["settle_after_intervals"]) * p["interval_s"]

    def _apply_balances(
        self, ctx: AppContext, interval: int, changes: dict[str, int]
    ) -> list[dict[str, Any]]:
        """Credit/debit members (a meter's owner) and community accounts; one result per account."""
        by_account: dict[str, int] = {}
        for account, delta in changes.items():
            owner = ctx.meters[account]["owner"] if account in ctx.meters else account
            by_account[owner] = by_account.get(owner, 0) + delta
        balances = ctx.state["balances"]
        results = []
        for account in sorted(by_account):
            delta = by_account[account]
            if delta:
                balances[account] = balances.get(account, 0) + delta
                results.append({"kind": "balance", "interval": interval, "account": account, "delta": delta})
        return results

    def _settle_due(self, ctx: AppContext, p: dict[str, Any]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for key in sorted(ctx.state["cleared"], key=int):
            interval = int(key)
            cleared = ctx.state["cleared"][key]
            trades, rates = cleared["trades"], cleared.get("rates")
            deadline = self._deadline(p, interval)
            if ctx.time < interval + p["interval_s"]:
                continue
            if ctx.time < deadline and not self._all_readings_in(ctx, p, interval, trades):
                continue
            settlement, from_gridops = self._settlement(ctx, p, interval, trades, rates=rates)
            for ts in settlement.trades:
                results.append(
                    _with_source(p, from_gridops, ts.seller, ts.buyer, _settlement_result(interval, ts))
                )
            results.extend(self._apply_balances(ctx, interval, settlement.balance_changes))
            del ctx.state["cleared"][key]
            ctx.state["settled"][key] = {"trades": trades, "settlement": _encode_settlement(settlement)}
            if rates is not None:
                ctx.state["settled"][key]["rates"] = rates
            if p["settlement_source"] != METER or ctx.rules >= 5:  # rules 5: a vote may change it
                ctx.state["settled"][key]["measured"] = _encode_measured(settlement)
        return results

    def _apply_corrections(self, ctx: AppContext, p: dict[str, Any]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        from_gridops = set(ctx.state.get("resettle_gridops", []))
        for interval in sorted(set(ctx.state["resettle"]) | from_gridops):
            stored = ctx.state["settled"].get(str(interval))
            if stored is None:
                continue
            previous = _decode_settlement(stored["settlement"])
            corrected, gridops_meters = self._settlement(
                ctx, p, interval, stored["trades"], stored.get("measured"), stored.get("rates")
            )
            change = adjust(previous, corrected)
            if change.is_empty:
                if ctx.rules >= 5 or (ctx.rules >= 3 and p["settlement_source"] != METER):
                    # no money moves, but a re-settlement on the grid operator's data after the
                    # readings have left the state starts from what they give now
                    stored["measured"] = _encode_measured(corrected)
                continue
            for ta in change.trades:
                if interval in from_gridops:
                    reason = "gridops_data"
                elif ta.status_before != "settled":
                    reason = "late_reading"
                else:
                    reason = "corrected_reading"
                adjustment = {
                    "kind": "adjustment",
                    "interval": interval,
                    "trade": f"{ta.sell_order[:24]}:{ta.buy_order[:24]}",
                    "seller": ta.seller,
                    "buyer": ta.buyer,
                    "delta_wh": ta.settled_wh_delta,
                    "delta_value": ta.value_delta,
                    "delta_grid_fee": ta.grid_fee_delta,
                    "delta_levies": ta.levies_delta,
                    "status": ta.status_after,
                    "flag": ta.flag_after,
                    "reason": reason,
                }
                results.append(_with_source(p, gridops_meters, ta.seller, ta.buyer, adjustment))
            results.extend(self._apply_balances(ctx, interval, change.balance_changes))
            stored["settlement"] = _encode_settlement(corrected)
            if p["settlement_source"] != METER or ctx.rules >= 5:
                stored["measured"] = _encode_measured(corrected)
        ctx.state["resettle"] = []
        if "resettle_gridops" in ctx.state:
            ctx.state["resettle_gridops"] = []
        return results

    def _clear_interval(self, ctx: AppContext, p: dict[str, Any], interval: int) -> list[dict[str, Any]]:
        book = ctx.state["book"].pop(str(interval))
        # A meter revoked since it ordered leaves the book: its readings are refused, so a trade
        # it cleared could never settle and would strand its counterparty.
        withdrawn = sorted(m for m in book if not ctx.meters.get(m, {}).get("active", False))
        orders = [
            Order(o["order"], meter, o["side"], o["energy_wh"], o["limit_price"], o["position"])
            for meter, o in sorted(book.items())
            if meter not in withdrawn
        ]
        outcome = clear(
            orders,
            p["mechanism"],
            community_price=p["community_price"] if p["mechanism"] == COMMUNITY else None,
            grid_fee_per_kwh=p["grid_fee_per_kwh"],
            levies_per_kwh=p["levies_per_kwh"],
        )
        trades = [{"kind": "trade", "interval": interval, **asdict(t)} for t in outcome.trades]
        filled: dict[str, int] = {}
        for t in outcome.trades:
            filled[t.sell_order] = filled.get(t.sell_order, 0) + t.energy_wh
            filled[t.buy_order] = filled.get(t.buy_order, 0) + t.energy_wh
        asks = sum(1 for o in orders if o.side == "sell")
        results: list[dict[str, Any]] = [
            {
                "kind": "clearing",
                "interval": interval,
                "mechanism": outcome.mechanism,
                "price": outcome.price,
                "volume_wh": outcome.volume_wh,
                "trades": len(trades),
                "asks": asks,
                "bids": len(orders) - asks,
                "ask_wh": sum(o.energy_wh for o in orders if o.side == "sell"),
                "bid_wh": sum(o.energy_wh for o in orders if o.side == "buy"),
            }
        ]
        results.extend(
            {
                "kind": "order_outcome",
                "interval": interval,
                "meter": o.meter,
                "order": o.order_id,
                "side": o.side,
                "energy_wh": o.energy_wh,
                "limit_price": o.limit_price,
                "filled_wh": filled.get(o.order_id, 0),
            }
            for o in orders
        )
        results.extend(
            {
                "kind": "order_outcome",
                "interval": interval,
                "meter": meter,
                "order": book[meter]["order"],
                "side": book[meter]["side"],
                "energy_wh": book[meter]["energy_wh"],
                "limit_price": book[meter]["limit_price"],
                "filled_wh": 0,
                "withdrawn": "meter_revoked",
            }
            for meter in withdrawn
        )
        results.extend(trades)
        if trades:
            ctx.state["cleared"][str(interval)] = {"trades": trades}
            if p["fee_rates_at"] == "clearing":  # settled at these, whatever a vote sets meanwhile
                ctx.state["cleared"][str(interval)]["rates"] = [p["grid_fee_per_kwh"], p["levies_per_kwh"]]
        return results

    def _prune(self, ctx: AppContext, p: dict[str, Any]) -> None:
        """Forget readings and settlements that can no longer matter (outside the correction window)."""
        keep_from = ctx.time - (p["correction_window_intervals"] + 1) * p["interval_s"]
        pending = [int(i) for i in ctx.state["cleared"]]
        # readings settle pending intervals; on rules 5 also those waiting under gridops, which a
        # vote back to meter readings settles on them
        if pending and (p["settlement_source"] != GRIDOPS or ctx.rules >= 5):
            keep_from = min(keep_from, min(pending) - p["interval_s"])
        for meter in list(ctx.state["readings"]):
            readings = ctx.state["readings"][meter]
            for interval in [i for i in readings if int(i) < keep_from]:
                del readings[interval]
        corrections = ctx.state.get("corrections")
        for meter in list(corrections or ()):
            counts = corrections[meter]
            for interval in [i for i in counts if int(i) < keep_from]:
                del counts[interval]
            if not counts:
                del corrections[meter]
        placed = ctx.state.get("orders_placed")
        for interval in [i for i in placed or () if int(i) - p["gate_s"] <= ctx.time]:
            del placed[interval]  # its gate has closed: no order for it is taken any more
        cancelled = ctx.state.get("cancelled")
        for interval in [i for i in cancelled or () if int(i) - p["gate_s"] <= ctx.time]:
            del cancelled[interval]  # (likewise)
        oldest_data = ctx.time - p["interval_s"] - p["gridops_window_s"]
        keep_settled_from = keep_from
        if p["settlement_source"] != METER:
            # the grid operator's data may still change what was settled (and is kept as long)
            keep_settled_from = min(keep_from, oldest_data)
        for interval in [i for i in ctx.state["settled"] if int(i) < keep_settled_from]:
            del ctx.state["settled"][interval]
        data = ctx.state.get("gridops")
        # once per interval (a walk over all of it in every block would cost every block), and
        # also after the community went back to settling on its meters alone
        floor = oldest_data - oldest_data % p["interval_s"]
        if data is not None and ctx.state.get("gridops_pruned") != floor:
            ctx.state["gridops_pruned"] = floor
            for meter in list(data):
                for interval in [i for i in data[meter] if int(i) < floor]:
                    del data[meter][interval]
                if not data[meter]:
                    del data[meter]

    def next_block_due(self, ctx: AppContext) -> int | None:
        p = market_params.with_defaults(ctx.params)
        times = [int(i) - p["gate_s"] for i in ctx.state["book"]]
        times += [self._deadline(p, int(i)) for i in ctx.state["cleared"]]
        due = [t for t in times if t > ctx.time]
        return min(due) if due else None


def _settlement_result(interval: int, ts: TradeSettlement) -> dict[str, Any]:
    return {
        "kind": "settlement",
        "interval": interval,
        "trade": f"{ts.sell_order[:24]}:{ts.buy_order[:24]}",
        "seller": ts.seller,
        "buyer": ts.buyer,
        "energy_wh": ts.traded_wh,
        "settled_wh": ts.settled_wh,
        "price": ts.price,
        "value": ts.value,
        "grid_fee": ts.grid_fee,
        "levies": ts.levies,
        "status": ts.status,
        "flag": ts.flag,
        "flagged_meter": ts.flagged_meter,
    }


def _with_source(
    p: dict[str, Any], from_gridops: set[str], seller: str, buyer: str, result: dict[str, Any]
) -> dict[str, Any]:
    """``result`` with the source of its energy figures (only where the community does not settle on
    its meters alone): ``gridops`` or ``meter`` when both parties' figures came from there, else
    ``mixed``."""
    if p["settlement_source"] == METER:
        return result
    sources = {GRIDOPS if m in from_gridops else METER for m in (seller, buyer)}
    result["source"] = sources.pop() if len(sources) == 1 else "mixed"
    return result


def _gridops_changes(
    ctx: AppContext, p: dict[str, Any], env: Envelope
) -> tuple[list[dict[str, Any]], list[int]]:
    """Check a ``gridops`` transaction (raise Rejected) and return the rows it changes and the
    intervals of the estimates it may not record (the ledger holds a measured or replaced value).
    The grid operator's values are not checked against the meter's capacity: they are the
    operator's validated billing quantities."""
    body = env.body
    if p["settlement_source"] == METER:
        raise Rejected("gridops_not_used", "this community settles on its meters' readings alone")
    if env.signer not in market_params.gridops_operators(p):
        raise Rejected("not_gridops_operator", "the signer is not one of the community's gridops_operators")
    if body["meter"] not in ctx.meters:
        raise Rejected("unknown_meter", f"no meter {body['meter']} was ever enrolled")
    recorded = ctx.state.get("gridops", {}).get(body["meter"], {})
    seen: set[int] = set()
    changed: list[dict[str, Any]] = []
    ignored: list[int] = []
    for row in body["rows"]:
        interval = row["interval"]
        if interval % p["interval_s"]:
            raise Rejected(
                "interval_not_aligned", f"interval {interval} is not a multiple of {p['interval_s']} s"
            )
        if interval in seen:
            raise Rejected("duplicate_interval", f"interval {interval} appears twice")
        seen.add(interval)
        if interval + p["interval_s"] > ctx.time:
            raise Rejected("interval_not_ended", f"interval {interval} has not ended")
        if interval + p["interval_s"] + p["gridops_window_s"] < ctx.time:
            raise Rejected("gridops_too_old", f"interval {interval} is outside the gridops_window_s")
        before = recorded.get(str(interval))
        value = [row["import_wh"], row["export_wh"], row["quality"]]
        if before == value:
            continue
        if estimate_ignored(before, row["quality"]):
            ignored.append(interval)
            continue
        changed.append(row)
    if not changed and not ignored:
        raise Rejected("duplicate_import", "the ledger already holds exactly these values")
    return changed, ignored


def _newest_order_seq(ctx: AppContext, interval: str, meter: str) -> int | None:
    """The seq of the meter's newest order booked for ``interval``: the one in the book, and on a
    ledger with rules 3 also a cancellation (kept until the interval's gate closes); None if none."""
    in_effect = ctx.state["book"].get(interval, {}).get(meter)
    seqs = [] if in_effect is None else [in_effect["seq"]]
    if ctx.rules >= 3:
        cancelled = ctx.state.get("cancelled", {}).get(interval, {}).get(meter)
        seqs += [] if cancelled is None else [cancelled]
    return max(seqs, default=None)


def _reading_flag(ctx: AppContext, meter: str, interval: int, readings: dict[str, list]) -> str | None:
    """Why the reading just recorded for ``interval`` cannot be true, or None (checked against the
    enrolled serial and capacity and the meter's nearest earlier and later readings kept)."""
    kept = [int(i) for i in readings]
    earlier = max([i for i in kept if i < interval], default=None)
    later = min([i for i in kept if i > interval], default=None)
    enrolled = ctx.meters[meter]
    return check_reading(
        Reading(*readings[str(interval)]),
        enrolled_serial=enrolled["serial"],
        capacity_w=enrolled["capacity_w"],
        earlier=None if earlier is None else (interval - earlier, Reading(*readings[str(earlier)])),
        later=None if later is None else (later - interval, Reading(*readings[str(later)])),
    )


def _encode_settlement(settlement: Settlement) -> dict[str, Any]:
    """What a later correction needs of a settlement (JSON values for the ledger state)."""
    return {
        "trades": [
            {name: getattr(ts, name) for name in TradeSettlement.__dataclass_fields__}
            for ts in settlement.trades
        ],
        "balance_changes": dict(settlement.balance_changes),
    }


def _encode_measured(settlement: Settlement) -> dict[str, Any]:
    """Per traded meter what its figures gave: ``[import_wh, export_wh]`` or the flag (kept where
    the grid operator's data may re-settle the interval after its readings have left the state)."""
    out: dict[str, Any] = {m: [d.import_wh, d.export_wh] for m, d in settlement.deliveries.items()}
    out.update(settlement.meter_flags)
    return dict(sorted(out.items()))


def _decode_settlement(data: dict[str, Any]) -> Settlement:
    return Settlement(
        trades=tuple(TradeSettlement(**t) for t in data["trades"]),
        meter_flags={},
        deliveries={},
        balance_changes=dict(data["balance_changes"]),
    )
