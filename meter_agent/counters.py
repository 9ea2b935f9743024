"""Interval energy from a meter's cumulative import/export counters (pure, no I/O).

Energy is never integrated from power: it is the difference of two good counter readings.
Following docs/meters.md, ``EnergyCounters.update()``:

* counts only forward deltas (``energy_wh`` >= 0) from the last good reading;
* treats None, NaN/infinite, negative values, raw "not available" sentinels and a drop to 0
  as *unavailable* - no energy, no change of state (a glitch to 0 would otherwise book a huge
  spike on the next good reading); a 0 that holds for ``zero_confirm_s`` (default: an interval)
  is a reset after all (``counter_reset`` then ``counter_rebased``): a replaced meter starts at
  0, and its export counter may stay there all night;
* treats a decrease, or a jump larger than ``max_power_w`` could deliver in the elapsed time,
  as *suspect*: it reports an event (``counter_reset`` when the value fell below half of the
  last good one, ``counter_backwards`` for a smaller drop, ``counter_jump`` for an implausible
  rise), books no energy, and keeps the old baseline. Only when ``confirm_readings``
  consecutive readings agree with the new level (each >= the previous, at plausible rates) over
  at least ``confirm_s`` (60 s) does it adopt it (``counter_rebased``); energy resumes from
  there. (Two readings 5 s apart confirmed a 10 s glitch at an interval's end, which was then
  signed as the reading: a QA pass; the agent takes a reading at most 15 s after the end, so a
  glitch never confirmed within that is never signed.) A one-off glitch that returns
  to the old level is thereby ignored, and a real reset is never smoothed over: the readings in
  between stay unavailable and the events say why.
* follows a clock set back (NTP correcting a clock that ran ahead): a reading older than the
  track's latest one re-anchors the track's times on the new clock as if no time had passed since
  that latest reading (the time that really passed is unknown; assuming none is the strict side:
  a bound is never wider and a confirmation never sooner than on the old clock). A counter that
  did not move is thereby never ``counter_backwards``, one that moved plausibly is energy as
  usual, and a drop or a jump is still suspect. (A QA pass: after a clock 120 s ahead was set
  back, an unchanged counter was flagged ``counter_backwards: export_wh 407142 -> 407142``, the
  other ``counter_jump``, and the reading withheld: the bound was built from the future times.)
* reports a changed meter serial as ``serial_changed`` and restarts both counters from the new
  meter's readings (no energy is booked across the swap).

The agent persists ``to_dict()`` (at once on any event, otherwise with its heartbeat or every few
minutes; see meter_agent/agent.py) and restores with ``from_dict()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

COUNTERS = ("import_wh", "export_wh")
DEFAULT_SENTINELS = frozenset({0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFFFFFFFFFF, 0x7FFFFFFFFFFFFFFF})
STATE_VERSION = 1


@dataclass(frozen=True)
class CounterEvent:
    """Something the settlement must know about: the counter did not behave like a counter."""

    kind: str  # counter_reset | counter_backwards | counter_jump | counter_rebased | serial_changed
    counter: str | None  # "import_wh" / "export_wh"; None for serial_changed
    time: int
    previous: int | str | None
    current: int | str | None

    def describe(self) -> str:
        """One line for logs and status messages."""
        what = self.counter or "meter serial"
        return f"{self.kind}: {what} {self.previous} -> {self.current} at {self.time}"


@dataclass(frozen=True)
class CounterDelta:
    """Energy counted by one counter since its last good reading.

    ``status``: ``ok`` (energy_wh counted since ``since``), ``first`` (baseline taken),
    ``unavailable`` (value unusable), ``suspect`` (waiting for confirmation of a new level),
    ``rebased`` (new level adopted) or ``meter_changed`` (serial changed, baseline taken).
    ``energy_wh`` is None unless status is ``ok``.
    """

    energy_wh: int | None
    since: int | None
    status: str


@dataclass(frozen=True)
class CounterUpdate:
    """The result of one ``update()``: one delta per counter and any events."""

    time: int
    import_wh: CounterDelta
    export_wh: CounterDelta
    events: tuple[CounterEvent, ...]


@dataclass
class _Track:
    value: int | None = None
    time: int | None = None
    candidate: int | None = None
    candidate_time: int | None = None
    confirmations: int = 0
    # min over the readings accepted since the track began (or the agent started) of
    # value_wh * 3600 - max_power_w * time_s: the tightest bound any earlier reading puts on a new
    # one (see EnergyCounters._plausible); not persisted, a restart starts from the last reading
    ceiling: int | None = None
    # the time of the first reading at the candidate's level (not persisted: after a restart the
    # saved candidate_time stands in for it)
    candidate_since: int | None = None
    # the time of the first of the consecutive readings of 0 since the last good one (not
    # persisted: a restart waits zero_confirm_s again)
    zero_since: int | None = None
    # the time of the latest usable reading of this track (not persisted: after a restart the
    # saved time and candidate_time stand in for it); a reading before it means the clock went back
    last_time: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        return {
            "value": self.value,
            "time": self.time,
            "candidate": self.candidate,
            "candidate_time": self.candidate_time,
            "confirmations": self.confirmations,
        }


class EnergyCounters:
    """Keeps the last good import/export readings and turns new readings into deltas."""

    def __init__(
        self,
        max_power_w: int = 50_000,
        confirm_readings: int = 2,
        resolution_wh: int = 100,
        sentinels: frozenset[int] = DEFAULT_SENTINELS,
        zero_confirm_s: int = 900,
        confirm_s: int = 60,
    ) -> None:
        """``max_power_w`` bounds a plausible rise (a household connection: ~43 kW at 3x63 A);
        ``resolution_wh`` is slack for coarse counters (the EM340 counts in 100 Wh steps);
        ``confirm_readings`` consecutive agreeing readings adopt a new counter level;
        readings of exactly 0 for ``zero_confirm_s`` seconds adopt 0 (a reset, not a glitch);
        a new level is adopted only after ``confirm_s`` seconds of readings at it."""
        if min(zero_confirm_s, confirm_s, resolution_wh) < 0 or max_power_w <= 0 or confirm_readings < 1:
            raise ValueError(
                "max_power_w > 0, confirm_readings >= 1, resolution_wh >= 0 and zero_confirm_s >= 0 required"
            )
        self.zero_confirm_s = zero_confirm_s
        self.confirm_s = confirm_s
        self.max_power_w = max_power_w
        self.confirm_readings = confirm_readings
        self.resolution_wh = resolution_wh
        self.sentinels = sentinels
        self.serial: str | None = None
        self._tracks = {name: _Track() for name in COUNTERS}

    # ---------------------------------------------------------------- state

    def baseline(self, counter: str) -> tuple[int, int] | None:
        """The last good (value_wh, time) of ``import_wh`` or ``export_wh``, if any."""
        track = self._tracks[counter]
        if track.value is None or track.time is None:
            return None
        return track.value, track.time

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready state for the agent to persist."""
        return {
            "version": STATE_VERSION,
            "serial": self.serial,
            **{name: self._tracks[name].to_dict() for name in COUNTERS},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], **options: Any) -> EnergyCounters:
        """Restore a state written by ``to_dict()``; raises ValueError naming a bad field."""
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError(f"counter state: expected a dict with version {STATE_VERSION}")
        counters = cls(**options)
        serial = data.get("serial")
        if serial is not None and not isinstance(serial, str):
            raise ValueError("counter state: serial must be a string or null")
        counters.serial = serial
        for name in COUNTERS:
            raw = data.get(name)
            if not isinstance(raw, dict):
                raise ValueError(f"counter state: {name} must be a dict")
            fields = {}
            for key in ("value", "time", "candidate", "candidate_time", "confirmations"):
                value = raw.get(key)
                ok_none = key != "confirmations"
                if (value is None and not ok_none) or (
                    value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0)
                ):
                    raise ValueError(f"counter state: {name}.{key} must be a non-negative integer")
                fields[key] = value
            if (fields["value"] is None) != (fields["time"] is None):
                raise ValueError(f"counter state: {name}.value and .time go together")
            counters._tracks[name] = _Track(**fields)
        return counters

    # ---------------------------------------------------------------- update

    def update(
        self,
        time: int,
        import_wh: int | float | Decimal | None,
        export_wh: int | float | Decimal | None,
        serial: str | None = None,
    ) -> CounterUpdate:
        """Feed one reading (time in Unix seconds); returns the deltas and events."""
        events: list[CounterEvent] = []
        values = {"import_wh": self._usable(import_wh), "export_wh": self._usable(export_wh)}
        if serial is not None and self.serial is not None and serial != self.serial:
            events.append(CounterEvent("serial_changed", None, time, self.serial, serial))
            self.serial = serial
            deltas = {}
            for name in COUNTERS:
                self._tracks[name] = _Track()
                if values[name] is not None:
                    self._tracks[name] = _Track(value=values[name], time=time)
                deltas[name] = CounterDelta(None, None, "meter_changed")
            return CounterUpdate(time, deltas["import_wh"], deltas["export_wh"], tuple(events))
        if serial is not None:
            self.serial = serial
        deltas = {name: self._step(name, time, values[name], events) for name in COUNTERS}
        return CounterUpdate(time, deltas["import_wh"], deltas["export_wh"], tuple(events))

    def _usable(self, value: int | float | Decimal | None) -> int | None:
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, float):
            if not math.isfinite(value):
                return None
            value = Decimal(value)
        if isinstance(value, Decimal):
            if not value.is_finite():
                return None
            value = int(value.to_integral_value(rounding=ROUND_HALF_EVEN))
        if not isinstance(value, int) or value < 0 or value in self.sentinels:
            return None
        return value

    def _plausible(
        self, start: int, start_time: int, value: int, time: int, ceiling: int | None = None
    ) -> bool:
        """Whether ``value`` at ``time`` can follow ``start`` at ``start_time`` (and every earlier
        reading folded into ``ceiling``) at no more than ``max_power_w``. A counter shown in steps
        of ``resolution_wh`` may read up to one step more than the energy since any earlier
        reading, but not one step more per poll: the slack is checked against the earliest
        reading that bounds it, so a counter rising a step every poll (72 kW at 100 Wh per 5 s)
        is a jump, not energy."""
        if value < start:
            return False
        elapsed = max(time - start_time, 0)
        if (value - start) * 3600 > self.max_power_w * elapsed + self.resolution_wh * 3600:
            return False
        slack = self.resolution_wh * 3600
        return ceiling is None or value * 3600 - self.max_power_w * time <= ceiling + slack

    def _ceiling(self, track: _Track, value: int, time: int) -> int:
        """The track's ceiling with its last reading (``value`` at ``time``) folded in."""
        here = value * 3600 - self.max_power_w * time
        return here if track.ceiling is None else min(track.ceiling, here)

    def _follow_clock(self, track: _Track, time: int) -> None:
        """Re-anchor ``track`` on the clock of a reading at ``time``: when it is older than the
        track's latest reading, the clock was set back, and every time the track holds moves back
        by the same step (as if no time had passed since the latest reading), the ceiling with
        them; the readings keep their spacing, so no bound widens and no confirmation comes
        sooner."""
        times = [t for t in (track.last_time, track.time, track.candidate_time) if t is not None]
        latest = max(times, default=time)
        track.last_time = time
        if time >= latest:
            return
        step = latest - time
        if track.time is not None:
            track.time = max(track.time - step, 0)
        if track.candidate_time is not None:
            track.candidate_time = max(track.candidate_time - step, 0)
        if track.candidate_since is not None:
            track.candidate_since = max(track.candidate_since - step, 0)
        if track.zero_since is not None:
            track.zero_since = max(track.zero_since - step, 0)
        if track.ceiling is not None:
            track.ceiling += self.max_power_w * step

    def _step(self, name: str, time: int, value: int | None, events: list[CounterEvent]) -> CounterDelta:
        track = self._tracks[name]
        if value is None:
            return CounterDelta(None, track.time, "unavailable")
        if track.value is None or track.time is None:
            self._tracks[name] = _Track(value=value, time=time)
            return CounterDelta(None, None, "first")
        self._follow_clock(track, time)
        if value == 0 and track.value > 0:
            if track.zero_since is None:
                track.zero_since = time
            if time - track.zero_since < self.zero_confirm_s:
                return CounterDelta(None, track.time, "unavailable")
            events.append(CounterEvent("counter_reset", name, time, track.value, 0))
            events.append(CounterEvent("counter_rebased", name, time, track.value, 0))
            self._tracks[name] = _Track(value=0, time=time)
            return CounterDelta(None, None, "rebased")
        track.zero_since = None
        ceiling = self._ceiling(track, track.value, track.time)
        if self._plausible(track.value, track.time, value, time, ceiling):
            since = track.time
            energy = value - track.value
            here = value * 3600 - self.max_power_w * time
            self._tracks[name] = _Track(value=value, time=time, ceiling=min(ceiling, here))
            return CounterDelta(energy, since, "ok")
        # A decrease or an implausible jump: suspect until confirmed.
        if (
            track.candidate is not None
            and track.candidate_time is not None
            and self._plausible(track.candidate, track.candidate_time, value, time)
        ):
            since = track.candidate_since if track.candidate_since is not None else track.candidate_time
            track.confirmations += 1
            track.candidate, track.candidate_time, track.candidate_since = value, time, since
            if track.confirmations >= self.confirm_readings and time - since >= self.confirm_s:
                events.append(CounterEvent("counter_rebased", name, time, track.value, value))
                self._tracks[name] = _Track(value=value, time=time)
                return CounterDelta(None, None, "rebased")
            return CounterDelta(None, track.time, "suspect")
        if track.candidate is None:
            if value > track.value:
                kind = "counter_jump"
            elif value * 2 < track.value:
                kind = "counter_reset"
            else:
                kind = "counter_backwards"
            events.append(CounterEvent(kind, name, time, track.value, value))
        track.candidate, track.candidate_time, track.confirmations = value, time, 1
        track.candidate_since = time
        if self.confirm_readings <= 1 and self.confirm_s == 0:
            events.append(CounterEvent("counter_rebased", name, time, track.value, value))
            self._tracks[name] = _Track(value=value, time=time)
            return CounterDelta(None, None, "rebased")
        return CounterDelta(None, track.time, "suspect")
