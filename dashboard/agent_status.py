"""The households' agents as the broker last saw them: each agent's retained status on
``peerwatt/<community>/status/<meter>`` (JSON, refreshed every ``heartbeat_s``; ``offline`` as its
last will or on a clean stop), kept in memory, latest per meter.

The dashboard stays read-only over a node's store: the status is not on the ledger. Whoever serves
the dashboard (``peerwatt dashboard`` with a ``[broker]`` section in dashboard.toml) subscribes a
bus to ``peerwatt/<community>/status/+`` and hands each message to :meth:`AgentStatusBoard.handle`;
without a broker the household page says that the agent's health is not available here. This
module imports no bus: it takes topic strings and payloads.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from chain.messages import MAX_SKEW_S
from dashboard.text import isolate_inline
from dashboard.units import energy

MAX_STATUS_BYTES = 64 * 1024
MAX_WORDS_CHARS = 1000  # an agent's words (fault, revoked, no_order, broker_problem, ...) are cut past this
MAX_FIGURE = 10**15  # Wh: more than any meter measures in a lifetime; a larger "figure" is none
MAX_FLAGS = 10  # unsettled_flags shown (the market has six), each at most MAX_FLAG_CHARS
MAX_FLAG_CHARS = 64
TOTAL_FIGURES = (
    "sold_wh",
    "bought_wh",
    "sold_pending_wh",
    "bought_pending_wh",
    "sold_unsettled_wh",
    "bought_unsettled_wh",
)
NEW_TOTAL_KEYS = TOTAL_FIGURES[2:]  # sent since 163cc4f, when sold_wh and bought_wh became settled
OLDER_AGENT_WORDS = (
    "as an older agent counts them: traded, settled where settled (an updated agent counts the "
    "settled trades apart from those not settled yet or left unsettled by the ledger)"
)
NO_TOTALS_WORDS = "no figure it sent can be shown (each must be a whole number of Wh)"
_NO_ORDER_RE = re.compile(r"no order for interval ([0-9]{1,20}): (.*)", re.DOTALL)
LAST_TIME = 253_402_300_799  # 9999-12-31 23:59:59 UTC: a later "time" is not a time
STALE_HEARTBEATS = 3  # a status older than this many heartbeats is reported as stale
DEFAULT_HEARTBEAT_S = 60

WHAT_TO_DO_OFFLINE = (
    "Check the device next to your meter: is it powered and on the network? On it, "
    "`systemctl status peerwatt-agent` shows whether the agent runs (start it with "
    "`sudo systemctl restart peerwatt-agent`), `journalctl -u peerwatt-agent` why it stopped, and "
    "`peerwatt agent status -c /etc/peerwatt/agent.toml` its last reading, outbox and broker "
    "connection. Until it is back no readings are sent: your trades of those intervals stay "
    "unsettled and move no money (a late reading still settles them). More in docs/agent.md, "
    '"Troubleshooting" (broker unreachable, certificate refused, state file not writable, clock skew).'
)
WHAT_TO_DO_METER = (
    "The agent runs but cannot read your meter. Check the meter's cable or Modbus gateway and its "
    "power; `peerwatt meter read --profile <profile> --host <gateway>` (or `peerwatt meter probe`) "
    "on the device shows whether the meter answers. The agent offers nothing it cannot back while "
    'the meter fails. More in docs/agent.md, "Troubleshooting" (meter not answering).'
)
WHAT_TO_DO_READINGS = (
    "The agent reads your meter, but its counters were not usable at the interval's end (read as 0 "
    "or not available, or they went backwards and no second reading confirmed it). It offers again "
    "as soon as it signs a reading; a replaced meter reading 0 is taken as new after an interval. "
    "`peerwatt meter read --profile <profile> --host <gateway>` on the device shows the counters. "
    'More in docs/agent.md, "What it does, exactly" (readings).'
)
WHAT_TO_DO_STATE = (
    "The agent runs but cannot write its state file, and sends nothing that is not saved first: "
    "no offers, no readings. Free space on the device (`df -h /var/lib/peerwatt`) or fix the "
    "folder's owner (`chown -R peerwatt /var/lib/peerwatt`); an SD card that turned read-only needs "
    "replacing. The agent resumes by itself. More in docs/agent.md, "
    '"Troubleshooting" (state file not writable).'
)
WHAT_TO_DO_SERIAL = (
    "The meter your agent reads is not the one the community enrolled for your household. The "
    "wrong meter (another unit behind the same gateway)? Check `[meter] host` and `unit` in "
    "agent.toml (`peerwatt meter probe` on the device). A new meter? It needs enrolling under a "
    "new meter key: `peerwatt agent join-request` with your member key and its serial, then a "
    'member runs `peerwatt member admit`. More in docs/agent.md, "Replacing the meter".'
)
NOT_ENROLLED_WARNING = (
    "Your meter is not enrolled on the community's ledger: the ledger refuses its orders and "
    "readings, so your household does not trade and no money moves."
)
WHAT_TO_DO_NOT_ENROLLED = (
    "A new household trades once the community has voted it in: ask a member to propose it "
    "(`peerwatt member admit`, docs/governance.md) and the members to vote; the agent's log says "
    "`meter <id> is enrolled ...: trading starts` when the vote has passed. If your meter was "
    "enrolled before, it was revoked, or the agent signs with another key than the one in your "
    "join request: ask the community's coordinator. More in docs/agent.md, "
    '"Troubleshooting" (not enrolled).'
)
WHAT_TO_DO_REVOKED = (
    "If your household left the community, the agent is no longer needed: stop it on the device "
    "(`sudo systemctl disable --now peerwatt-agent`). If your meter was replaced, the new meter is "
    "enrolled under a new meter key (`peerwatt agent join-request`, then a member runs `peerwatt member "
    'admit`; docs/agent.md, "Replacing the meter"). If neither, ask the community\'s coordinator. More '
    'in docs/agent.md, "Troubleshooting" (not enrolled).'
)
WHAT_TO_DO_BROKER_TAKEN_OVER = (
    "Two clients use your household's broker account: a copy of this agent (a copied agent folder "
    "with the same certificate or account, or a second systemd unit) runs elsewhere, and the two "
    "push each other off the broker, so readings and orders go out late. Find the copy and stop it; "
    "the agent's log (`journalctl -u peerwatt-agent`) says `... no other client is using this "
    "account's client id` once it is gone. More in docs/agent.md, "
    '"Troubleshooting" (another agent with this account).'
)
WHAT_TO_DO_BROKER = (
    "The agent reconnects by itself, and what it could not send waits in its outbox. If this lasts, "
    "check the device's network and the broker's address (`[broker] url` in agent.toml); "
    "`journalctl -u peerwatt-agent` shows the agent's own lines. More in docs/agent.md, "
    '"Troubleshooting" (broker unreachable).'
)
LEFT_NOTE = (
    "This meter left the community: its key was revoked by a community vote, so the ledger takes no "
    "more orders or readings of it, and its agent is no longer needed."
)
LEFT_STILL_RUNNING = (
    "Your agent still runs: stop it on the device with `sudo systemctl disable --now peerwatt-agent` "
    "(nothing it sends is booked any more)."
)


class AgentStatusBoard:
    """The latest status per meter of one community (thread-safe; the bus calls ``handle`` from
    its network thread)."""

    def __init__(self, community: str, clock: Callable[[], float] = time.time) -> None:
        self.community = community
        self.clock = clock
        self.prefix = f"peerwatt/{community}/status/"
        self.pattern = self.prefix + "+"
        self.connected: bool | None = None  # the dashboard's own broker connection, if known
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[float, dict[str, Any] | None, str]] = {}

    def handle(self, topic: str, payload: bytes) -> None:
        """One message of ``peerwatt/<community>/status/<meter>``; anything else is ignored."""
        if not topic.startswith(self.prefix) or len(payload) > MAX_STATUS_BYTES:
            return
        meter = topic[len(self.prefix) :]
        if not meter or "/" in meter:
            return
        if payload == b"":  # a retained message deleted
            with self._lock:
                self._latest.pop(meter, None)
            return
        text = payload.decode("utf-8", "replace").strip()
        status: dict[str, Any] | None = None
        if text != "offline":
            try:
                parsed = json.loads(text, parse_constant=_no_constant)
            except (ValueError, RecursionError):  # not JSON (Infinity and NaN are not JSON either),
                parsed = None  # or nested past the parser's depth
            status = parsed if isinstance(parsed, dict) else {"state": "unreadable"}
        with self._lock:
            self._latest[meter] = (self.clock(), status, text if status is None else "")

    def health(
        self, meter: str, heartbeat_s: int = DEFAULT_HEARTBEAT_S, left: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """What the household page shows: state (online, not_enrolled, revoked, offline, stale,
        meter_failing, serial_mismatch, readings_withheld, state_error, unknown; ``left`` when
        ``left``, what the ledger says of the household's departure (household_view.departure),
        has its meter revoked), the figures of the last status, a warning with what to do, and
        apart from it an enrolment warning when the agent reports ``enrolled: false`` (whatever
        else is wrong: a meter the ledger refuses trades nothing even once it reads again) and a
        broker warning when it reports a ``broker_problem``; its ``no_order`` and ``totals``."""
        out = self._health(meter, heartbeat_s)
        if left is not None and left.get("meter_revoked"):
            return gone(out)
        return out

    def _health(self, meter: str, heartbeat_s: int) -> dict[str, Any]:
        with self._lock:
            entry = self._latest.get(meter)
        out: dict[str, Any] = {
            "configured": True,
            "broker_connected": self.connected,
            "state": "unknown",
            "received": None,
            "last_reading": None,
            "meter_ok": None,
            "fault": None,
            "meter_read_errors": None,
            "outbox": None,
            "awaiting_confirmation": None,
            "last_receipt": None,
            "enrolled": None,
            "alarms": [],
            "warning": None,
            "what_to_do": None,
            "enrolment_warning": None,
            "enrolment_what_to_do": None,
            "revoked": None,
            "no_order": None,
            "no_order_interval": None,
            "broker_problem": None,
            "broker_warning": None,
            "broker_what_to_do": None,
            "totals": None,
            "totals_words": None,
            "left_note": None,
        }
        if entry is None:
            out["warning"] = (
                "No status from your agent has reached the dashboard: it has never connected to the "
                "community's broker, or not since the dashboard started."
            )
            out["what_to_do"] = WHAT_TO_DO_OFFLINE
            return out
        received, status, _ = entry
        out["received"] = int(received)
        if status is None:
            out["state"] = "offline"
            out["warning"] = (
                "Your agent is offline: it stopped, or lost its connection and the broker published its "
                "last will."
            )
            out["what_to_do"] = WHAT_TO_DO_OFFLINE
            return out
        if status.get("state") == "unreadable":
            out["warning"] = "Your agent's last status could not be read (not JSON)."
            out["what_to_do"] = WHAT_TO_DO_OFFLINE
            return out
        for key in (
            "last_reading",
            "meter_ok",
            "fault",
            "meter_read_errors",
            "outbox",
            "awaiting_confirmation",
        ):
            out[key] = status.get(key)
        # what the page formats as times must be times (a hostile or broken agent's status once
        # made its household page answer 500)
        out["last_reading"] = _reading(status.get("last_reading"))
        out["last_receipt"] = _receipt(status.get("last_receipt"))
        enrolled = status.get("enrolled")
        out["enrolled"] = enrolled if enrolled in (True, False, "unknown") else None
        revoked = out["revoked"] = _words(status.get("revoked"))
        if enrolled is False and revoked is None:  # the agent runs, but the ledger refuses what it sends
            out["enrolment_warning"] = NOT_ENROLLED_WARNING  # (a revoked key is a state of its own)
            out["enrolment_what_to_do"] = WHAT_TO_DO_NOT_ENROLLED
        if revoked is None:  # a revoked agent orders nothing, and its revocation says why
            out["no_order_interval"], out["no_order"] = _no_order(status.get("no_order"))
        problem = out["broker_problem"] = _words(status.get("broker_problem"))
        if problem is not None:
            # the agent's flag, not its words: set only when the broker said "Session taken over"
            # (an older agent sends no flag and gets the general advice beside its own words)
            if status.get("broker_taken_over") is True:
                out["broker_warning"] = (
                    f"Your agent shares its broker account with another client: {problem}."
                )
                out["broker_what_to_do"] = WHAT_TO_DO_BROKER_TAKEN_OVER
            else:
                out["broker_warning"] = f"Your agent reports trouble with the community's broker: {problem}."
                out["broker_what_to_do"] = WHAT_TO_DO_BROKER
        out["totals"] = _totals(status.get("totals"))
        out["totals_words"] = totals_words(out["totals"])
        alarms = status.get("alarms")
        out["alarms"] = [str(a) for a in alarms[-5:]] if isinstance(alarms, list) else []
        age = self.clock() - fresh_since(received, status.get("time"))
        if age > STALE_HEARTBEATS * heartbeat_s:  # first: what it last said may no longer hold
            out["state"] = "stale"
            out["warning"] = (
                f"No status from your agent for {int(age // 60)} min (it reports every {heartbeat_s} s): "
                "it may be hanging or cut off from the broker."
            )
            out["what_to_do"] = WHAT_TO_DO_OFFLINE
        elif revoked is not None:
            out["state"] = "revoked"
            out["warning"] = (
                f"Your agent says your meter's key was revoked: {revoked}. It signs no more orders or "
                "readings."
            )
            out["what_to_do"] = WHAT_TO_DO_REVOKED
        elif status.get("meter_ok") is False or status.get("fault"):
            out["state"] = "meter_failing"
            fault = _words(status.get("fault")) or "the meter does not answer"
            out["warning"] = f"Your agent cannot read your meter: {fault}."
            out["what_to_do"] = WHAT_TO_DO_METER
        elif status.get("serial_mismatch"):
            out["state"] = "serial_mismatch"
            why = _words(status["serial_mismatch"])
            out["warning"] = f"Your agent offers nothing for now: {why}."
            out["what_to_do"] = WHAT_TO_DO_SERIAL
        elif status.get("readings_withheld"):
            out["state"] = "readings_withheld"
            why = _words(status["readings_withheld"])
            out["warning"] = (
                f"Your agent offers nothing for now: it could not sign your meter's last reading ({why}), "
                "and a trade without readings never settles."
            )
            out["what_to_do"] = WHAT_TO_DO_READINGS
        elif status.get("state_error"):
            out["state"] = "state_error"
            error = _words(status["state_error"])
            out["warning"] = f"Your agent cannot save its state ({error}): it sends nothing."
            out["what_to_do"] = WHAT_TO_DO_STATE
        else:
            out["state"] = "not_enrolled" if enrolled is False else "online"
        return out


def gone(out: dict[str, Any]) -> dict[str, Any]:
    """``out`` (a health) for a meter the ledger revoked: the household left (or replaced the
    meter), so its agent is no longer needed. No offline, stale or restart advice (the quickstart
    told it to stop that agent: found in a QA pass), and no enrolment or broker warning; an agent
    still running is told it may stop."""
    running = out["state"] not in ("offline", "stale", "unknown")
    out.update(
        state="left",
        warning=None,
        what_to_do=None,
        enrolment_warning=None,
        enrolment_what_to_do=None,
        broker_warning=None,
        broker_what_to_do=None,
        no_order=None,
        no_order_interval=None,
        left_note=f"{LEFT_NOTE} {LEFT_STILL_RUNNING}" if running else LEFT_NOTE,
    )
    return out


def _words(value: Any) -> str | None:
    """An agent's words for the page and the API: None for none (null, "", false); text as it
    is, anything else as its JSON; cut at MAX_WORDS_CHARS ("…"), and isolated where it could
    reorder the sentence it stands in (``isolate_inline``). The template escapes it and shows its
    controls (``isolate``)."""
    if value is None or value is False or value == "":
        return None
    if not isinstance(value, str):
        try:
            value = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):  # nested deeper than the encoder goes
            value = "(a value nested too deep to show)"
    if len(value) > MAX_WORDS_CHARS:
        value = value[:MAX_WORDS_CHARS] + "\u2026"
    return isolate_inline(value)


def _no_order(value: Any) -> tuple[int | None, str | None]:
    """(the interval, why) of the agent's ``no_order`` ("no order for interval T: why"); the
    interval None when the words name none that is a time (then why is all of them)."""
    if isinstance(value, str):
        match = _NO_ORDER_RE.match(value)
        if match is not None and _is_time(int(match.group(1))):
            return int(match.group(1)), _words(match.group(2))
    return None, _words(value)


def _totals(value: Any) -> dict[str, Any] | None:
    """The agent's ``totals`` (settled, traded-not-settled and left-unsettled energy, its
    ``unsettled_flags``) if it is an object: each figure a whole number of Wh (0..MAX_FIGURE) or
    None, ``earnings`` an integer or None, the flags at most MAX_FLAGS short strings.
    ``older_agent`` when it has none of NEW_TOTAL_KEYS: an agent from before they came counts
    ``sold_wh``, ``bought_wh`` and ``earnings`` as traded (settled where settled), not settled."""
    if not isinstance(value, dict):
        return None
    out: dict[str, Any] = {key: _figure(value.get(key)) for key in TOTAL_FIGURES}
    earnings = value.get("earnings")
    out["earnings"] = earnings if type(earnings) is int and abs(earnings) <= MAX_FIGURE * 10**6 else None
    flags = value.get("unsettled_flags")
    out["unsettled_flags"] = (
        [isolate_inline(f[:MAX_FLAG_CHARS]) for f in flags[:MAX_FLAGS] if isinstance(f, str) and f]
        if isinstance(flags, list)
        else []
    )
    out["older_agent"] = not any(key in value for key in NEW_TOTAL_KEYS)
    return out


def _figure(value: Any) -> int | None:
    return value if type(value) is int and 0 <= value <= MAX_FIGURE else None


def totals_words(totals: Mapping[str, Any] | None) -> str | None:
    """The agent's totals in one line, as `peerwatt agent status` prints them: "settled: sold
    1.20 kWh, bought 32 Wh; traded, not settled yet: ...; left unsettled by the ledger (flags):
    ..." (the parts after the first only when they are not 0). An older agent's (``older_agent``)
    are its as-traded figures, "sold 0 Wh, bought 104 Wh, as an older agent counts them: ...",
    never called settled. A figure it did not send, or not as a whole number of Wh, is left out:
    no "–", and no part of figures that are all missing (a missing figure once counted as not 0);
    totals with no figure to show say so (NO_TOTALS_WORDS)."""
    if totals is None:
        return None

    def both(kind: str, keep_zero: bool = False) -> str:
        return ", ".join(
            f"{side} {energy(figure)}"
            for side in ("sold", "bought")
            if (figure := totals.get(f"{side}_{kind}wh")) is not None and (keep_zero or figure != 0)
        )

    counted = both("", keep_zero=True)
    if totals.get("older_agent"):
        return f"{counted}, {OLDER_AGENT_WORDS}" if counted else NO_TOTALS_WORDS
    parts = [f"settled: {counted}"] if counted else []
    if both("pending_"):
        parts.append(
            f"traded, not settled yet: {both('pending_')} (no money moves until the ledger settles it)"
        )
    if both("unsettled_"):
        flags = ", ".join(totals.get("unsettled_flags") or ())
        why = f" ({flags})" if flags else ""
        parts.append(f"left unsettled by the ledger{why}: {both('unsettled_')}, no money moved")
    return "; ".join(parts) if parts else NO_TOTALS_WORDS


def fresh_since(received: float, sent: Any) -> float:
    """Since when a status counts as fresh: the later of when it arrived and when the agent dated
    it (its ``time``), so a device clock a few minutes behind (the ledger allows MAX_SKEW_S) does
    not make a status that has just arrived stale. A date ahead of the arrival counts at most
    MAX_SKEW_S ahead (a status dated a year ahead would otherwise stay fresh for a year), and a
    ``time`` that is not a time (not a number, or past the year 9999: 10**400 once made the
    household page answer 500) is ignored."""
    if not _is_time(sent):
        return received
    return max(received, min(sent, received + MAX_SKEW_S))


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _is_time(value: Any) -> bool:
    """A Unix time the page can show: an integer (or a float) from 1970 to the year 9999."""
    return type(value) in (int, float) and 0 <= value <= LAST_TIME


def _receipt(value: Any) -> dict[str, Any] | None:
    """The agent's ``last_receipt`` (height and block time of the last receipt that verified, and
    its kind) if it is well formed, else None."""
    if not isinstance(value, dict):
        return None
    height, when, kind = value.get("height"), value.get("time"), value.get("kind")
    if type(height) is not int or height < 0 or not _is_time(when):
        return None
    return {"height": height, "time": int(when), "kind": kind if isinstance(kind, str) else None}


def _reading(value: Any) -> Any:
    """The agent's ``last_reading`` as sent, unless it names an interval that is not a time (then
    without it: the page shows the rest as text)."""
    if isinstance(value, dict) and "interval" in value and not _is_time(value["interval"]):
        return {k: v for k, v in value.items() if k != "interval"}
    return value


def not_configured(left: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The panel without a broker; for a meter the ledger revoked (``left``, as in ``health``)
    that its agent is no longer needed."""
    if left is not None and left.get("meter_revoked"):
        return {"configured": False, "state": "left", "warning": None, "what_to_do": None, "note": LEFT_NOTE}
    return {
        "configured": False,
        "state": "not_configured",
        "warning": None,
        "what_to_do": None,
        "note": (
            "This dashboard is not connected to the community's broker ([broker] in dashboard.toml), "
            "so it cannot show your agent's health; `peerwatt agent status` on the device shows it."
        ),
    }
