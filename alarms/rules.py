"""Alarm rules as data, pure (no ORM): their kinds, their validation, and the threshold state machine.

A threshold rule raises when its metric is past the raise threshold for `duration` seconds of
sample time, and clears only once the value is back past the clear threshold (hysteresis): in
between, in the hold band, nothing changes. Everything here is a function of its arguments, so
Hypothesis checks it alone (tests/alarms/test_rule_properties.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.errors import PayloadInvalid
from core.ids import METRIC_RE

SEVERITIES = ("critical", "major", "minor", "warning", "info")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
ABOVE, BELOW, OUTSIDE = "above", "below", "outside"
INACTIVITY, OFFLINE, COMMAND_FAILED = "inactivity", "offline", "command_failed"
THRESHOLD_KINDS = (ABOVE, BELOW, OUTSIDE)
SWEPT_KINDS = (INACTIVITY, OFFLINE)
KINDS = (*THRESHOLD_KINDS, INACTIVITY, OFFLINE, COMMAND_FAILED)
# Ten years: longer than any sensible "for" or silence, short enough for every datetime sum.
MAX_DURATION = 10 * 365 * 86400.0
MAX_NAME = 200
MAX_COMMAND = 64
# Past this magnitude float thresholds stop meaning anything a sensor reports.
MAX_THRESHOLD = 1e15


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """What a rule checks; `low`/`high` raise, `low_clear`/`high_clear` clear (default: the raise threshold)."""

    kind: str
    severity: str = "major"
    metric: str = ""
    low: float | None = None
    high: float | None = None
    low_clear: float | None = None
    high_clear: float | None = None
    duration: float = 0.0
    command: str = ""

    def raises(self, value: float) -> bool:
        """The raise condition: the value is past a raise threshold."""
        return (self.high is not None and value > self.high) or (self.low is not None and value < self.low)

    def clears(self, value: float) -> bool:
        """The clear condition: the value is back inside the clear thresholds (hysteresis)."""
        if self.high is not None and value > (self.high if self.high_clear is None else self.high_clear):
            return False
        return not (self.low is not None and value < (self.low if self.low_clear is None else self.low_clear))


def _number(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or abs(value) > MAX_THRESHOLD:
        raise PayloadInvalid("bad_rule", f"{name} must be a finite number of magnitude at most {MAX_THRESHOLD:g}")
    return float(value)


def rule_spec(*, kind: Any, severity: Any = "major", metric: Any = "", low: Any = None, high: Any = None,
              low_clear: Any = None, high_clear: Any = None, duration: Any = 0.0, command: Any = "") -> RuleSpec:
    """Check a rule's fields and fill in what follows from its kind; raises PayloadInvalid naming the bad one."""
    if kind not in KINDS:
        raise PayloadInvalid("bad_rule", f"kind must be one of {', '.join(KINDS)}")
    if severity not in SEVERITIES:
        raise PayloadInvalid("bad_rule", f"severity must be one of {', '.join(SEVERITIES)}")
    duration = _number("duration", 0.0 if duration is None else duration)
    assert duration is not None
    if not 0 <= duration <= MAX_DURATION:
        raise PayloadInvalid("bad_rule", f"duration must be 0 to {MAX_DURATION:g} seconds")
    values = {n: _number(n, v) for n, v in
              (("low", low), ("high", high), ("low_clear", low_clear), ("high_clear", high_clear))}
    if kind in THRESHOLD_KINDS:
        if not isinstance(metric, str) or not METRIC_RE.fullmatch(metric):
            raise PayloadInvalid("bad_rule", "metric must be a metric name")
        _check_thresholds(kind, **values)
    elif any(v is not None for v in values.values()) or metric:
        raise PayloadInvalid("bad_rule", f"a {kind} rule takes no metric and no thresholds")
    if kind == INACTIVITY and duration <= 0:
        raise PayloadInvalid("bad_rule", "an inactivity rule needs a duration: the silence, in seconds")
    if kind == COMMAND_FAILED:
        if not isinstance(command, str) or len(command) > MAX_COMMAND or (command and not METRIC_RE.fullmatch(command)):
            raise PayloadInvalid("bad_rule", "command must be empty (any command) or a command name")
    elif command:
        raise PayloadInvalid("bad_rule", f"a {kind} rule takes no command")
    if kind == ABOVE:
        values["low"] = values["low_clear"] = None
    if kind == BELOW:
        values["high"] = values["high_clear"] = None
    return RuleSpec(kind=kind, severity=severity, metric=metric or "", duration=duration, command=command or "",
                    **values)


def _check_thresholds(kind: str, *, low: float | None, high: float | None, low_clear: float | None,
                      high_clear: float | None) -> None:
    if kind in (ABOVE, OUTSIDE) and high is None:
        raise PayloadInvalid("bad_rule", f"an {kind} rule needs high")
    if kind in (BELOW, OUTSIDE) and low is None:
        raise PayloadInvalid("bad_rule", f"a {kind} rule needs low")
    if kind == ABOVE and (low is not None or low_clear is not None):
        raise PayloadInvalid("bad_rule", "an above rule takes high and high_clear only")
    if kind == BELOW and (high is not None or high_clear is not None):
        raise PayloadInvalid("bad_rule", "a below rule takes low and low_clear only")
    if high is not None and high_clear is not None and high_clear > high:
        raise PayloadInvalid("bad_rule", "high_clear must be at most high (it clears below the raise threshold)")
    if low is not None and low_clear is not None and low_clear < low:
        raise PayloadInvalid("bad_rule", "low_clear must be at least low (it clears above the raise threshold)")
    if low is not None and high is not None:
        top = high if high_clear is None else high_clear
        bottom = low if low_clear is None else low_clear
        if not bottom <= top:
            raise PayloadInvalid("bad_rule", "the clear band must not be empty: low_clear ≤ high_clear, low < high")


# --- the threshold state machine ------------------------------------------------------------

RAISE, RETRIGGER, CLEAR, SEEN = "raise", "retrigger", "clear", "seen"


@dataclass(slots=True)
class Track:
    """One (rule, device)'s memory between samples: since when the raise condition holds, and whether it fired."""

    pending_since: datetime | None = None
    # The condition is past its raise threshold and has already raised (or retriggered) for this excursion.
    fired: bool = False


def step(spec: RuleSpec, track: Track, *, open_: bool, ts: datetime, value: float) -> str | None:
    """One sample through a threshold rule; what the alarm should do: raise, retrigger, clear, seen, or None.

    `open_` says whether the rule's alarm for this device is open. A raise (or a retrigger of an
    open alarm) needs the raise condition to hold on every sample for `duration` seconds of
    sample time; the clear condition clears at once; the hold band between them only forgets a
    pending raise.
    """
    if spec.raises(value):
        if track.fired:
            return SEEN if open_ else _fire(spec, track, ts, open_=False)
        return _fire(spec, track, ts, open_=open_)
    track.pending_since, track.fired = None, False
    if open_ and spec.clears(value):
        return CLEAR
    return None


def _fire(spec: RuleSpec, track: Track, ts: datetime, *, open_: bool) -> str | None:
    if track.pending_since is None or ts < track.pending_since:
        track.pending_since = ts
    if (ts - track.pending_since).total_seconds() < spec.duration:
        return None
    track.fired = True
    return RETRIGGER if open_ else RAISE
