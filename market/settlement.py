"""Settling an interval's trades against the metered readings that bound it, and corrections.

A pure, integer-only function like the clearing: every peer re-executes it from the ledger.
A seller is paid only for energy it actually exported and a buyer pays only for energy it
actually imported; a shortfall is shared pro rata over that party's trades. A meter whose
readings cannot be trusted is never guessed: its trades stay unsettled with a reason code.
A corrected reading later produces an :class:`Adjustment` (a credit note), never an edit.

Rules (also in docs/market.md):

- delivered export = end.export_wh - start.export_wh; delivered import likewise.
- A traded meter is unsettleable, checked in this order, when: a reading is missing
  (``missing_reading``), the serial differs between the two readings (``meter_replaced``), the
  readings carry a serial that is not the one enrolled for the meter (``serial_not_enrolled``), a
  counter went backwards (``counter_backwards``), or a delivered energy exceeds what its
  enrolled capacity allows, ``delivered_wh * 3600 > capacity_w * interval_s``
  (``implausible_jump``). Every trade with such a meter is unsettled and carries the flag (the
  seller's if both are flagged).
- A seller's settled total is min(sold, exported), shared over its trades pro rata to their
  energy (largest remainder, ties in trade order); a buyer's is min(bought, imported) likewise.
  Shares are taken over all of a party's trades, settleable or not, so a flagged counterparty
  never lets a party's other trades claim energy that belonged to the flagged one.
- A trade's settled energy is min(seller share, buyer share); value, grid fee and levies are
  recomputed on it at the trade's price (half-even), so the buyer is charged exactly what the
  seller is credited plus the separately shown fee and levies.
- Balance changes (micro-units): seller +value; buyer -(value + grid_fee + levies); the
  ``grid_fees`` and ``levies`` community accounts receive the fee and levies. They sum to 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from market.clearing import Trade
from market.money import apportion, require_int, value_micro

MISSING_READING = "missing_reading"
METER_REPLACED = "meter_replaced"
COUNTER_BACKWARDS = "counter_backwards"
SERIAL_NOT_ENROLLED = "serial_not_enrolled"
IMPLAUSIBLE_JUMP = "implausible_jump"
MISSING_GRIDOPS = "missing_gridops"
FLAGS = (
    MISSING_READING,
    METER_REPLACED,
    SERIAL_NOT_ENROLLED,
    COUNTER_BACKWARDS,
    IMPLAUSIBLE_JUMP,
    MISSING_GRIDOPS,
)

SETTLED = "settled"
UNSETTLED = "unsettled"

GRID_FEES_ACCOUNT = "grid_fees"
LEVIES_ACCOUNT = "levies"

SECONDS_PER_HOUR = 3600


@dataclass(frozen=True, slots=True)
class Reading:
    """A meter's signed cumulative counters (Wh) at an interval boundary, and its serial."""

    import_wh: int
    export_wh: int
    serial: str

    def __post_init__(self) -> None:
        require_int("import_wh", self.import_wh, 0)
        require_int("export_wh", self.export_wh, 0)
        if not isinstance(self.serial, str) or not self.serial:
            raise ValueError(f"serial must be a non-empty string, got {self.serial!r}")


@dataclass(frozen=True, slots=True)
class Delivery:
    """Energy a meter measured during the interval (end minus start counters)."""

    import_wh: int
    export_wh: int


@dataclass(frozen=True, slots=True)
class TradeSettlement:
    """The settlement of one trade: ``index`` is its position in the interval's trade list."""

    index: int
    sell_order: str
    buy_order: str
    seller: str
    buyer: str
    price: int
    traded_wh: int
    settled_wh: int
    value: int
    grid_fee: int
    levies: int
    status: str
    flag: str | None
    flagged_meter: str | None


@dataclass(frozen=True)
class Settlement:
    """An interval's settlement: per trade, per unsettleable meter, per account."""

    trades: tuple[TradeSettlement, ...]
    meter_flags: dict[str, str]
    deliveries: dict[str, Delivery]
    balance_changes: dict[str, int]


@dataclass(frozen=True, slots=True)
class TradeAdjustment:
    """What a correction changes on one trade (corrected minus previous)."""

    index: int
    sell_order: str
    buy_order: str
    seller: str
    buyer: str
    settled_wh_delta: int
    value_delta: int
    grid_fee_delta: int
    levies_delta: int
    status_before: str
    status_after: str
    flag_after: str | None


@dataclass(frozen=True)
class Adjustment:
    """A credit note for an interval already settled: per changed trade; per meter, the change
    of its settled energy sold and bought (Wh); and the non-zero balance changes (micro-units,
    summing to 0) to apply on top of the earlier settlement's. Only non-zero entries appear."""

    trades: tuple[TradeAdjustment, ...]
    sold_wh_changes: dict[str, int]
    bought_wh_changes: dict[str, int]
    balance_changes: dict[str, int]

    @property
    def is_empty(self) -> bool:
        return not self.trades and not self.balance_changes


def check_meter(
    start: Reading | None,
    end: Reading | None,
    capacity_w: int,
    interval_s: int,
    enrolled_serial: str | None = None,
) -> Delivery | str:
    """The meter's delivery in the interval, or the reason code why it cannot be trusted.

    ``interval_s`` is the time between the two readings; ``enrolled_serial`` (if given) the
    serial the meter was enrolled with."""
    if start is None or end is None:
        return MISSING_READING
    if start.serial != end.serial:
        return METER_REPLACED
    if enrolled_serial is not None and end.serial != enrolled_serial:
        return SERIAL_NOT_ENROLLED
    import_wh = end.import_wh - start.import_wh
    export_wh = end.export_wh - start.export_wh
    if import_wh < 0 or export_wh < 0:
        return COUNTER_BACKWARDS
    if not within_capacity(max(import_wh, export_wh), capacity_w, interval_s):
        return IMPLAUSIBLE_JUMP
    return Delivery(import_wh=import_wh, export_wh=export_wh)


def within_capacity(energy_wh: int, capacity_w: int, elapsed_s: int) -> bool:
    """Whether a meter of ``capacity_w`` can move ``energy_wh`` in ``elapsed_s`` (exact integers:
    energy * 3600 <= power * seconds)."""
    return energy_wh * SECONDS_PER_HOUR <= capacity_w * elapsed_s


def check_reading(
    reading: Reading,
    *,
    enrolled_serial: str,
    capacity_w: int,
    earlier: tuple[int, Reading] | None = None,
    later: tuple[int, Reading] | None = None,
) -> str | None:
    """Why a single reading cannot be true, or None: a serial that is not the enrolled one
    (``serial_not_enrolled``), or counters that moved more than the enrolled capacity allows in
    the time elapsed since the ``earlier`` or until the ``later`` reading of the same meter and
    serial (``implausible_jump``). ``earlier``/``later`` are ``(seconds apart, reading)``. A
    counter going backwards is left to the settlement (a replaced meter restarts its counters)."""
    if reading.serial != enrolled_serial:
        return SERIAL_NOT_ENROLLED
    for neighbour, first_is_neighbour in ((earlier, True), (later, False)):
        if neighbour is None:
            continue
        elapsed_s, other = neighbour
        if other.serial != reading.serial:
            continue
        first, second = (other, reading) if first_is_neighbour else (reading, other)
        moved = max(second.import_wh - first.import_wh, second.export_wh - first.export_wh)
        if moved > 0 and not within_capacity(moved, capacity_w, elapsed_s):
            return IMPLAUSIBLE_JUMP
    return None


def _shares(trades: Sequence[Trade], party_of: str, measured: Mapping[str, int]) -> dict[int, int]:
    """Per trade index, the energy its ``party_of`` side ("seller" or "buyer") can settle."""
    by_party: dict[str, list[int]] = {}
    for index, trade in enumerate(trades):
        by_party.setdefault(getattr(trade, party_of), []).append(index)
    shares: dict[int, int] = {}
    for party, indexes in by_party.items():
        if party not in measured:
            continue  # unsettleable: no share
        energies = [trades[i].energy_wh for i in indexes]
        total = min(sum(energies), measured[party])
        for i, share in zip(indexes, apportion(total, energies), strict=True):
            shares[i] = share
    return shares


def settle(
    trades: Sequence[Trade],
    *,
    start_readings: Mapping[str, Reading | None],
    end_readings: Mapping[str, Reading | None],
    capacity_w: Mapping[str, int],
    interval_s: int,
    grid_fee_per_kwh: int = 0,
    levies_per_kwh: int = 0,
    enrolled_serials: Mapping[str, str] | None = None,
    measured: Mapping[str, Delivery | str] | None = None,
) -> Settlement:
    """Settle one interval's ``trades`` (in their cleared order) against the meters' readings.

    ``start_readings``/``end_readings`` map a meter key id to its reading at the interval's
    start/end (absent or ``None`` = missing); ``capacity_w`` maps every traded meter to its
    enrolled maximum power, and ``enrolled_serials`` (when given) to its enrolled serial. Fee and
    levies rates are the community's per-kWh parameters. ``measured`` (when given) holds, for some
    meters, their delivery from another source (the grid operator's data) or the flag why there is
    none; those meters' readings are not looked at.
    """
    require_int("interval_s", interval_s, 1)
    require_int("grid_fee_per_kwh", grid_fee_per_kwh, 0)
    require_int("levies_per_kwh", levies_per_kwh, 0)
    meters = sorted({t.seller for t in trades} | {t.buyer for t in trades})
    for account in (GRID_FEES_ACCOUNT, LEVIES_ACCOUNT):
        if account in meters:
            raise ValueError(f"a meter may not be named {account!r} (a community account)")
    flags, deliveries = _check_meters(
        meters, start_readings, end_readings, capacity_w, interval_s, enrolled_serials, measured or {}
    )
    seller_shares = _shares(trades, "seller", {m: d.export_wh for m, d in deliveries.items()})
    buyer_shares = _shares(trades, "buyer", {m: d.import_wh for m, d in deliveries.items()})
    balances = dict.fromkeys([*meters, GRID_FEES_ACCOUNT, LEVIES_ACCOUNT], 0)
    results: list[TradeSettlement] = []
    for index, trade in enumerate(trades):
        flagged = next((m for m in (trade.seller, trade.buyer) if m in flags), None)
        if flagged is None:
            settled_wh = min(seller_shares[index], buyer_shares[index])
            value = value_micro(settled_wh, trade.price)
            grid_fee = value_micro(settled_wh, grid_fee_per_kwh)
            levies = value_micro(settled_wh, levies_per_kwh)
            balances[trade.seller] += value
            balances[trade.buyer] -= value + grid_fee + levies
            balances[GRID_FEES_ACCOUNT] += grid_fee
            balances[LEVIES_ACCOUNT] += levies
            status, flag = SETTLED, None
        else:
            settled_wh = value = grid_fee = levies = 0
            status, flag = UNSETTLED, flags[flagged]
        results.append(
            TradeSettlement(
                index=index,
                sell_order=trade.sell_order,
                buy_order=trade.buy_order,
                seller=trade.seller,
                buyer=trade.buyer,
                price=trade.price,
                traded_wh=trade.energy_wh,
                settled_wh=settled_wh,
                value=value,
                grid_fee=grid_fee,
                levies=levies,
                status=status,
                flag=flag,
                flagged_meter=flagged,
            )
        )
    return Settlement(
        trades=tuple(results),
        meter_flags=flags,
        deliveries=deliveries,
        balance_changes=balances,
    )


def _check_meters(
    meters: Sequence[str],
    start_readings: Mapping[str, Reading | None],
    end_readings: Mapping[str, Reading | None],
    capacity_w: Mapping[str, int],
    interval_s: int,
    enrolled_serials: Mapping[str, str] | None,
    measured: Mapping[str, Delivery | str],
) -> tuple[dict[str, str], dict[str, Delivery]]:
    """Per traded meter: its delivery in the interval, or the flag saying why its readings cannot
    be trusted (each meter in exactly one of the two maps); ``measured`` overrides the readings."""
    flags: dict[str, str] = {}
    deliveries: dict[str, Delivery] = {}
    for meter in meters:
        if meter not in capacity_w:
            raise ValueError(f"no enrolled capacity for meter {meter}")
        capacity = require_int(f"capacity_w of {meter}", capacity_w[meter], 0)
        if meter in measured:
            given = measured[meter]
            if isinstance(given, str):
                flags[meter] = given
            else:
                require_int(f"import_wh of {meter}", given.import_wh, 0)
                require_int(f"export_wh of {meter}", given.export_wh, 0)
                deliveries[meter] = given
            continue
        outcome = check_meter(
            start_readings.get(meter),
            end_readings.get(meter),
            capacity,
            interval_s,
            None if enrolled_serials is None else enrolled_serials[meter],
        )
        if isinstance(outcome, str):
            flags[meter] = outcome
        else:
            deliveries[meter] = outcome
    return flags, deliveries


def adjust(previous: Settlement, corrected: Settlement) -> Adjustment:
    """The adjustment entries that turn ``previous`` into ``corrected`` (same interval, same
    trades, e.g. after a corrected reading): per trade and per account, corrected minus
    previous. Nothing changed gives an empty adjustment."""
    if len(previous.trades) != len(corrected.trades) or any(
        (a.index, a.sell_order, a.buy_order, a.traded_wh, a.price)
        != (b.index, b.sell_order, b.buy_order, b.traded_wh, b.price)
        for a, b in zip(previous.trades, corrected.trades, strict=True)
    ):
        raise ValueError("the two settlements are not of the same trades (same interval?)")
    changes: list[TradeAdjustment] = []
    for before, after in zip(previous.trades, corrected.trades, strict=True):
        if before == after:
            continue
        changes.append(
            TradeAdjustment(
                index=after.index,
                sell_order=after.sell_order,
                buy_order=after.buy_order,
                seller=after.seller,
                buyer=after.buyer,
                settled_wh_delta=after.settled_wh - before.settled_wh,
                value_delta=after.value - before.value,
                grid_fee_delta=after.grid_fee - before.grid_fee,
                levies_delta=after.levies - before.levies,
                status_before=before.status,
                status_after=after.status,
                flag_after=after.flag,
            )
        )
    sold: dict[str, int] = {}
    bought: dict[str, int] = {}
    for change in changes:
        sold[change.seller] = sold.get(change.seller, 0) + change.settled_wh_delta
        bought[change.buyer] = bought.get(change.buyer, 0) + change.settled_wh_delta
    accounts = sorted(set(previous.balance_changes) | set(corrected.balance_changes))
    deltas = {
        account: corrected.balance_changes.get(account, 0) - previous.balance_changes.get(account, 0)
        for account in accounts
    }
    return Adjustment(
        trades=tuple(changes),
        sold_wh_changes={m: d for m, d in sorted(sold.items()) if d != 0},
        bought_wh_changes={m: d for m, d in sorted(bought.items()) if d != 0},
        balance_changes={a: d for a, d in deltas.items() if d != 0},
    )


def apply_adjustment(settlement: dict[str, Any], adjustment: dict[str, Any]) -> None:
    """Fold an ``adjustment`` result into the ``settlement`` result of its trade (a copy the
    caller owns): the settlement as it stands after the correction."""
    settlement["settled_wh"] += adjustment["delta_wh"]
    settlement["value"] += adjustment["delta_value"]
    settlement["grid_fee"] += adjustment["delta_grid_fee"]
    settlement["levies"] += adjustment["delta_levies"]
    settlement["status"], settlement["flag"] = adjustment["status"], adjustment["flag"]
