"""The household agent loop: read the meter, account interval energy, sign and send readings and
orders through the durable outbox, check receipts, publish status.

One ``poll()`` does one cycle; ``run()`` repeats it every ``poll_s`` of ledger time. Meter faults
stop offering (nothing is offered that cannot be backed), are logged once, shown in the status,
and the agent resumes by itself when the meter answers again.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from chain import messages
from chain.block import result_leaves
from chain.canonical import CanonicalError, loads_strict
from chain.config_proof import TrustedConfig
from chain.envelope import Rejected, sign_envelope
from chain.genesis import Genesis
from chain.keys import PrivateKey, key_id
from chain.notice import open_notice, refusal_threshold
from meter_agent.byte_stream import PushMeterReader
from meter_agent.counters import EnergyCounters
from meter_agent.homeassistant import discovery_payload, discovery_topic, state_payload, state_topic
from meter_agent.modbus_reader import MeterConnectionError, MeterError, MeterSample, MeterTimeout
from meter_agent.outbox import DEFAULT_CONFIRM_AFTER_S, Outbox, OutboxError
from meter_agent.probe import AGENT_VOLTAGE_RANGE_V, plausibility
from meter_agent.receipts import (
    MAX_CONFIG_BYTES,
    MAX_RECEIPT_BYTES,
    ReceiptError,
    follow_config,
    genesis_config,
    malformed,
    verify_included,
    verify_receipt,
)
from meter_agent.strategy import (
    OrderPlan,
    StrategyConfig,
    forecast_net_export_wh,
    needs_replacement,
    plan_order,
)
from peerwatt.bus import Bus, Topics

log = logging.getLogger("peerwatt.agent")

HISTORY_S = 2 * 86_400
READING_TTL_S = 86_400
# Trades kept whole (in memory and in the state file): once more are kept, settled ones leave,
# the oldest interval's first, their figures folded into running totals (Agent.totals counts every
# trade ever received; see Agent._fold). A trade still pending is never folded: pending trades are
# few (they settle within settle_after_intervals, or when the grid operator's data comes where the
# community settles on it, and a revoked agent stops trading).
MAX_RECEIPTS = 500
# A folded trade the ledger may still adjust keeps a small record (its side, traded energy, status
# and the keys of the adjustments counted), so an adjustment of it counts once and moves it in or
# out of the unsettled figures. It is kept while its interval is within the ledger's adjustment
# window (Agent.adjustment_window_s) of the newest block heard of, and this margin more: for the
# agent following a vote that lengthened the window late, and receipts that come out of order.
ADJUSTMENT_MARGIN_S = 86_400
# the running totals of the folded trades (in the state file as "folded_totals"): their settled
# figures, those of the ones left unsettled whose record is gone, the newest interval folded, the
# interval below which no record is kept, and the newest block time heard of in a receipt
FOLDED_EMPTY: dict[str, Any] = {
    "sold_wh": 0,
    "bought_wh": 0,
    "earnings": 0,
    "sold_unsettled_wh": 0,
    "bought_unsettled_wh": 0,
    "unsettled_flags": [],
    "through_interval": None,
    "records_from": None,
    "newest_time": None,
}
MAX_ALARMS = 50  # kept in memory; the status shows the last five
MAX_CONFIGS_KEPT = 16  # configurations followed, kept to check blocks sealed before the last change
MAX_REFUSALS_HEARD = 4096  # kept messages with refusals heard from too few validators yet
# sealed headers accepted, by height (the newest heights; kept in the state file): a different
# sealed header at one of them is evidence of a fork, refused with an alarm (see _check_header)
MAX_HEADERS_KEPT = 2048
ALARM_LOG_EVERY_S = 60.0  # a flood of alarms (forged receipts...) logs one line a minute, with a count
RECEIPT_KINDS = ("trade", "settlement", "adjustment")
# refusals that mean the ledger does not (or no longer) take this meter's messages
NOT_ENROLLED = ("not_enrolled", "unknown_signer", "revoked")
# the ledger's reading_flag for a reading whose serial is not the one enrolled for its meter key
# (market/settlement.py's SERIAL_NOT_ENROLLED: meter_agent does not import market)
SERIAL_NOT_ENROLLED = "serial_not_enrolled"
# refusals at intake that only say the ledger's time has not reached the message yet (this
# device's clock is ahead): kept and resent, unlike a refusal for good (a QA pass: a clock 2 min
# ahead lost every reading, refused as too early and then forgotten)
NOT_YET = ("reading_too_early", "from_future")
# Between interval ends, a poll whose counters merely moved on keeps them in memory: the counters
# and the open intervals' energy are written together (one synced transaction) at every interval
# end, at once on a counter event, with every heartbeat's status, at stop, and at least every
# ENERGY_SAVE_S of ledger time. A crash in between loses no energy: the restarted agent counts its
# first delta from the saved counters into the saved intervals. (Every 5 s poll synced them:
# 17,280 synced writes a day on a Raspberry Pi's SD card.)
ENERGY_SAVE_S = 300
# A reading is the counters at an interval's end, read at the first poll after it: signed only
# when that poll is at most this close to the end (3 polls, at least 15 s, but at most a tenth of
# the interval; never less than one and a half polls, or an agent polling rarely would sign none).
# Later (the agent was not running at the end) the counters hold energy of the next interval: no
# reading is signed, and the settlement flags the interval rather than settle on energy that was
# not delivered in it. See reading_late_s().
READING_LATE_POLLS = 3
# Why a pending reading was not signed when the meter did not answer (a timeout, a connection
# fault), or answered what could not be used (NaN, an implausible value, a garbled answer): each
# followed by the fault. Any other reason is its counters, read but unusable, which stops the
# offers until a reading is signed (_give_up_reading)
METER_SILENT_AT_END = "the meter did not answer at its end"
METER_UNREADABLE_AT_END = "the meter could not be read at its end"
# A meter fault is logged when it starts, and one of another kind (its text but for the numbers in
# it) when it starts too: each kind at most once an interval, and at most this many kinds an
# interval (a meter flapping between faults); the rest are counted in one line at the interval's
# end. (Found in a QA pass: one key for every fault held back a NaN fault that started after a
# TCP reset was logged in the same interval, and it never appeared in the log while it lasted.)
MAX_FAULT_KINDS_LOGGED = 3
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
READING_LATE_MIN_S = 15.0
# run() reads the meter in a thread of its own, one read at a time, and meanwhile checks for a
# stop and publishes the heartbeats at least this often (found in a QA pass: with timeout_s = 60
# and a gateway that never answered, the agent took 116 s to stop and sent no status for 2 min)
WAIT_SLICE_S = 0.25
# A read outstanding longer than a poll interval, and than this, is a meter that does not answer:
# the status says so (meter_ok false) while the read goes on, up to its timeout_s (found in a QA
# pass: with timeout_s = 60 and a gateway that accepted and never answered, the status said
# meter_ok true for a minute). A meter that answers is read well within it (Modbus RTU at 9600
# baud in about half a second). See Agent.read_overdue_s().
READ_OVERDUE_MIN_S = 2.0
# A meter fault withdraws the agent's orders once it is more than a glitch: this many polls in a
# row failed, or a read outstanding past read_overdue_s() (a QA pass: one timeout 30 s before a
# gate withdrew that interval's offer for good, and with max_orders_per_interval the next one's
# too, although the meter answered 5 s later; the reading that backs an offer is taken at its
# interval's end, and one failed poll does not lose a reading either)
FAULT_CONFIRM_POLLS = 2


class Reader(Protocol):
    def read(self) -> MeterSample: ...


class _MeterRead:
    """One read of the meter in a thread of its own (``done`` when it has ended). The thread
    touches the reader only; what it read is used by the agent's own thread, or not at all when
    the read was abandoned at a stop."""

    def __init__(self, read: Callable[[], MeterSample | Exception]) -> None:
        self.done = threading.Event()
        self.result: MeterSample | Exception | None = None
        self.abandoned = False
        self.started = time.monotonic()
        self.overdue = False  # outstanding longer than Agent.read_overdue_s(): in the status
        self._read = read
        threading.Thread(target=self._run, name="meter-read", daemon=True).start()

    def _run(self) -> None:
        self.result = self._read()
        self.done.set()


def market_params(app: dict[str, Any]) -> dict[str, Any]:
    """The community parameters the agent needs from the app's parameters (the genesis's, or
    the chain's after a vote: chain/config_proof.py), defaults as the market app's
    (market/params.py; tests/meter_agent/test_agent_totals_folded.py checks they agree)."""
    return {
        "interval_s": app.get("interval_s", 900),
        "gate_s": app.get("gate_s", 300),
        # how long the ledger may adjust a settled trade (Agent.adjustment_window_s)
        "correction_window_intervals": app.get("correction_window_intervals", 32),
        "gridops_window_s": app.get("gridops_window_s", 40 * 86_400),
        "settlement_source": app.get("settlement_source", "meter"),
        "feed_in_price": app.get("feed_in_price", 80_000),
        "retail_price": app.get("retail_price", 300_000),
        "grid_fee_per_kwh": app.get("grid_fee_per_kwh", 0),
        "levies_per_kwh": app.get("levies_per_kwh", 0),
        "max_orders_per_interval": app.get("max_orders_per_interval"),  # None: no limit
    }


def _add_to(totals: dict[str, Any], side: str, energy: int, value: int, fees: int) -> None:
    """Add a settled trade's figures (or an adjustment's) to ``totals`` (sold_wh, bought_wh,
    earnings: the folded totals, or Agent.totals' sum)."""
    if side == "sell":
        totals["sold_wh"] += energy
        totals["earnings"] += value
    else:
        totals["bought_wh"] += energy
        totals["earnings"] -= value + fees


def load_trades(
    outbox: Outbox,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[str, Any], set[str]]:
    """The trades the state file holds: those kept whole (by trade id), the records of folded ones
    (rows of the same group: ``{"interval", "folded": {...}}``; see Agent._fold), the folded
    totals, and the ids of the folded trades' rows an older agent wrote into, merged here
    (_merge_older_keys) and to be written back in this agent's form with the folded totals.
    Nothing is written: ``peerwatt agent status`` reads the totals with it too."""
    trades: dict[str, dict[str, Any]] = {}
    folded_trades: dict[str, dict[str, Any]] = {}
    folded: dict[str, Any] = {**FOLDED_EMPTY, **outbox.load("folded_totals", {})}
    folded["unsettled_flags"] = list(folded["unsettled_flags"])
    merged: set[str] = set()
    for trade_id, row in outbox.load_entries("trades").items():
        if not isinstance(row, dict):
            continue
        if "folded" not in row:
            trades[trade_id] = row
            continue
        folded_trades[trade_id] = row
        if set(row) - {"interval", "folded"}:
            _merge_older_keys(row, folded)
            merged.add(trade_id)
    return trades, folded_trades, folded, merged


def _merge_older_keys(row: dict[str, Any], folded: dict[str, Any]) -> None:
    """Merge into a folded trade's record, and into the folded totals ``folded``, what an older
    agent wrote into its row, and take that out of the row. An agent from before trades were
    folded (3aef05c, 377075d) reads every row as a trade kept whole, so for a receipt of a folded
    trade it writes, beside ``interval`` and ``folded``, ``side``, ``height``, the trade's or
    settlement's figures, an adjustment under ``adjustments`` (keyed height:leaf hash, or by an
    older one height:index) and the newest settlement's or adjustment's ``status``, ``flag`` and
    ``status_height``. (Found in a QA pass: going back to the 377075d agent and forward again lost
    the two negative adjustments it received, and the totals stayed 212 Wh too high.)

    An adjustment the record does not count yet is added to the totals once: a key of the older
    form at a height is the same adjustment as any other key at that height (a block adjusts a
    trade at most once; Agent._keep_adjustment), and the record keeps the newer form. A
    settlement is counted already: a trade is folded only once settled, and the ledger settles a
    trade once (a later change is an adjustment). The newest status says how the trade stands."""
    record = row["folded"]
    older = {key: row.pop(key) for key in list(row) if key not in ("interval", "folded")}
    adjustments = older.get("adjustments")
    for key, (delta_wh, delta_value, delta_fees) in sorted((adjustments or {}).items()):
        if _note_adjustment(record, key) == "new":
            _add_to(folded, record["side"], delta_wh, delta_value, delta_fees)
    height = older.get("status_height")
    if "status" in older and type(height) is int and height >= record.get("status_height", -1):
        record.update(status=older["status"], flag=older.get("flag"), status_height=height)


def _note_adjustment(record: dict[str, Any], key: str) -> str:
    """Note the adjustment ``key`` (height:leaf hash, or an older agent's height:index) in a folded
    trade's ``record``: "known" when it counts already (the same key, or any key at its height
    for a key of the older form, as a block adjusts a trade at most once: Agent._keep_adjustment),
    "renamed" when it counted under the older form (kept now under ``key``), "new" when its figures
    are still to be added."""
    keys: list[str] = record["adjustments"]
    if key in keys:
        return "known"
    height = key.partition(":")[0]
    at_height = [k for k in keys if k.partition(":")[0] == height]
    if Agent._older_form([key], height) and at_height:
        return "known"
    older_form = Agent._older_form(at_height, height)
    record["adjustments"] = sorted({*keys, key} - set(older_form))
    return "renamed" if older_form else "new"


def totals_of(
    trades: dict[str, dict[str, Any]], folded_trades: dict[str, dict[str, Any]], folded: dict[str, Any]
) -> dict[str, Any]:
    """The P2P totals of the trades kept whole, the folded trades' records and the folded totals
    (Agent.totals; ``peerwatt agent status`` reads a state file's with load_trades)."""
    settled = {key: folded[key] for key in ("sold_wh", "bought_wh", "earnings")}
    pending = {"sell": 0, "buy": 0}
    unsettled = {"sell": folded["sold_unsettled_wh"], "buy": folded["bought_unsettled_wh"]}
    flags: set[str] = set(folded["unsettled_flags"])
    for row in folded_trades.values():
        record = row["folded"]
        if record.get("status") == "unsettled":
            unsettled[record["side"]] += record["energy_wh"]
            if record.get("flag"):
                flags.add(str(record["flag"]))
    for entry in trades.values():
        side = "sell" if entry.get("side") == "sell" else "buy"
        if "settled_wh" not in entry:  # traded, not settled yet: no money
            pending[side] += entry.get("energy_wh", 0)
            continue
        if entry.get("status") == "unsettled":  # (its settled figures are 0)
            unsettled[side] += entry.get("energy_wh", 0)
            if entry.get("flag"):
                flags.add(str(entry["flag"]))
        _add_to(settled, side, *Agent._settled_figures(entry))
    return {
        **settled,
        "sold_pending_wh": pending["sell"],
        "bought_pending_wh": pending["buy"],
        "sold_unsettled_wh": unsettled["sell"],
        "bought_unsettled_wh": unsettled["buy"],
        "unsettled_flags": sorted(flags),
    }


class Agent:
    """One meter's agent (see module docstring)."""

    def __init__(
        self,
        *,
        key: PrivateKey,
        genesis: Genesis,
        bus: Bus,
        reader: Reader,
        outbox: Outbox,
        strategy: StrategyConfig,
        clock: Callable[[], float] = time.time,
        profile: str = "unknown",
        serial: str | None = None,
        serial_from: str = "the genesis",
        heartbeat_s: float = 60.0,
        homeassistant_prefix: str | None = None,
    ) -> None:
        self.key = key
        self.meter_id = key_id(key.public_key())
        self.genesis = genesis
        self.community = genesis.community
        enrolled = genesis.doc["meters"].get(self.meter_id)
        if enrolled is None:
            raise ValueError(
                f"meter key {self.meter_id} is not enrolled in {self.community}'s genesis: a meter admitted "
                "after genesis needs its join-request.txt (from `peerwatt agent setup`) beside agent.toml"
            )
        self.capacity_w = enrolled["capacity_w"]
        # the serial the ledger enrolled for this meter key (the genesis's, or the enroll_meter vote's
        # from the join request): a key's serial never changes on the ledger, a new meter is a new key
        self.enrolled_serial: str = enrolled["serial"]
        # where it comes from: "the genesis" (what the ledger enrolled), or "join-request.txt"
        # (what the community was asked to enrol: a vote proposed by hand may have enrolled another)
        self.serial_from = serial_from
        # agent.toml's [meter] serial, for a meter that reports none (else the enrolled one)
        self.serial = serial or self.enrolled_serial
        self.profile = profile
        # what the agent trusts of the chain's configuration: the genesis's, or the last step it
        # followed (chain/config_proof.py), kept in the state file
        self.config = self._saved_config(outbox) or genesis_config(genesis)
        self.params = market_params(self.config.params)
        self.bus = bus
        self.reader = reader
        self.outbox = outbox
        self.strategy = strategy
        self.clock = clock
        self.heartbeat_s = heartbeat_s
        self.ha_prefix = homeassistant_prefix
        self.validators = self.config.validators
        self.quorum = self.config.quorum
        # the configurations followed since start, oldest first: a block is sealed by the validators
        # in force before it, so its header is checked with the last one below its height
        self._configs: list[TrustedConfig] = [self.config]
        owner = outbox.load("meter")
        if owner is None:
            outbox.save("meter", self.meter_id)
        elif owner != self.meter_id:
            raise ValueError(
                f"the agent state {outbox.path} belongs to meter {owner}, not {self.meter_id}: "
                "give each meter its own state_dir"
            )
        saved = outbox.load("counters")
        self.counters = (
            EnergyCounters.from_dict(saved, max_power_w=self.capacity_w)
            if saved
            else EnergyCounters(max_power_w=self.capacity_w)
        )
        self.buckets: dict[str, dict[str, Any]] = outbox.load("buckets", {})
        self.history: dict[str, int] = outbox.load("history", {})
        self.orders: dict[str, dict[str, Any]] = outbox.load("orders", {})
        # the trades kept whole, by trade id, the records of folded ones the ledger may still
        # adjust (rows of the same group: {"interval", "folded": {...}}; see _fold), the folded
        # totals, and the folded trades' rows an older agent wrote into (merged; written below)
        self.trades: dict[str, dict[str, Any]]
        self._folded_trades: dict[str, dict[str, Any]]
        self._folded: dict[str, Any]
        self.trades, self._folded_trades, self._folded, merged = load_trades(outbox)
        self.last_interval: int | None = outbox.load("last_interval")
        self.last_reading: dict[str, Any] | None = outbox.load("last_reading")
        # the interval whose reading is still to be signed: tried at every poll until its lateness
        # allowance (reading_late_s) ends, so one poll without a usable sample does not lose it
        self.pending_reading: int | None = outbox.load("pending_reading")
        # why the last reading was not signed while the meter answered (its counters unusable):
        # no orders until a reading is signed again, for trades without readings never settle
        self.readings_withheld: str | None = outbox.load("readings_withheld")
        # the last receipt that verified (height, block time, kind), and whether the ledger books
        # this meter's messages: True, False or "unknown" (from verified notices and receipts)
        self.last_receipt: dict[str, Any] | None = outbox.load("last_receipt")
        self.enrolled: bool | str = outbox.load("enrolled", "unknown")
        # the height of the block that last told it (-1: none yet); see _set_enrolled
        self.enrolled_height: int = outbox.load("enrolled_height", -1)
        # why the agent knows its meter key is revoked (the household left, or the meter was
        # replaced), or None: for good, as on the ledger; no orders or readings from then on
        self.revoked: str | None = outbox.load("revoked")
        # why no order was placed for the next interval when the reason is the agent's own rule
        # (no forecast yet, below min_order_wh, no bid can pay, revoked), else None; see
        # _update_order (a QA pass: min_order_wh kept a meter from offering, and nothing said so)
        self.no_order: str | None = None
        self.fault: str | None = None
        # while the meter's serial is not the enrolled one: what differs and what to do (no offers)
        self.serial_mismatch: str | None = None
        # the serial believed enrolled (from its join request) that the ledger flagged, in a verified
        # receipt, as not the one it enrolled for this key: the vote enrolled another (see _on_flag)
        self.serial_refused: dict[str, Any] | None = outbox.load("serial_refused")
        self.last_sample: MeterSample | None = None
        self.alarms: list[str] = []
        self._lock = threading.Lock()
        self._last_heartbeat = -math.inf
        self._failed: dict[str, str] = {}  # the last poll's (heartbeat's) unexpected error, logged once
        self._reading: _MeterRead | None = None  # run()'s meter read in progress (at most one)
        self._order_budget_said: set[str] = set()  # intervals whose order budget was logged as spent
        self._alarm_logged_at = -math.inf  # monotonic time of the last alarm logged
        self._alarms_unlogged = 0  # alarms since then, kept but not logged
        self.order_margin_s = 60.0
        self.state_error: str | None = None
        self.meter_read_errors = 0
        self.forged_notices = 0  # notices that did not verify (someone tried to make us forget)
        self.confirm_after_s = DEFAULT_CONFIRM_AFTER_S  # resend what the ledger has not confirmed
        self._energy_saved_at: int | None = None  # ledger time of the last save of counters+buckets
        self._energy_unsaved = False  # the counters moved on since
        self._counters_unusable: list[str] = []  # what of the last sample may not be signed, and why
        # why the pending reading could not be signed yet (in the state file: a restart within its
        # allowance, or long after, still says why it was not signed)
        self._reading_blocked: str | None = outbox.load("reading_blocked")
        # log lines that repeat (a flickering counter, a meter failing every other poll) are logged
        # once per interval: key -> the interval it was logged in, and how many were not logged since
        self._logged_in: dict[str, int] = {}
        self._not_logged: dict[str, int] = {}
        self._fault_logged = False  # a line of the current meter fault was logged (so is its end)
        self._fault_kind: str | None = None  # the current fault's text, its numbers masked
        self._fault_kind_logged = False  # that kind of fault was logged since it began
        self._fault_silent = False  # the current fault is a meter that did not answer
        self._failed_polls = 0  # meter reads failed in a row (FAULT_CONFIRM_POLLS)
        self._sealed_headers: set[bytes] = set()  # headers whose seals this agent already checked
        # height -> hash (hex) of the sealed header accepted at that height (MAX_HEADERS_KEPT)
        self._headers: dict[int, str] = {int(h): v for h, v in outbox.load_entries("headers").items()}
        # seq of a kept message -> reason -> the validators that said so (acted on at
        # chain.notice.refusal_threshold, then forgotten with the message)
        self._refusals: dict[int, dict[str, set[str]]] = {}
        self._behind: list[tuple[int, str, bytes]] = []  # refused as seq_behind: sign again, ahead
        # booked as not yet due (a block whose time was behind the reading's interval end): sign
        # again with new seqs at the next poll, then forget (kept in the outbox until then)
        self._not_yet: list[tuple[int, str, bytes]] = []
        self._seq_moved_to: int | None = None  # the first seq after moving ahead (seq_behind)
        self._seq_unreachable = False  # refused as behind even after moving ahead: give up, said once
        self.resigned = 0  # messages signed again (refused as seq_behind, booked as not yet due)
        self.poll_s = 5.0  # seconds of ledger time between polls (run() sets it)
        self._clock_behind = False  # the clock went back before the last interval this agent closed
        self._trades_unsaved: set[str] = set()  # kept trades the state file did not take (disk full)
        self._confirm_failed = False  # a notice's confirmation did not reach the state file
        self._results_missing_said = False  # an inclusion proof without results was an alarm
        if merged:  # their rows in this agent's form, with the folded totals that now count them
            try:
                self._write_trades(merged)
            except OutboxError as exc:  # merged in memory; saved with the next receipt or poll
                log.error("%s: the trades an older agent kept are merged in memory until it takes them", exc)
                self._trades_unsaved |= merged

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def status_topic(self) -> str:
        return Topics.status(self.community, self.meter_id)

    def start(self) -> None:
        """Subscribe to receipts, connect, and resend what the outbox still holds."""
        self.bus.subscribe(Topics.receipts(self.community, self.meter_id), self._on_receipt)
        # at every connect: a state restored from a backup (or damaged) must walk the histories
        # again, and a resumed broker session would not send them to it
        self.bus.subscribe(Topics.pattern(self.community, "config"), self._on_config, retained_always=True)
        self.bus.start()
        for seq, topic, payload in self.outbox.pending():
            self.bus.publish(topic, payload, on_ack=lambda s=seq: self.outbox.ack(s))
        if self.ha_prefix:
            self.bus.publish(
                discovery_topic(self.ha_prefix, self.meter_id),
                discovery_payload(self.community, self.meter_id, self.status_topic),
                retain=True,
            )

    def stop(self) -> None:
        """Save what the last polls kept in memory, publish ``offline`` and disconnect."""
        try:
            if self._energy_unsaved:
                self._save_energy(int(self.clock()))
        except OutboxError as exc:
            log.error("%s: the last polls' counters are not saved (counting resumes from the saved)", exc)
        self.bus.publish(self.status_topic, b"offline", retain=True)
        self.bus.stop()

    def run(self, stop: threading.Event, poll_s: float, speed: float = 1.0) -> None:
        """Poll every ``poll_s`` seconds of ledger time until ``stop`` is set."""
        self.poll_s = poll_s
        self.order_margin_s = max(60.0, 3 * poll_s)
        if poll_s > self.params["interval_s"] / 10:
            log.warning(
                "poll_s %g s is more than a tenth of the %d s interval: a reading is the counters up to "
                "%g s after the interval's end (poll at least every %g s for accurate readings)",
                poll_s,
                self.params["interval_s"],
                poll_s,
                self.params["interval_s"] / 10,
            )
        while not stop.is_set():
            started = time.monotonic()
            read = self._read_meanwhile(stop)
            if read is None:  # stopped while the meter was being read
                break
            self._cycle(read)
            self._wait(stop, None, started + poll_s / speed)

    def _read_meanwhile(self, stop: threading.Event) -> MeterSample | Exception | None:
        """Read the meter in its own thread (at most one read at a time) while this one keeps the
        heartbeats and watches ``stop``: what it read, or None when ``stop`` came first. A read
        still running then is abandoned: nothing it reads is used (no reading is signed from it);
        stop() saves the energy counted so far, and the next start counts on from there."""
        while True:
            reading = self._reading
            if reading is None:
                reading = self._reading = _MeterRead(self._read_meter)
            if not self._wait(stop, reading.done):
                reading.abandoned = True
                log.info("stopping without waiting for the meter read in progress (its result is not used)")
                return None
            self._reading = None
            if not reading.abandoned:
                return reading.result
            # a read abandoned at an earlier stop (run() called again): old news, read again

    def _wait(self, stop: threading.Event, done: threading.Event | None, until: float = math.inf) -> bool:
        """Wait until ``done`` is set or the monotonic time ``until``, publishing a heartbeat each
        time one is due (not in the first WAIT_SLICE_S: a poll that ends by then sends its own);
        False when ``stop`` is set first. ``stop`` is seen within WAIT_SLICE_S and a heartbeat is
        at most WAIT_SLICE_S late, whatever the meter does."""
        every_s = max(self.heartbeat_s, WAIT_SLICE_S)
        first = time.monotonic() + WAIT_SLICE_S
        while not stop.is_set():
            if done is not None and done.is_set():
                return True
            if done is not None and self._reading is not None:
                self._check_overdue(self._reading)
            now = time.monotonic()
            if now >= until:
                return True
            if now >= first and now - self._last_heartbeat >= every_s:
                self._guarded("a heartbeat", self._heartbeat, int(self.clock()))
                now = time.monotonic()
            wake_in = max(0.0, min(until, max(first, self._last_heartbeat + every_s)) - now)
            if done is None:
                stop.wait(wake_in)
            else:
                done.wait(min(wake_in, WAIT_SLICE_S))
        return False

    # -- one cycle -----------------------------------------------------------------------------

    def poll(self) -> None:
        """One cycle, reading the meter in the calling thread (run() reads it in its own)."""
        self._cycle(self._read_meter())

    def _cycle(self, read: MeterSample | Exception | None) -> None:
        """One cycle with what the meter read (a sample, or the exception the read raised)."""
        self._guarded("a poll", self._poll, read)

    def _guarded(self, what: str, step: Callable[..., None], *args: Any) -> None:
        """Run one step of the loop (``what``: a poll, a heartbeat between polls): a state file
        that cannot be written (disk full, read-only) stops sending — nothing may leave that is not
        durable — is reported once, and the agent resumes by itself; any other fault is logged
        once and tried again at the next step."""
        try:
            step(*args)
        except OutboxError as exc:
            if self.state_error is None:
                log.error("%s: not sending until the agent's state can be written", exc)
            self.state_error = str(exc)
            return
        except Exception as exc:  # a fault no check foresaw: logged once, the next poll tries again
            failure = f"{type(exc).__name__}: {exc}"
            if failure != self._failed.get(what):
                log.exception("%s failed (%s); the agent keeps polling", what, failure)
            self._failed[what] = failure
            return
        self._failed.pop(what, None)
        if self.state_error is not None:
            log.info("agent state writable again")
            self.state_error = None

    def _poll_gap_s(self) -> float:
        """A gap between two samples longer than this means polls were missed."""
        return max(READING_LATE_POLLS * self.poll_s, READING_LATE_MIN_S)

    def reading_late_s(self) -> float:
        """How long after an interval's end its reading may still be taken (READING_LATE_POLLS)."""
        return max(1.5 * self.poll_s, min(self._poll_gap_s(), self.params["interval_s"] / 10))

    def _poll(self, read: MeterSample | Exception | None) -> None:
        now = int(self.clock())
        interval_s = self.params["interval_s"]
        current = now - now % interval_s
        sample = self._take(read)
        if sample is not None:
            self._check_serial(sample)
        if self.last_interval is not None and current < self.last_interval:
            # the clock went back (a device that booted before NTP set it): an interval this agent
            # closed would be closed again, its reading signed twice (a correction on the ledger),
            # and every order would be for a closed gate. Nothing is counted or signed until the
            # clock is past it again; the energy meanwhile counts as not attributable.
            if not self._clock_behind:  # an alarm: the status (and the dashboard) shows it
                self._alarm(
                    f"ALARM: the clock went back {self.last_interval - now} s, before the last interval "
                    "this agent closed: no readings or orders until it has caught up (is the time "
                    "synchronised? NTP)"
                )
                self._clock_behind = True
        else:
            if self._clock_behind:
                log.info("the clock is past the last closed interval again: counting and trading resume")
                self._clock_behind = False
            counted_to = self._counted_to()
            if sample is not None:
                self._account(sample, now, current)
            if self.last_interval is not None and current > self.last_interval:
                self._close_intervals(now, current, counted_to)
            if current != self.last_interval:
                self.last_interval = current
                self.outbox.save("last_interval", current)
            if self.pending_reading is not None:
                self._sign_pending(now, sample)
            self._update_order(now)
        if self._trades_unsaved:
            self._save_trades()
        if self._behind and self.revoked is None:
            self._sign_again_ahead(now)
        if self._not_yet and self.revoked is None:
            self._sign_again_not_yet(now)
        for seq, topic, payload in self.outbox.due_for_resend(self.confirm_after_s):
            self.bus.publish(topic, payload, on_ack=lambda s=seq: self.outbox.ack(s))
        if time.monotonic() - self._last_heartbeat >= self.heartbeat_s:
            self._heartbeat(now)  # saves the energy state with the status
        elif self._energy_unsaved and not 0 <= now - (self._energy_saved_at or 0) < ENERGY_SAVE_S:
            self._save_energy(now)

    def read_overdue_s(self) -> float:
        """How long a meter read may be outstanding before the status says the meter does not
        answer: a poll interval, at least READ_OVERDUE_MIN_S; for a meter that pushes its data (P1,
        SML), at least the reader's wait for it (its timeout_s: a DSMR 4 meter sends every 10 s)."""
        overdue_s = max(self.poll_s, READ_OVERDUE_MIN_S)
        if isinstance(self.reader, PushMeterReader):
            overdue_s = max(overdue_s, self.reader.timeout_s)
        return overdue_s

    def _check_overdue(self, reading: _MeterRead) -> None:
        """A read outstanding longer than read_overdue_s() makes the meter's fault "does not
        answer" (the status says meter_ok false, logged as a fault starting) while it goes on: the
        fault the read then raises, or the sample it returns, takes its place."""
        if reading.overdue or reading.done.is_set():
            return
        waited_s = time.monotonic() - reading.started
        if waited_s <= self.read_overdue_s():
            return
        reading.overdue = True
        self._failed_polls = max(self._failed_polls, FAULT_CONFIRM_POLLS)  # more than a glitch
        timeout_s = getattr(self.reader, "timeout_s", None)
        goes_on = "" if timeout_s is None else f"; it goes on up to timeout_s = {timeout_s:g} s a request"
        self._set_fault(
            f"the meter does not answer: a read has waited more than {self.read_overdue_s():g} s "
            f"(polls every {self.poll_s:g} s{goes_on})",
            silent=True,
        )
        self._last_heartbeat = -math.inf  # the status says so now, not at the next heartbeat

    def _read_meter(self) -> MeterSample | Exception:
        """Read the meter: its sample, or the exception the read raised. Touches the reader only
        (run() calls it in a thread of its own)."""
        try:
            return self.reader.read()
        except Exception as exc:  # the agent never dies because of its meter: every fault is retried
            return exc

    def _take(self, read: MeterSample | Exception | None) -> MeterSample | None:
        """This poll's sample, or None (a meter fault: counted, logged, in the status)."""
        try:
            if isinstance(read, Exception):
                raise read
            if read is None:
                raise MeterError("the meter read returned nothing")
            sample = read
            plausible, _checks, why = plausibility(sample, AGENT_VOLTAGE_RANGE_V)
            if not plausible:
                raise MeterError(
                    f"implausible reading: {why} (the wrong profile for this meter? `peerwatt meter "
                    "probe` finds the right one)"
                )
        except Exception as exc:  # the agent never dies because of its meter: every fault is retried
            self._failed_polls += 1
            self._meter_fault(exc)
            return None
        self._failed_polls = 0
        if self.fault is not None:
            if self._fault_logged:
                log.info("meter answers again")
                self._last_heartbeat = -math.inf
            self.fault, self._fault_logged, self._fault_kind = None, False, None
        self.last_sample = sample
        return sample

    def _meter_fault(self, exc: Exception) -> None:
        """Count, keep and log a meter fault. It is logged when it starts, and when it turns into
        a fault of another kind (MAX_FAULT_KINDS_LOGGED), with a status at the end of this poll
        rather than at the heartbeat; one held back (its kind was logged in this interval already:
        a meter failing every other poll) is logged in a later interval if it lasts until then."""
        self.meter_read_errors += 1
        known = isinstance(exc, MeterError)
        fault = str(exc) if known else f"{type(exc).__name__}: {exc}"
        self._set_fault(
            fault,
            silent=isinstance(exc, MeterTimeout | MeterConnectionError),
            unexpected=None if known else exc,
        )

    def _set_fault(self, fault: str, silent: bool, unexpected: Exception | None = None) -> None:
        """Keep ``fault`` as the meter's and log it as _meter_fault says (``silent``: the meter
        did not answer; ``unexpected``: not a typed meter error, logged with its traceback)."""
        kind = _NUMBER.sub("#", fault)
        if kind != self._fault_kind:  # a fault starts, or another kind of fault
            self._fault_kind, self._fault_kind_logged = kind, False
            logged = self._log_fault_once(kind, count=True)
        else:  # the same kind goes on: logged now if it was held back in an earlier interval
            logged = not self._fault_kind_logged and self._log_fault_once(kind, count=False)
        if logged:
            self._fault_logged = self._fault_kind_logged = True
            self._last_heartbeat = -math.inf
            if unexpected is None:
                log.warning("meter fault: %s (no offers until it answers again)", fault)
            else:  # not a typed meter error: a reader bug, keep its traceback
                log.error(
                    "meter fault: unexpected %s (no offers until it answers again)",
                    unexpected,
                    exc_info=unexpected,
                )
        self.fault = fault
        self._fault_silent = silent

    def _log_fault_once(self, kind: str, count: bool) -> bool:
        """Whether a meter fault of ``kind`` may be logged now: each kind once an interval, at most
        MAX_FAULT_KINDS_LOGGED kinds; the others are counted (if ``count``) as "meter fault" in
        the line at the interval's end (as _log_once)."""
        current = self.last_interval
        if current is None:
            return True
        key = f"meter fault ({kind})"
        kinds = [k for k, at in self._logged_in.items() if at == current and k.startswith("meter fault (")]
        if key in kinds or len(kinds) >= MAX_FAULT_KINDS_LOGGED:
            if count:
                self._not_logged["meter fault"] = self._not_logged.get("meter fault", 0) + 1
            return False
        self._logged_in[key] = current
        return True

    def _check_serial(self, sample: MeterSample) -> None:
        """Offer nothing while the meter's serial is not the one the ledger enrolled for this meter
        key: the settlement leaves every trade of such readings unsettled (``serial_not_enrolled``,
        ``meter_replaced``), the counterparties' too. Raised as an alarm when it starts (status and
        log), said in one line when it ends; the readings are still signed as read."""
        reported = sample.serial or self.serial
        with self._lock:
            refused = self.serial_refused
        if reported == self.enrolled_serial and (refused is None or refused["serial"] != reported):
            if self.serial_mismatch is not None:
                log.info(
                    "meter %s: the serial is the enrolled one again (%s): offers resume",
                    self.meter_id,
                    reported,
                )
                self.serial_mismatch = None
                self._last_heartbeat = -math.inf  # the status says so at the end of this poll
            return
        source = "the meter reports" if sample.serial else "agent.toml's [meter] serial is"
        if reported == self.enrolled_serial:  # what the ledger said (refused is not None)
            enrolled = (
                f"the ledger enrolled another serial than {reported} (its receipt flags this meter's "
                f"reading of interval {refused['interval']} serial_not_enrolled; the join request "
                f"says {reported})"
            )
        elif self.serial_from == "the genesis":
            enrolled = f"the ledger enrolled serial {self.enrolled_serial}"
        else:  # found in a review: the vote may have enrolled another serial than the request's
            enrolled = (
                f"{self.serial_from} names serial {self.enrolled_serial} (if the community's vote "
                f"enrolled {reported}, make a new join request with it: `peerwatt agent join-request`, "
                "the same keys)"
            )
        mismatch = (
            f"{source} serial {reported}, but {enrolled} for meter key {self.meter_id}: no offers while "
            "they differ (the ledger flags readings of a serial it did not enrol serial_not_enrolled "
            "and settles none of their trades)"
        )
        if mismatch == self.serial_mismatch:
            return
        self.serial_mismatch = mismatch
        self._last_heartbeat = -math.inf
        self._alarm(
            f"ALARM: {mismatch}. The wrong meter? Check [meter] host and unit in agent.toml (`peerwatt "
            "meter probe`). A new meter? Enrol it under a new meter key: `peerwatt agent join-request` "
            "with your member.key and its serial, then `peerwatt member admit` on a validator "
            '(docs/agent.md, "Replacing the meter")'
        )

    def _account(self, sample: MeterSample, now: int, current: int) -> None:
        before = self.counters.baseline("import_wh")
        update = self.counters.update(now, sample.import_wh, sample.export_wh, sample.serial)
        bucket = self.buckets.setdefault(str(current), {"import_wh": 0, "export_wh": 0, "faulty": False})
        if before is not None and before[1] < current and now - before[1] > self._poll_gap_s():
            # the counters moved since a sample taken before this interval, with no poll between
            # (the agent was not running, the meter did not answer, the clock went back): that
            # energy is not all this interval's, so it does not teach the forecast about it
            bucket["faulty"] = True
        for name, delta in (("import_wh", update.import_wh), ("export_wh", update.export_wh)):
            if delta.status == "ok":
                bucket[name] += delta.energy_wh
            elif delta.status in ("unavailable", "suspect", "rebased", "meter_changed"):
                bucket["faulty"] = True
        for event in update.events:
            if self._log_once(f"counter event {event.kind} {event.counter}"):
                log.warning("meter counter event: %s", event.describe())
            bucket["faulty"] = True
        # a counter that read "unavailable" (a drop to 0, a sentinel, NaN) or "suspect" (it went
        # backwards or jumped, and no second reading confirmed the new level yet): a glitch of the
        # meter or its gateway until confirmed, not signed as an interval's reading, which would
        # make the settlement flag the interval before it and settle the one after it on the
        # glitch; a confirmed new level (counter_rebased, a changed serial) is signed as read, for
        # the settlement to flag (meter_agent/counters.py)
        self._counters_unusable = [
            f"{name} {getattr(sample, name)}"
            + (" (not available)" if delta.status == "unavailable" else " (not confirmed by a reading yet)")
            for name, delta in (("import_wh", update.import_wh), ("export_wh", update.export_wh))
            if delta.status in ("unavailable", "suspect")
        ]
        if update.events or not update.import_wh.status == update.export_wh.status == "ok":
            self._save_energy(now)
        else:
            self._energy_unsaved = True  # saved by the end of a later poll (see ENERGY_SAVE_S)

    def _save_energy(self, now: int, **more: Any) -> None:
        """The counters and the open intervals' energy (and ``more`` local state) in one durable
        transaction: they are only ever saved together (see ENERGY_SAVE_S)."""
        self.outbox.save_all({"counters": self.counters.to_dict(), "buckets": self.buckets, **more})
        self._energy_saved_at, self._energy_unsaved = now, False

    def _counted_to(self) -> int | None:
        """The time up to which both counters' energy is counted (their last good readings)."""
        times = [b[1] for b in (self.counters.baseline(n) for n in ("import_wh", "export_wh")) if b]
        return min(times) if len(times) == 2 else None

    def _log_once(self, key: str) -> bool:
        """Whether a line of kind ``key`` may be logged now: once per interval; the others are
        counted and summed up in one line when the interval closes (see _close_intervals)."""
        current = self.last_interval
        if current is not None and self._logged_in.get(key) == current:
            self._not_logged[key] = self._not_logged.get(key, 0) + 1
            return False
        if current is not None:
            self._logged_in[key] = current
        return True

    def _close_intervals(self, now: int, current: int, counted_to: int | None) -> None:
        """Intervals before ``current`` ended: record their history (those whose energy was
        counted up to their end) and make the last one's reading pending; those that ended
        before it with no poll after them (the agent was not running) get none, said in one line
        with the last one's when its reading is too late as well (_log_missed)."""
        interval_s = self.params["interval_s"]
        missing_s = max(self._poll_gap_s(), interval_s / 10)
        for start in sorted(int(s) for s in self.buckets if int(s) < current):
            bucket = self.buckets.pop(str(start))
            # the counters were last read well before its end (the meter silent, the agent down):
            # the rest of its energy is counted into a later interval, so it is incomplete
            incomplete = counted_to is None or start + interval_s - counted_to > missing_s
            if not bucket["faulty"] and not incomplete:
                self.history[str(start)] = bucket["export_wh"] - bucket["import_wh"]
        horizon = current - HISTORY_S
        self.history = {s: v for s, v in self.history.items() if int(s) >= horizon}
        if self._not_logged:
            log.warning(
                "meter %s in interval %d, not logged each time: %s",
                self.meter_id,
                self.last_interval,
                ", ".join(f"{key} {count} more time(s)" for key, count in sorted(self._not_logged.items())),
            )
            self._not_logged.clear()
        self._logged_in = {key: at for key, at in self._logged_in.items() if at >= current}
        newest = current - interval_s
        # the intervals from the one of the last poll to the newest ended: only the newest's
        # reading may still be taken (the earlier ones' counters were not read at their ends)
        missed_from = self.last_interval
        if self.pending_reading is not None and self.pending_reading < newest:
            if self._reading_blocked is None and self.revoked is None:
                # no poll tried it (the agent died between closing it and signing it): missed as well
                missed_from = min(missed_from, self.pending_reading)
                self._drop_pending()
            else:  # a poll found it blocked (the line says why), or an allowance over an interval long
                self._give_up_reading(now)
        if self.last_reading is not None:  # (signed already: a clock that went back and caught up)
            missed_from = max(missed_from, self.last_reading["interval"] + interval_s)
        too_late = now - current > self.reading_late_s()  # the newest's reading too
        missed_to = newest if too_late else newest - interval_s
        if missed_from <= missed_to and self.revoked is None:
            self._log_missed(missed_from, missed_to, now)
        self.pending_reading, self._reading_blocked = (None if too_late else newest), None
        self._save_energy(
            now, history=self.history, pending_reading=self.pending_reading, reading_blocked=None
        )

    def _log_missed(self, first: int, last: int, now: int) -> None:
        """One line for the intervals ``first`` to ``last``, which ended with no poll in time after
        them: no reading is signed (the counters now hold energy of later intervals), and the
        settlement flags them (found in a QA pass: stopped across three interval ends, the agent
        named only the last)."""
        interval_s = self.params["interval_s"]
        count = (last - first) // interval_s + 1
        late_s = now - last - interval_s
        allowed = (
            f"more than the {self.reading_late_s():.0f} s allowed"
            if late_s > self.reading_late_s()
            else "after the next interval's end"  # polls rarer than the interval (warned at start)
        )
        if count == 1:
            which, its, later, them = f"interval {first}", "its end was", "the next interval", "it"
        else:
            which = f"intervals {first}..{last} ({count} intervals)"
            its, later, them = "the end of the last was", "later intervals", "them"
        log.warning(
            "no reading of meter %s for %s: %s %d s before the first poll after it (%s: the agent was not "
            "running, or its polls came late on a busy machine), so the counters hold energy of %s; the "
            "settlement flags %s as missing",
            self.meter_id,
            which,
            its,
            late_s,
            allowed,
            later,
            them,
        )

    def _sign_pending(self, now: int, sample: MeterSample | None) -> None:
        """Sign the pending reading with this poll's sample if it may be, else keep it pending
        until its allowance ends (one poll without a usable sample does not lose it)."""
        ended = self.pending_reading
        assert ended is not None
        if self.revoked is not None:  # the ledger refuses every message of a revoked meter
            self._drop_pending()
            return
        if self.last_reading is not None and ended <= self.last_reading["interval"]:
            log.warning(
                "no reading of meter %s for interval %d: this agent signed one already", self.meter_id, ended
            )
            self._drop_pending()
            return
        if now - (ended + self.params["interval_s"]) > self.reading_late_s():
            self._give_up_reading(now)
            return
        if sample is None or self.fault is not None:
            self._block_reading(self._fault_at_end())
            return
        if self._counters_unusable:
            unusable = ", ".join(self._counters_unusable)
            self._block_reading(f"the meter's counters read {unusable} at its end")
            return
        body = {
            "interval": ended,
            "import_wh": sample.import_wh,
            "export_wh": sample.export_wh,
            "serial": sample.serial or self.serial,
            "profile": self.profile,
        }
        self._send("reading", Topics.readings(self.community, self.meter_id), body, ttl_s=READING_TTL_S)
        self.last_reading = body
        if self.readings_withheld is not None:
            log.info("meter %s: readings signed again: offers resume", self.meter_id)
        self.readings_withheld = None
        self.pending_reading = None
        self._reading_blocked = None
        cleared = {"pending_reading": None, "readings_withheld": None, "reading_blocked": None}
        self.outbox.save_all({"last_reading": body, **cleared})

    def _fault_at_end(self) -> str:
        """Why the pending reading was not signed, the meter's fault named."""
        if self.fault is None:  # (no sample without a fault)
            return METER_SILENT_AT_END
        return f"{METER_SILENT_AT_END if self._fault_silent else METER_UNREADABLE_AT_END}: {self.fault}"

    def _block_reading(self, why: str) -> None:
        """Keep why the pending reading was not signed at this poll (saved when it changes)."""
        if why != self._reading_blocked:
            self._reading_blocked = why
            self.outbox.save("reading_blocked", why)

    def _give_up_reading(self, now: int) -> None:
        """The pending reading's allowance ended: log why no reading is signed (the settlement
        flags the interval, never guesses) and, when the meter answered with counters that could
        not be signed, stop offering until a reading is signed again."""
        ended = self.pending_reading
        assert ended is not None
        why = self._reading_blocked
        if why is None:
            log.warning(
                "no reading of meter %s for interval %d: its end was %d s before the first poll after "
                "it (more than the %d s allowed: the agent was not running, or its polls came late on "
                "a busy machine), so the counters hold energy of the next interval; the settlement "
                "flags it as missing",
                self.meter_id,
                ended,
                now - ended - self.params["interval_s"],
                self.reading_late_s(),
            )
        else:
            log.warning(
                "no reading of meter %s for interval %d: %s (and in the %d s allowed after it); the "
                "settlement flags it as missing",
                self.meter_id,
                ended,
                why,
                self.reading_late_s(),
            )
        if why is not None and not why.startswith((METER_SILENT_AT_END, METER_UNREADABLE_AT_END)):
            if self.readings_withheld is None:
                log.warning("meter %s: no offers until a reading can be signed again", self.meter_id)
            self.readings_withheld = why
            self.outbox.save("readings_withheld", why)
        self._drop_pending()

    def _drop_pending(self) -> None:
        self.pending_reading, self._reading_blocked = None, None
        self.outbox.save_all({"pending_reading": None, "reading_blocked": None})

    def _update_order(self, now: int) -> None:
        interval_s, gate_s = self.params["interval_s"], self.params["gate_s"]
        target = now - now % interval_s + interval_s
        # leave time for the order to reach a block before the gate closes
        if target - gate_s <= now + self.order_margin_s:
            target += interval_s
        for start in [s for s in self.orders if int(s) < now - interval_s]:
            del self.orders[start]
            self._order_budget_said.discard(start)
        if self.revoked is not None:  # the ledger takes no order, not even a cancellation
            self.no_order = f"no order for interval {target}: {self.revoked}"
            if self.orders:
                self.orders.clear()
                self.outbox.save("orders", self.orders)
            return
        # offer nothing we cannot back: no reading (a meter fault that is more than a glitch,
        # counters that could not be signed) or not the enrolled meter's (the settlement would leave
        # its trades unsettled)
        cannot_back = (
            (self.fault is not None and self._failed_polls >= FAULT_CONFIRM_POLLS)
            or self.readings_withheld is not None
            or self.serial_mismatch is not None
        )
        if not self.strategy.trade or cannot_back:
            # trading off, or nothing can be backed: every order still standing whose gate is open is
            # withdrawn, also one within the margin, which the plan below no longer covers (a QA pass:
            # a meter that failed 14 s before a gate closed left that interval's offer standing; it
            # cleared a trade that settled missing_reading, a neighbour's bid matched to no energy)
            for start, standing in list(self.orders.items()):
                if int(start) != target and standing["energy_wh"] > 0 and int(start) - gate_s > now:
                    self._withdraw(int(start), standing, now)
        forecast = forecast_net_export_wh(
            {int(k): v for k, v in self.history.items()}, target, interval_s, now
        )
        capacity_wh = self.capacity_w * interval_s // 3600
        plan = plan_order(
            forecast,
            self.strategy,
            capacity_wh=capacity_wh,
            feed_in_price=self.params["feed_in_price"],
            retail_price=self.params["retail_price"],
            grid_fee_per_kwh=self.params["grid_fee_per_kwh"],
            levies_per_kwh=self.params["levies_per_kwh"],
        )
        why = None if plan is not None else self._why_no_plan(forecast, capacity_wh)
        if cannot_back:
            plan = None  # the order standing for the target (if any) is withdrawn below
            why = None  # the status says why in its own fields (fault, readings_withheld, ...)
        self.no_order = None if why is None else f"no order for interval {target}: {why}"
        sent = self.orders.get(str(target))
        current = (
            None
            if sent is None or sent["energy_wh"] == 0
            else OrderPlan(sent["side"], sent["energy_wh"], sent["limit_price"])
        )
        if not needs_replacement(current, plan, self.strategy):
            return
        placed = 0 if sent is None else sent.get("count", 1)
        limit = self.params["max_orders_per_interval"]
        # the ledger takes `limit` orders per interval (cancellations included): the last one is
        # kept for a cancellation, so a meter that fails can always take its offer back; with a
        # limit of 1 there is none to keep (a QA pass: a vote of 1 stopped every agent's trading)
        reserve = 1 if plan is not None and limit is not None and limit >= 2 else 0
        if limit is not None and placed >= limit - reserve:
            if placed == limit - 1 and str(target) not in self._order_budget_said:
                self._order_budget_said.add(str(target))
                log.warning(
                    "meter %s: %d orders sent for interval %d, of the %d the ledger takes: only a "
                    "cancellation from now on (a meter that keeps failing and recovering?)",
                    self.meter_id,
                    placed,
                    target,
                    limit,
                )
            return
        if plan is None:  # nothing worth an order: the one standing is withdrawn
            if current is not None:
                self._withdraw(target, sent, now)
            return
        body = {
            "side": plan.side,
            "interval": target,
            "energy_wh": plan.energy_wh,
            "limit_price": plan.limit_price,
        }
        self._send_order(body, placed, now)

    def _withdraw(self, interval: int, standing: dict[str, Any], now: int) -> None:
        """Cancel the order standing for ``interval`` (a cancellation: energy 0), if the ledger's
        max_orders_per_interval leaves room (a cancellation is what the last one is kept for)."""
        placed, limit = standing.get("count", 1), self.params["max_orders_per_interval"]
        if limit is not None and placed >= limit:
            return
        cancel = {
            "side": standing["side"],
            "interval": interval,
            "energy_wh": 0,
            "limit_price": standing["limit_price"],
        }
        self._send_order(cancel, placed, now)

    def _send_order(self, body: dict[str, Any], placed: int, now: int) -> None:
        """Sign and send an order (or a cancellation) and remember it as the one standing for its
        interval, the ``placed`` + 1st sent for it (see max_orders_per_interval)."""
        interval = body["interval"]
        self._send("order", Topics.orders(self.community, self.meter_id), body, ttl_s=interval - now)
        self.orders[str(interval)] = {k: body[k] for k in ("side", "energy_wh", "limit_price")}
        self.orders[str(interval)]["count"] = placed + 1
        self.outbox.save("orders", self.orders)

    def _why_no_plan(self, forecast: int | None, capacity_wh: int) -> str:
        """Why the strategy (meter_agent/strategy.py, plan_order) plans no order for ``forecast``:
        the agent's own rules, in words for the status."""
        cfg = self.strategy
        if not cfg.trade:
            return (
                "trading is off (trade = false in agent.toml [market]): the agent reads the meter and "
                "sends its readings, and places no orders"
            )
        if forecast is None:
            return (
                "no forecast yet: the agent forecasts from the intervals whose energy it counted "
                "from start to end (the last one, the same one yesterday), and has none yet; the "
                "first orders follow the first whole interval it measured"
            )
        where = "(agent.toml [market])"
        if forecast > 0:
            energy = min(int(forecast * cfg.sell_share), capacity_wh)
            if energy < cfg.min_order_wh:
                return (
                    f"forecast surplus {forecast} Wh, of which sell_share {cfg.sell_share:g} is {energy} Wh "
                    f"to offer: below min_order_wh = {cfg.min_order_wh} {where}"
                )
        elif forecast == 0:
            return "forecast 0 Wh: nothing to offer or bid for"
        else:
            energy = min(-forecast, capacity_wh)
            if energy < cfg.min_order_wh:
                return f"forecast deficit {-forecast} Wh: below min_order_wh = {cfg.min_order_wh} {where}"
            most = (
                self.params["retail_price"] - self.params["grid_fee_per_kwh"] - self.params["levies_per_kwh"]
            )
            if most < self.params["feed_in_price"]:
                return (
                    f"forecast deficit {-forecast} Wh, but no bid can pay: the retail price less the grid "
                    f"fee and levies ({most} per kWh) is below the feed-in price "
                    f"({self.params['feed_in_price']}), below any seller's ask"
                )
        return "the strategy plans none"  # (plan_order has no other reason)

    def _send(self, msg_type: str, topic: str, body: dict[str, Any], ttl_s: int) -> int:
        created = int(self.clock())

        def build(seq: int) -> tuple[str, bytes]:
            env = sign_envelope(
                self.key,
                type=msg_type,
                community=self.community,
                seq=seq,
                body=body,
                created=created,
                ttl_s=max(ttl_s, 60),
            )
            return topic, env.to_bytes()

        seq, topic, payload = self.outbox.add(build)
        self.bus.publish(topic, payload, on_ack=lambda: self.outbox.ack(seq))
        return seq

    # -- receipts and status -------------------------------------------------------------------

    def _on_receipt(self, topic: str, payload: bytes) -> None:
        """A node's signed notice (forget confirmed messages) or a receipt (check, then keep).

        Nothing is believed unverified: a notice must be signed by a genesis validator and name
        this meter; a receipt must carry a quorum of seals and an inclusion proof.
        """
        try:
            if len(payload) > MAX_RECEIPT_BYTES:
                raise ValueError(f"{len(payload)} bytes is larger than any receipt")
            receipt = loads_strict(payload)
            if len(self._sealed_headers) > 4096:
                self._sealed_headers.clear()
            if isinstance(receipt, dict) and receipt.get("type") == "notice":
                self._on_notice(payload)
                return
            if isinstance(receipt, dict) and receipt.get("type") == "included":
                self._on_included(receipt)
                return
            result = receipt.get("result") if isinstance(receipt, dict) else None
            kinds = (*RECEIPT_KINDS, "order_outcome", "reading_flag")
            if not isinstance(result, dict) or result.get("kind") not in kinds:
                return  # nothing this agent keeps
            trust = self._trust_for(receipt)
            result = verify_receipt(
                receipt,
                community=self.community,
                validators=trust.validators,
                quorum=trust.quorum,
                sealed_headers=self._sealed_headers,
                on_header=self._check_header,
            )
        except (ValueError, CanonicalError, ReceiptError) as exc:
            self._alarm(f"ALARM: a receipt does not verify: {exc}")
            return
        kind = result.get("kind")
        if kind == "reading_flag":
            if result.get("meter") == self.meter_id and result.get("flag") == SERIAL_NOT_ENROLLED:
                self._on_serial_flag(result.get("interval"))
            return
        if kind == "order_outcome":  # the ledger took one of its orders: it is enrolled
            if result.get("meter") != self.meter_id:
                return
            height = receipt["header"]["height"]
            if result.get("withdrawn") == "meter_revoked":  # taken before, withdrawn: revoked since
                self._set_enrolled(
                    False,
                    f"revoked: its order for interval {result.get('interval')} was withdrawn",
                    height,
                    revoked=True,
                )
            else:
                self._set_enrolled(
                    True, f"its order for interval {result.get('interval')} was cleared", height
                )
            return
        if kind not in RECEIPT_KINDS:
            return
        if self.meter_id not in (result.get("seller"), result.get("buyer")):  # on the ledger, but
            # another meter's: a node that sends it here is faulty or hostile
            self._alarm(
                f"ALARM: a receipt of a {kind} that is not this meter's (seller {result.get('seller')}, "
                f"buyer {result.get('buyer')}) came on this meter's receipts topic: ignored"
            )
            return
        with self._lock:
            trade_id = result.get("trade") or f"{result['sell_order'][:24]}:{result['buy_order'][:24]}"
            header = receipt["header"]
            touched = self._heard_block(header["time"])  # records of folded trades now too old
            if trade_id in self.trades or not self._folded_already(trade_id, result):
                self._keep_trade(trade_id, kind, result, header["height"])
                touched.add(trade_id)
                touched |= self._evict()
            elif self._on_folded(trade_id, kind, result, header["height"]):
                touched.add(trade_id)
            if self.last_receipt is None or header["height"] >= self.last_receipt["height"]:
                self.last_receipt = {"height": header["height"], "time": header["time"], "kind": kind}
            # with the rows the state file did not take before: the folded totals written count
            # what the rows written hold, never a trade twice (a fold or merge not written yet)
            touched |= self._trades_unsaved
            try:
                self._write_trades(touched)
                self._trades_unsaved.clear()
            except OutboxError as exc:  # kept in memory; saved by a later poll (_save_trades)
                if self.state_error is None and not self._trades_unsaved:  # said once
                    log.error("%s: receipts are kept in memory until the state file takes them", exc)
                self._trades_unsaved |= touched
        if kind == "trade":  # cleared in that block: its order was in the book. (A settlement or
            # an adjustment is of a trade cleared before, and comes after a revocation too.)
            self._set_enrolled(True, "a receipt of its trades verified", receipt["header"]["height"])

    def _keep_trade(self, trade_id: str, kind: str, result: dict[str, Any], height: int) -> None:
        """Keep what a receipt of a trade kept whole (or not seen before) says of it."""
        entry = self.trades.setdefault(trade_id, {"interval": result.get("interval")})
        entry["side"] = "sell" if result.get("seller") == self.meter_id else "buy"
        entry["height"] = height
        if kind == "trade":
            entry.update(
                energy_wh=result["energy_wh"],
                value=result["value"],
                fees=result["grid_fee"] + result["levies"],
                status=entry.get("status", "traded"),
            )
        elif kind == "settlement":
            if "energy_wh" not in entry and type(result.get("energy_wh")) is int:
                entry["energy_wh"] = result["energy_wh"]  # traded (its trade receipt may not come)
            entry.update(
                settled_wh=result["settled_wh"],
                settled_value=result["value"],
                settled_fees=result["grid_fee"] + result["levies"],
            )
        else:  # an adjustment (a corrected reading, the grid operator's data)
            self._keep_adjustment(entry, result)
        if kind != "trade" and entry["height"] >= entry.get("status_height", -1):
            # the newest settlement or adjustment says how the trade stands
            entry.update(status=result["status"], flag=result.get("flag"), status_height=entry["height"])

    @staticmethod
    def _adjustment_key(height: int, result: dict[str, Any]) -> str:
        """An adjustment's key: its block's height and its content (its result's leaf hash)."""
        return f"{height}:{result_leaves([result])[0].hex()}"

    @staticmethod
    def _older_form(keys: Any, height: int | str) -> list[str]:
        """The keys of the older form (height:index) at ``height`` among ``keys``."""
        return [k for k in keys if k.partition(":")[0] == str(height) and k.partition(":")[2].isdigit()]

    @classmethod
    def _keep_adjustment(cls, entry: dict[str, Any], result: dict[str, Any]) -> None:
        """Keep an adjustment of ``entry``'s trade by its block's height and its content (its
        result's leaf hash), so a receipt that comes twice counts once, whatever index it claims:
        an audit path checked with a tree size taken from the receipt also verifies at other
        (index, size) pairs (found in a QA pass: a genuine receipt re-sent under another index
        counted twice). A block adjusts a trade at most once (one entry per trade of each
        interval it settles again), so no two genuine adjustments of one trade share a key;
        a key of the older form (height:index) at that height is the same one, replaced."""
        height = entry["height"]
        kept = entry.setdefault("adjustments", {})
        for key in cls._older_form(kept, height):
            del kept[key]
        kept[cls._adjustment_key(height, result)] = [
            result["delta_wh"],
            result["delta_value"],
            result["delta_grid_fee"] + result["delta_levies"],
        ]

    @staticmethod
    def _settled_figures(entry: dict[str, Any]) -> tuple[int, int, int]:
        """A settled trade's (energy, value, fees) as the ledger settled it, with its adjustments."""
        energy, value = entry["settled_wh"], entry.get("settled_value", 0)
        fees = entry.get("settled_fees", 0)
        for delta_wh, delta_value, delta_fees in entry.get("adjustments", {}).values():
            energy, value, fees = energy + delta_wh, value + delta_value, fees + delta_fees
        return energy, value, fees

    def adjustment_window_s(self) -> int:
        """How long after an interval's start the ledger may still adjust its trades, with the
        parameters in force now: it keeps an interval's settlement, which a corrected or late
        reading settles again, for correction_window_intervals + 1 intervals, and where it
        settles on the grid operator's data also until interval_s + gridops_window_s after its
        start (market/app.py, MarketApp._prune); once it has dropped it, it adjusts it no more."""
        p = market_params(self.config.params)
        window = (p["correction_window_intervals"] + 1) * p["interval_s"]
        if p["settlement_source"] != "meter":
            window = max(window, p["interval_s"] + p["gridops_window_s"])
        return window

    def _heard_block(self, block_time: int) -> set[str]:
        """Note the time of a block a receipt verified in; drop the records of folded trades that
        the ledger can no longer adjust (their interval is more than the adjustment window and
        ADJUSTMENT_MARGIN_S older than the newest block heard of), their unsettled figures folded
        for good. The ids of the records dropped (under the lock)."""
        f = self._folded
        if f["newest_time"] is None or block_time > f["newest_time"]:
            f["newest_time"] = block_time
        records_from = f["newest_time"] - self.adjustment_window_s() - ADJUSTMENT_MARGIN_S
        if f["records_from"] is not None and records_from <= f["records_from"]:
            return set()  # never back: a trade folded without a record is not taken for a new one
        f["records_from"] = records_from
        dropped = {t for t, row in self._folded_trades.items() if row["interval"] < records_from}
        for trade_id in dropped:
            self._fold_unsettled(self._folded_trades.pop(trade_id)["folded"])
        return dropped

    def _folded_already(self, trade_id: str, result: dict[str, Any]) -> bool:
        """Whether a receipt of a trade not kept whole is of one folded before: one with a record,
        or one of an interval folded through whose records are dropped (folded then, or too old
        for the ledger to adjust; a trade or settlement receipt sent again is already counted)."""
        if trade_id in self._folded_trades:
            return True
        f, interval = self._folded, result.get("interval")
        return (
            type(interval) is int
            and f["through_interval"] is not None
            and f["records_from"] is not None
            and interval <= f["through_interval"]
            and interval < f["records_from"]
        )

    def _on_folded(self, trade_id: str, kind: str, result: dict[str, Any], height: int) -> bool:
        """A receipt of a folded trade: its trade and settlement are in the folded totals already;
        an adjustment not counted yet (its key not in the trade's record) is added to them, and
        the newest says how the trade stands. Whether its record changed."""
        row = self._folded_trades.get(trade_id)
        if row is None or kind != "adjustment":
            return False
        record = row["folded"]
        noted = _note_adjustment(record, self._adjustment_key(height, result))
        if noted != "new":  # counted already (maybe as height:index by an older agent)
            return noted == "renamed"
        _add_to(
            self._folded,
            record["side"],
            result["delta_wh"],
            result["delta_value"],
            result["delta_grid_fee"] + result["delta_levies"],
        )
        if height >= record["status_height"]:
            record.update(status=result["status"], flag=result.get("flag"), status_height=height)
        return True

    def _fold_unsettled(self, record: dict[str, Any]) -> None:
        """Fold a folded trade's unsettled figures for good (its record leaves)."""
        if record.get("status") != "unsettled":
            return
        f = self._folded
        f["sold_unsettled_wh" if record["side"] == "sell" else "bought_unsettled_wh"] += record["energy_wh"]
        if record.get("flag"):
            f["unsettled_flags"] = sorted({*f["unsettled_flags"], str(record["flag"])})

    def _evict(self) -> set[str]:
        """While more than MAX_RECEIPTS trades are kept whole, fold the settled one of the oldest
        interval (the first kept on a tie); a pending trade stays. The ids folded (under the
        lock)."""
        folded: set[str] = set()
        while len(self.trades) > MAX_RECEIPTS:
            settled = [t for t, entry in self.trades.items() if "settled_wh" in entry]
            if not settled:
                break
            oldest = min(settled, key=lambda t: self.trades[t].get("interval") or 0)
            self._fold(oldest, self.trades.pop(oldest))
            folded.add(oldest)
        return folded

    def _fold(self, trade_id: str, entry: dict[str, Any]) -> None:
        """Fold a settled trade kept whole into the folded totals: its settled figures with its
        adjustments, and the newest interval folded. While the ledger may still adjust it, a
        record keeps its side, traded energy, status and the adjustments counted (_on_folded);
        else its unsettled figures are folded too."""
        side = "sell" if entry.get("side") == "sell" else "buy"
        _add_to(self._folded, side, *self._settled_figures(entry))
        interval = entry.get("interval") if type(entry.get("interval")) is int else 0
        f = self._folded
        f["through_interval"] = (
            interval if f["through_interval"] is None else max(f["through_interval"], interval)
        )
        record = {
            "side": side,
            "energy_wh": entry.get("energy_wh", 0),
            "status": entry.get("status"),
            "flag": entry.get("flag"),
            "status_height": entry.get("status_height", entry.get("height", -1)),
            "adjustments": sorted(entry.get("adjustments", {})),
        }
        if f["records_from"] is not None and interval < f["records_from"]:
            self._fold_unsettled(record)
        else:
            self._folded_trades[trade_id] = {"interval": interval, "folded": record}

    def _write_trades(self, ids: set[str]) -> None:
        """Write the rows of ``ids`` (a trade kept whole, a folded trade's record, or deleted),
        the folded totals and the last receipt in one durable transaction: a trade is never in
        both the rows and the folded totals, nor in neither (under the lock)."""
        rows = {t: self.trades.get(t) or self._folded_trades.get(t) for t in ids}
        self.outbox.save_entries(
            "trades",
            {t: row for t, row in rows.items() if row is not None},
            [t for t, row in rows.items() if row is None],
            values={"last_receipt": self.last_receipt, "folded_totals": self._folded},
        )

    def _on_serial_flag(self, interval: Any) -> None:
        """The ledger flagged this meter's reading of ``interval`` ``serial_not_enrolled`` (a verified
        receipt). When that reading carried the serial the agent believes enrolled (its join
        request's), the enroll_meter vote enrolled another one: that serial is the ledger's word
        from now on (kept in the state file), and the next poll stops the offers (_check_serial)."""
        with self._lock:
            signed = self.last_reading
            if signed is None or signed.get("interval") != interval:
                return  # not the reading this agent knows the serial of: nothing to conclude
            if signed.get("serial") != self.enrolled_serial or self.serial_refused is not None:
                return  # a serial the agent knows is not enrolled, or said already
            self.serial_refused = {"serial": signed["serial"], "interval": interval}
        try:
            self.outbox.save("serial_refused", self.serial_refused)
        except OutboxError:
            pass  # kept in memory; poll() reports a state file that cannot be written

    def _save_trades(self) -> None:
        """Save the kept trades a receipt could not save (OutboxError: poll() reports it)."""
        with self._lock:
            ids = set(self._trades_unsaved)
            self._write_trades(ids)
            self._trades_unsaved -= ids

    def totals(self) -> dict[str, Any]:
        """P2P energy and money so far, as the ledger settled them: ``sold_wh``, ``bought_wh``
        and ``earnings`` (micro-units, costs and fees taken off) count each trade's settlement
        with its adjustments. A trade without its settlement yet counts no energy and no money
        (``sold_pending_wh``/``bought_pending_wh``: traded, not settled yet; it may settle at
        less, or not at all), nor does one the ledger left unsettled (``sold_unsettled_wh``/
        ``bought_unsettled_wh``, its flags in ``unsettled_flags``: a missing reading, ...). Found
        in a QA pass: a household whose stopped and revoked agent never got its settlements showed
        its trades as traded, as money, and the seller's agent showed what was settled.

        Every trade ever received counts: the folded totals (trades no longer kept whole, _fold)
        and the trades kept. Found in a QA pass: only the kept trades counted, so past
        MAX_RECEIPTS the totals went down when a settlement dropped an older trade. Settled
        energy only goes down by a negative adjustment (a corrected reading, ...)."""
        with self._lock:
            return totals_of(self.trades, self._folded_trades, self._folded)

    @staticmethod
    def _saved_config(outbox: Outbox) -> TrustedConfig | None:
        """The configuration this agent followed before it stopped (None: the genesis's)."""
        saved = outbox.load("config")
        if saved is None:
            return None
        try:
            return TrustedConfig.from_json(saved)
        except ValueError as exc:  # its own file, but damaged: the history is walked again
            log.warning("the saved chain configuration is unusable (%s): starting from the genesis", exc)
            return None

    def _on_config(self, topic: str, payload: bytes) -> None:
        """A validator's configuration history (retained on ``config/<validator>``): follow its
        steps from the configuration this agent trusts, each checked against the seals of the
        validators in force before it (chain/config_proof.py)."""
        sender = topic.rsplit("/", 1)[-1]
        # what a validator in force sends and does not verify is an alarm; a removed validator's
        # topic may keep a stale or broken retained message for good (its account can no longer
        # be used to clear it): it is still walked, but its faults are not alarms
        complain = self._alarm if sender in self.validators else log.debug
        try:
            if len(payload) > MAX_CONFIG_BYTES:
                raise ValueError(f"{len(payload)} bytes is larger than any configuration history")
            history = loads_strict(payload)
        except (ValueError, CanonicalError) as exc:
            complain(f"ALARM: the configuration history from validator {sender} is unreadable: {exc}")
            return
        steps: list[TrustedConfig] = []
        reached, stopped = follow_config(
            history, self.config, community=self.community, on_step=steps.append, on_header=self._check_header
        )
        if reached.height > self.config.height:
            with self._lock:
                self._configs = (self._configs + steps)[-MAX_CONFIGS_KEPT:]
            self._follow(reached)
        if stopped is not None:
            complain(
                f"ALARM: the configuration history from validator {sender} stops at height "
                f"{reached.height}: {stopped}"
            )

    def _follow(self, config: TrustedConfig) -> None:
        """Trust ``config`` from now on: the validators that seal what the agent checks, the
        quorum, and the market's parameters (interval_s only after a restart: the agent's
        counters and intervals are built on the one it started with)."""
        params = market_params(config.params)
        with self._lock:
            before, self.config = self.config, config
            self.validators, self.quorum = config.validators, config.quorum
            interval_s = self.params["interval_s"]
            self.params = dict(params, interval_s=interval_s)
        log.info(
            "the chain's configuration at height %d: %d validators, quorum %d%s",
            config.height,
            len(config.validators),
            config.quorum,
            "" if params == market_params(before.params) else ", new market parameters",
        )
        if params["interval_s"] != interval_s:
            self._alarm(
                f"ALARM: the community voted interval_s from {interval_s} to {params['interval_s']} s: "
                "restart the agent to follow it"
            )
        try:
            self.outbox.save("config", config.to_json())
        except OutboxError:
            pass  # kept in memory (walked again from the last one saved); poll() reports the file

    def _trust_for(self, message: Any) -> TrustedConfig:
        """The configuration that sealed ``message``'s block: the last one followed below its
        header's height (the one in force before that block), else the oldest kept."""
        header = message.get("header") if isinstance(message, dict) else None
        height = header.get("height") if isinstance(header, dict) else None
        header_height = height if type(height) is int else math.inf
        with self._lock:
            configs = self._configs
        before = [c for c in configs if c.height < header_height]
        return before[-1] if before else configs[0]

    def _check_header(self, header: dict[str, Any], block_hash: bytes) -> None:
        """Accept a sealed header as the one of its height, or raise ReceiptError when another
        sealed header was accepted at that height: two blocks sealed at one height are a fork
        (validators of an earlier, smaller set can seal a block at a height they once sealed,
        long after: docs/agent.md, "Limitation"), and what the later one says is refused. The
        newest MAX_HEADERS_KEPT heights are remembered, in the state file too."""
        height = header["height"]
        if type(height) is not int:
            raise ReceiptError(f"a sealed header's height is {height!r}, not a number")
        dropped: list[int] = []
        with self._lock:
            known = self._headers.get(height)
            if known is None:
                self._headers[height] = block_hash.hex()
                dropped = sorted(self._headers)[: max(0, len(self._headers) - MAX_HEADERS_KEPT)]
                for old in dropped:
                    del self._headers[old]
        if known is None:
            try:
                removed = [str(h) for h in dropped]
                self.outbox.save_entries("headers", {str(height): block_hash.hex()}, removed)
            except OutboxError:
                pass  # kept in memory; poll() reports a state file that cannot be written
        elif known != block_hash.hex():
            raise ReceiptError(
                f"block {height} is sealed with header {block_hash.hex()[:16]}..., but this agent accepted "
                f"header {known[:16]}... at that height before: two blocks sealed at one height are a fork "
                "(validators sealing an old height again?); refused. Tell the community's operators"
            )

    def _on_included(self, message: dict[str, Any]) -> None:
        """Forget the messages an inclusion proof shows in a sealed block with their results
        (checked first: a quorum's seals on the header, each kept message's own bytes under its
        tx_root, its result under the result_root); one shown without its result stays kept."""
        try:
            seqs = [tx["seq"] for tx in message["txs"]][: messages.MAX_NOTICE_SEQS]
            held = self.outbox.messages(seqs)
            kept = {seq: payload for seq, _topic, payload in held}
            trust = self._trust_for(message)
            included = verify_included(
                message,
                meter=self.meter_id,
                payloads=kept,
                community=self.community,
                validators=trust.validators,
                quorum=trust.quorum,
                sealed_headers=self._sealed_headers,
                on_header=self._check_header,
            )
        except (KeyError, TypeError, ReceiptError) as exc:
            self._alarm(f"ALARM: an inclusion proof does not verify: {malformed(exc)}")
            return
        unsettled = sorted(set(kept) - set(included.seqs))
        if unsettled and not self._results_missing_said:  # kept, resent: said once
            self._results_missing_said = True
            self._alarm(
                f"ALARM: an inclusion proof shows message(s) {unsettled[:10]} in block {included.height} "
                "without their results (what the ledger made of them): a node older than 2026-12-07, or a "
                "validator that dropped them. They stay in the outbox and are sent again until a proof with "
                "their results, or the validators' notices, confirm them; update the community's nodes"
            )
        by_reason: dict[str, list[int]] = {}
        for seq, reason in included.rejected.items():
            by_reason.setdefault(reason, []).append(seq)
        for reason, seqs in by_reason.items():  # in the block, but the ledger did not take them
            where = f"booked message(s) {seqs[:10]} in block {included.height} as rejected"
            self._refused(seqs, reason, where, included.height)
        booked = [seq for seq in included.seqs if seq not in included.rejected]
        if booked:  # the ledger took it (its proven result ok): only an enrolled meter's is taken
            readings = Topics.readings(self.community, self.meter_id)
            kind = "reading" if any(t == readings for seq, t, _p in held if seq in booked) else "order"
            self._set_enrolled(
                True, f"the ledger booked its {kind} in block {included.height}", included.height
            )
        keep = {seq for seq, reason in included.rejected.items() if reason in NOT_YET}
        if keep:  # forgotten once signed again (_sign_again_not_yet)
            with self._lock:
                self._not_yet.extend(m for m in held if m[0] in keep)
        forget = [seq for seq in included.seqs if seq not in keep]
        if forget:
            self._forget(forget)

    def _on_notice(self, payload: bytes) -> None:
        """A validator-signed refusal: acted on once as many validators as two quorums share gave
        the same reason for a message (chain/notice.py), so a faulty validator alone cannot make
        the agent forget."""
        try:
            notice = open_notice(
                payload, community=self.community, meter=self.meter_id, trusted=self.validators
            )
        except Rejected as exc:
            with self._lock:
                self.forged_notices += 1
            if self.forged_notices == 1:
                log.warning("ignored a notice that does not verify (%s): nothing is forgotten", exc)
            return
        needed = refusal_threshold(len(self.validators), self.quorum)
        kept = {seq for seq, _topic, _payload in self.outbox.messages(notice.seqs)}  # only those count
        agreed = []
        with self._lock:
            for seq in notice.seqs:
                if seq not in kept:  # confirmed already, or never sent: nothing to remember
                    continue
                told = self._refusals.setdefault(seq, {}).setdefault(notice.refused, set())
                told.add(notice.signer)
                if len(told) >= needed:
                    agreed.append(seq)
            for seq in agreed:
                self._refusals.pop(seq, None)
            while len(self._refusals) > MAX_REFUSALS_HEARD:  # the oldest heard first
                del self._refusals[next(iter(self._refusals))]
        if not agreed:
            return
        if notice.refused in NOT_YET:  # refused for now, not for good: sent again
            self._alarm(
                f"ALARM: the ledger refused message(s) {agreed[:10]} as {notice.refused}: this device's "
                "clock is ahead of the validators' (check its time sync: timedatectl); they stay in the "
                "outbox and are sent again until the ledger takes them"
            )
            return
        self._refused(agreed, notice.refused, f"refused message(s) {agreed[:10]}", None)
        self._forget(agreed)

    def _refused(self, seqs: list[int], reason: str, what: str, height: int | None) -> None:
        """Act on the ledger's refusal of kept messages, told by notices (``height`` None) or
        proven in block ``height`` (``what`` says which, for the log), before they leave the
        outbox."""
        if reason == "seq_behind":
            behind = self.outbox.messages(seqs)
            with self._lock:
                self._behind.extend(behind)  # signed again with new seqs at the next poll
        elif reason == "replay":  # the ledger holds its seq already (its proof went missing)
            # but held is not taken: a reading it booked as reading_too_early is held too (a QA
            # pass: a validator stripped the results from an inclusion proof, the others then
            # answered replay). A reading is signed again with a new seq, which the ledger books
            # or refuses as duplicate_reading; an order is not (it may have been booked)
            topic = Topics.readings(self.community, self.meter_id)
            readings = [m for m in self.outbox.messages(seqs) if m[1] == topic]
            with self._lock:
                self._not_yet.extend(readings)
            again = f" ({len(readings)} reading(s) signed again, in case it did not take them)"
            log.info("the ledger holds message(s) %s already: confirmed%s", seqs[:10], again * bool(readings))
        elif reason in NOT_YET:  # booked, so these bytes cannot be taken again: new seqs
            log.warning(
                "the ledger %s: %s (the block's time was before the reading's interval ended); "
                "signed again at the next poll",
                what,
                reason,
            )
        else:
            log.info("the ledger %s: %s", what, reason)
            if reason in NOT_ENROLLED:
                self._set_enrolled(
                    False, f"the ledger refused its messages: {reason}", height, revoked=reason == "revoked"
                )

    def _forget(self, seqs: list[int]) -> None:
        """The ledger holds or refused these messages: out of the outbox for good."""
        with self._lock:
            for seq in seqs:
                self._refusals.pop(seq, None)
        try:
            self.outbox.confirm(seqs)
            self._confirm_failed = False
        except OutboxError as exc:  # they stay in the outbox: resent, and the ledger tells again
            if self.state_error is None and not self._confirm_failed:  # said once
                log.error("%s: confirmed messages stay in the outbox until it can be written", exc)
            self._confirm_failed = True

    def _sign_again_ahead(self, now: int) -> None:
        """The ledger refused messages as ``seq_behind``: seqs older than its window for this meter,
        never booked. Another copy of this meter's key sent newer seqs (a second agent with a copy
        of this key and config, or this agent's state restored from an older copy), and every
        message would be refused from now on. Move the counter ahead (to the clock in ms, where a
        fresh state starts, so past any other copy's) and sign those messages again; the market
        takes a newer order for the same interval in place of the older, and a reading once."""
        with self._lock:
            behind, self._behind = self._behind, []
        if not behind or self._seq_unreachable:
            return
        if self._seq_moved_to is not None and min(seq for seq, _, _ in behind) >= self._seq_moved_to:
            # refused again after moving ahead: someone keeps ahead of the clock (another agent
            # with this key running now, or a seq the ledger holds near 2^53): re-signing would loop
            self._seq_unreachable = True
            self._alarm(
                "ALARM: the ledger still refuses this meter's messages as older than it holds after "
                "the agent moved its seq ahead: another agent with this meter's key is running now, or "
                "the ledger holds a seq this agent cannot reach. Stop the other agent; if none runs, "
                "the meter needs a new key (peerwatt agent setup, member admit). Not signing again"
            )
            return
        self._seq_moved_to = self.outbox.advance_seq_to_clock()
        # in their old order (notices may come in any order): an order and the cancellation after
        # it must stay in that order, or the re-signed order would come back (a review's guess)
        again = self._send_again(sorted(behind, key=lambda m: m[0]), now)
        message = (
            f"ALARM: the ledger refused {len(behind)} message(s) as older than it holds for this meter: "
            "another agent with this meter's key sent newer ones (a copy of this agent's key and "
            "config running elsewhere, or its state restored from an older copy?). Seq moved ahead, "
            f"{again} signed again"
        )
        self._alarm(message)

    def _sign_again_not_yet(self, now: int) -> None:
        """Messages a block booked as ``reading_too_early`` (or ``from_future``): a block time
        behind their interval's end, not a refusal for good. Their seqs are used up on the ledger,
        so the same bodies are signed again with new seqs (until they expire), then the old
        messages leave the outbox."""
        with self._lock:
            not_yet, self._not_yet = self._not_yet, []
        self._send_again(sorted(not_yet, key=lambda m: m[0]), now)  # in their old order (above)
        self._forget([seq for seq, _topic, _payload in not_yet])

    def _send_again(self, messages: list[tuple[int, str, bytes]], now: int) -> int:
        """Sign the bodies of kept ``messages`` again with new seqs, keeping their expiry (those
        expired, or not this agent's, are dropped); how many went out."""
        again = 0
        for _seq, topic, payload in messages:
            try:
                env = loads_strict(payload)
                msg_type, body, expires = env["type"], env["body"], env["expires"]
            except (CanonicalError, ValueError, TypeError, KeyError):
                continue  # not what this agent signs: nothing to send again
            if expires <= now:
                continue  # it would be refused as expired
            self._send(msg_type, topic, body, ttl_s=expires - now)
            again += 1
        self.resigned += again
        return again

    def _alarm(self, message: str) -> None:
        """Keep ``message`` for the status (the newest ``MAX_ALARMS``) and log it as an error; of a
        flood, one line per ``ALARM_LOG_EVERY_S`` says how many were not logged."""
        with self._lock:
            self.alarms.append(message)
            del self.alarms[:-MAX_ALARMS]
            now = time.monotonic()
            if now - self._alarm_logged_at < ALARM_LOG_EVERY_S:
                self._alarms_unlogged += 1
                return
            unlogged, self._alarms_unlogged, self._alarm_logged_at = self._alarms_unlogged, 0, now
        if unlogged:
            log.error("%s (%d alarms since the last one logged: in the status only)", message, unlogged)
        else:
            log.error("%s", message)

    def _set_enrolled(self, enrolled: bool, why: str, height: int | None, revoked: bool = False) -> None:
        """Record what the ledger said about this meter's enrolment in block ``height``; log once
        when trading starts (the first sign of enrolment, e.g. after the votes of ``peerwatt
        member admit``). Ordered by height: what an older block says never undoes what a newer
        one said, and at one height a refusal wins (found in a QA pass: an old order outcome's
        receipt, replayed after the validators' notices said ``revoked``, set enrolled back to
        true). A refusal told by notices (``height`` None) names no block: it counts as newer
        than every block this agent accepted a header of. ``revoked``: the ledger said the meter
        key is revoked, which is for good (_on_revoked), whatever the order of the news."""
        if revoked:
            self._on_revoked(why)
        with self._lock:
            if height is None:
                height = max([self.enrolled_height, *self._headers])
            before, told_at = self.enrolled, self.enrolled_height
            if height < told_at or (height == told_at and enrolled and before is False):
                return  # older news
            if (before, told_at) == (enrolled, height):
                return  # heard before
            self.enrolled, self.enrolled_height = enrolled, height
        if before is enrolled:  # the same news from a newer block: only its height is recorded
            pass
        elif enrolled:
            log.info("meter %s is enrolled (%s): trading starts", self.meter_id, why)
        elif revoked:
            pass  # said by _on_revoked
        elif before is True:
            log.warning("meter %s is no longer enrolled (%s): no trading", self.meter_id, why)
        else:
            log.info("meter %s is not enrolled yet (%s): no trading until the votes pass", self.meter_id, why)
        try:
            self.outbox.save_all({"enrolled": enrolled, "enrolled_height": height})
        except OutboxError:
            pass  # kept in memory; poll() reports a state file that cannot be written

    def _on_revoked(self, why: str) -> None:
        """The ledger said this meter key is revoked (``why``): the household left the community,
        or its meter was replaced. A revoked key is never enrolled again, and the ledger takes
        none of its messages: say so once, keep nothing in the outbox that can never be booked,
        and sign no orders or readings from now on (_update_order, _sign_pending; a QA pass: the
        agent of a household that left kept signing buy orders, each refused as revoked). Its
        trades cleared before still settle, and their receipts are still kept."""
        with self._lock:
            if self.revoked is not None:
                return
            self.revoked = (
                f"meter {self.meter_id} is no longer enrolled, its key revoked ({why}): the household left "
                "the community or its meter was replaced; the ledger takes no order or reading of it any more"
            )
            self._behind, self._not_yet = [], []
            self._refusals.clear()
        kept = [seq for seq, _topic, _payload in self.outbox.pending()]
        kept += [seq for seq, _topic, _payload in self.outbox.due_for_resend(-math.inf, limit=2**31)]
        log.warning(
            "%s: this agent signs no more orders or readings, and dropped the %d message(s) it kept "
            "that the ledger can never book. Stop it (`sudo systemctl disable --now peerwatt-agent`); "
            'a new meter is enrolled under a new key (docs/agent.md, "Replacing the meter")',
            self.revoked,
            len(kept),
        )
        self._last_heartbeat = -math.inf  # the status says so at the next poll
        try:  # (its orders and pending reading are dropped by the next poll, on the agent's thread)
            self.outbox.confirm(kept)
            self.outbox.save("revoked", self.revoked)
        except OutboxError:
            pass  # kept in memory; poll() reports a state file that cannot be written

    def status(self) -> dict[str, Any]:
        sample = self.last_sample
        return {
            "state": "online",
            "meter": self.meter_id,
            "meter_ok": self.fault is None,
            "fault": self.fault,
            "readings_withheld": self.readings_withheld,
            "serial_mismatch": self.serial_mismatch,
            "power_w": None if sample is None else sample.power_w,
            "last_reading": self.last_reading,
            "outbox": self.outbox.depth(),
            "awaiting_confirmation": self.outbox.awaiting_confirmation(),
            "seq": self.outbox.last_seq(),
            "broker_connected": self.bus.connected,
            "orders": self.orders,
            "totals": self.totals(),
            "alarms": self.alarms[-5:],
            "state_error": self.state_error,
            "meter_read_errors": self.meter_read_errors,
            "forged_notices": self.forged_notices,
            "last_receipt": self.last_receipt,
            "enrolled": self.enrolled,
            "revoked": self.revoked,
            "no_order": self.no_order,
            # the bus's trouble in words (peerwatt/bus/mqtt.py: another client with this account's
            # client id, or why it is not connected); None on a bus that says none
            "broker_problem": getattr(self.bus, "contested", None) or getattr(self.bus, "last_error", None),
            # True only when the broker said another client took this client id (MQTT 5 "Session
            # taken over"); a guess from the timing alone is in broker_problem's words only
            "broker_taken_over": bool(getattr(self.bus, "taken_over", False)),
            "config_height": self.config.height,
        }

    def _heartbeat(self, now: int) -> None:
        self._last_heartbeat = time.monotonic()
        status = self.status()
        status["time"] = now
        self._save_energy(now, status=status)
        self.bus.publish(self.status_topic, json.dumps(status, sort_keys=True).encode(), retain=True)
        if self.ha_prefix and self.last_sample is not None:
            totals = status["totals"]
            self.bus.publish(
                state_topic(self.community, self.meter_id),
                state_payload(
                    self.last_sample.power_w,
                    self.last_sample.import_wh,
                    self.last_sample.export_wh,
                    totals["sold_wh"],
                    totals["bought_wh"],
                    totals["earnings"],
                ),
                qos=0,
            )
