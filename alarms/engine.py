"""The alarm engine of one bridge: threshold rules on every committed batch in memory, a sweep for silence and
presence, command outcomes, and a poll that keeps its rules and its view of open alarms current.

Hot path: `committed` looks up the rules of each device in the batch (dicts built when the
rules load) and steps each matching sample through `rules.step`; only a transition, or a
throttled `last_seen` touch, reaches the database. It runs before the batch is acked, so a
bridge killed before an alarm is written gets the batch again and raises it then; the
partial unique index makes a raise that already happened a no-op (docs/alarms.md).

Every `poll` seconds: the rules' version (one row) and the alarm events since the last poll
(other bridges' and the web's transitions), so a rule change takes effect on every bridge
within a poll and an alarm cleared elsewhere can be raised here again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError
from django.utils import timezone

from alarms import rules as R
from alarms.live import alarm_frames
from alarms.models import Alarm, AlarmRule
from alarms.selectors import (
    RuleLoad,
    alarm_changes_since,
    alarms_open_keys,
    devices_presence,
    rule_version,
    rules_load,
)
from alarms.services import Change, alarm_clear_condition, alarm_raise, alarm_retrigger, alarms_touch
from core.retry import Backoff, retry
from devices.dbthread import in_db_thread
from devices.models import Command
from devices.pipeline import Committed
from devices.pusher import Pusher
from devices.stats import IngestStats

logger = logging.getLogger("iotgw.alarms")

Key = tuple[int, str]
# A threshold rule as the hot path reads it: (id, spec, the rule, its high or +inf, its low or -inf).
Entry = tuple[int, R.RuleSpec, AlarmRule, float, float]


@dataclass(slots=True)
class Action:
    """A transition the engine asks of the database."""

    what: str  # rules.RAISE, RETRIGGER or CLEAR
    rule: AlarmRule
    device_id: str
    at: datetime
    value: float | None = None
    message: str = ""


class RuleSet:
    """The enabled rules, indexed for the hot path: per device, the threshold rules per metric."""

    def __init__(self, load: RuleLoad) -> None:
        self.version = load.version
        self.specs: dict[int, R.RuleSpec] = {}
        self._fleet: dict[str, list[Entry]] = {}
        self._device: dict[str, dict[str, list[Entry]]] = {}
        self.swept: list[tuple[AlarmRule, set[str] | None]] = []  # (rule, its devices; None: every device)
        self._commands: list[tuple[AlarmRule, set[str] | None]] = []
        for rule in load.rules:
            try:
                spec = self.specs[rule.pk] = rule.spec()
            except Exception:  # saved before a stricter check: skipped, not fatal
                logger.warning("alarm rule %s is invalid; skipped", rule.pk)
                continue
            devices = self._targets(rule, load.members)
            if spec.kind in R.THRESHOLD_KINDS:
                entry = (rule.pk, spec, rule, math.inf if spec.high is None else spec.high,
                         -math.inf if spec.low is None else spec.low)
                if devices is None:
                    self._fleet.setdefault(spec.metric, []).append(entry)
                for device_id in devices or ():
                    self._device.setdefault(device_id, {}).setdefault(spec.metric, []).append(entry)
            elif spec.kind in R.SWEPT_KINDS:
                self.swept.append((rule, devices))
            else:
                self._commands.append((rule, devices))
        self.thresholds = bool(self._fleet or self._device)
        self._merged: dict[str, dict[str, list[Entry]]] = {}

    @staticmethod
    def _targets(rule: AlarmRule, members: dict[int, set[str]]) -> set[str] | None:
        if rule.device_id is not None:
            return {rule.device_id}
        if rule.group_id is not None:
            return members.get(rule.group_id, set())
        return None

    def thresholds_for(self, device_id: str) -> dict[str, list[Entry]]:
        """The threshold rules of a device, by metric (fleet-wide ones included)."""
        own = self._device.get(device_id)
        if own is None:
            return self._fleet
        merged = self._merged.get(device_id)
        if merged is None:
            merged = {m: list(rs) for m, rs in self._fleet.items()}
            for metric, rs in own.items():
                merged.setdefault(metric, []).extend(rs)
            self._merged[device_id] = merged
        return merged

    def commands_for(self, device_id: str, name: str) -> list[AlarmRule]:
        """The command_failed rules that watch this device and command."""
        return [r for r, devices in self._commands if (devices is None or device_id in devices)
                and (not r.command or r.command == name)]


def _number(value: Any) -> float | None:
    if type(value) is float or type(value) is int:
        return float(value)
    return None


def _apply(actions: list[Action]) -> list[tuple[Action, Change | None, str]]:
    """Each transition in its own transaction (one failing does not undo the others), with its `alarm` frame."""
    done: list[tuple[Action, Change | None, str]] = []
    for a in actions:
        if a.what == R.RAISE:
            change = alarm_raise(rule=a.rule, device_id=a.device_id, at=a.at, value=a.value, message=a.message)
        elif a.what == R.RETRIGGER:
            change = alarm_retrigger(rule_id=a.rule.pk, device_id=a.device_id, at=a.at, value=a.value)
        else:
            change = alarm_clear_condition(rule_id=a.rule.pk, device_id=a.device_id, at=a.at, value=a.value,
                                           note=a.message or "the condition ended")
        done.append((a, change, alarm_frames([change])[0][1] if change is not None else ""))
    return done


class AlarmEngine:
    """One process's alarm evaluation; a BatchListener of the pipeline and a command listener of the dispatcher."""

    def __init__(self, *, pusher: Pusher, stats: IngestStats, poll: float = 2.0, sweep: float = 5.0,
                 touch_every: float = 10.0) -> None:
        self._pusher = pusher
        self._stats = stats
        self._poll = poll
        self._sweep_every = sweep
        self._touch_every = timedelta(seconds=touch_every)
        self.rules = RuleSet(RuleLoad(-1, []))
        self.open: dict[Key, int | None] = {}
        self._tracks: dict[Key, R.Track] = {}
        self._touched: dict[int, datetime] = {}
        self._last_event = 0
        self._loaded = asyncio.Event()
        self._loading = asyncio.Lock()
        self._apply = in_db_thread(_apply)
        self._touch = in_db_thread(alarms_touch)

    async def start(self) -> None:
        """Load the rules and the open alarms (a restarted bridge knows what is open: no duplicate raise)."""
        load = await in_db_thread(rules_load)()
        self.open, self._last_event = await in_db_thread(alarms_open_keys)()
        self.rules = RuleSet(load)
        self._loaded.set()

    async def _ready(self) -> None:
        """Load once, whoever asks first: `run`, or a pipeline without it (a session drain runs no poll)."""
        async with self._loading:
            if not self._loaded.is_set():
                await self._retrying(self.start)

    async def run(self) -> None:
        """Poll for rule and alarm changes and sweep, until cancelled."""
        await self._ready()
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while True:
            try:
                await self.refresh()
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + self._sweep_every
                    await self.sweep()
            except DatabaseError as exc:
                self._stats.counts["db_errors"] += 1
                logger.warning("alarms: database unavailable (%s); retrying", str(exc).strip()[:200])
            except Exception:
                logger.exception("alarms: poll or sweep failed; retrying")
            await asyncio.sleep(self._poll)

    async def refresh(self) -> None:
        """Reload the rules if their version moved; follow other processes' transitions."""
        if await in_db_thread(rule_version)() != self.rules.version:
            self.rules = RuleSet(await in_db_thread(rules_load)())
            live = set(self.rules.specs)
            self._tracks = {k: t for k, t in self._tracks.items() if k[0] in live}
            logger.info("alarm rules reloaded: version %s, %d rules", self.rules.version, len(live))
        # In the heartbeat's counters: which rules each bridge applies (readiness checks and tests wait on it).
        self._stats.counts["alarm_rules_version"] = self.rules.version
        while True:
            last, changes = await in_db_thread(alarm_changes_since)(self._last_event)
            self._last_event = last
            for rule_id, device_id, alarm_id, state in changes:
                key = (rule_id, device_id)
                if state != Alarm.CLEARED:
                    self.open[key] = alarm_id
                elif self.open.get(key, alarm_id) in (alarm_id, None):
                    self.open.pop(key, None)
            if len(changes) < 10_000:
                return

    # --- the hot path -------------------------------------------------------------------------

    async def committed(self, batch: Committed) -> None:
        """Step every sample of the batch through its device's threshold rules; presence clears silence alarms."""
        if not self._loaded.is_set():
            await self._ready()  # the first batches wait for the rules: none goes unevaluated
        actions: list[Action] = []
        seen: dict[Key, datetime] = {}
        if self.rules.thresholds:
            for device_id, samples in batch.samples.items():
                by_metric = self.rules.thresholds_for(device_id)
                if by_metric:
                    self._evaluate(device_id, samples, by_metric, actions, seen)
        if self.rules.swept:
            self._presence(batch, actions)
        if actions:
            await self.execute(actions)
        if seen:
            await self._touch_seen(seen)

    def _evaluate(self, device_id: str, samples: list[Any], by_metric: dict[str, list[Entry]],
                  actions: list[Action], seen: dict[Key, datetime]) -> None:
        tracks, open_ = self._tracks, self.open
        for sample in samples:
            data = sample.data
            for metric, rules in by_metric.items():
                value = _number(data.get(metric))
                if value is None:
                    continue
                for pk, spec, rule, high, low in rules:
                    key = (pk, device_id)
                    track = tracks.get(key)
                    # The common case, in a comparison or two: nothing pending, nothing open, nothing to remember
                    # (measured: 2 µs per rule and sample through rules.step, 0.3 µs here; bench/alarms.py).
                    if track is None and low <= value <= high and key not in open_:
                        continue
                    is_open = key in open_
                    if track is None:
                        # An alarm open when this process started is this excursion's: seen, not retriggered.
                        track = tracks[key] = R.Track(fired=is_open)
                    what = R.step(spec, track, open_=is_open, ts=sample.ts, value=value)
                    if what is None:
                        if track.pending_since is None and not track.fired:
                            del tracks[key]  # nothing to remember: memory stays with the conditions that hold
                    elif what == R.SEEN:
                        if key not in seen or seen[key] < sample.ts:
                            seen[key] = sample.ts
                    else:
                        actions.append(Action(what, rule, device_id, sample.ts, value,
                                              _message(spec, metric, value)))
                        # What the database will make of it, so the rest of the batch steps on from there.
                        if what == R.CLEAR:
                            open_.pop(key, None)
                        else:
                            open_.setdefault(key, None)

    def _presence(self, batch: Committed, actions: list[Action]) -> None:
        """A device that spoke ends its silence; one that came online ends its offline alarm; going offline raises."""
        spoke = set(batch.samples) | {d for d, _, _ in batch.status_changes}
        online = {d: (o, ts) for d, o, ts in batch.status_changes}
        for rule, devices in self.rules.swept:
            spec = self.rules.specs[rule.pk]
            for device_id in spoke if devices is None else spoke & devices:
                key = (rule.pk, device_id)
                state = online.get(device_id)
                if spec.kind == R.INACTIVITY or (state is not None and state[0]):
                    if key in self.open:
                        actions.append(Action(R.CLEAR, rule, device_id, batch.received_at,
                                              message="the device spoke" if spec.kind == R.INACTIVITY
                                              else "the device is online"))
                        self.open.pop(key, None)
                elif state is not None and spec.duration == 0 and key not in self.open:
                    actions.append(Action(R.RAISE, rule, device_id, state[1], message="the device went offline"))
                    self.open.setdefault(key, None)

    async def _touch_seen(self, seen: dict[Key, datetime]) -> None:
        """Move `last_seen` of alarms whose condition is still observed, at most once per `touch_every` each."""
        due: dict[int, datetime] = {}
        for key, at in seen.items():
            alarm_id = self.open.get(key)
            last = self._touched.get(alarm_id) if alarm_id is not None else None
            if alarm_id is not None and (last is None or at - last >= self._touch_every):
                self._touched[alarm_id] = due[alarm_id] = at
        if len(self._touched) > 100_000:  # bounded: forgetting one only costs an early touch
            self._touched.clear()
        if due:
            await self._retrying(lambda: self._touch(seen=due))

    async def execute(self, actions: list[Action]) -> list[Change]:
        """Apply transitions (retrying while the database is away: the batch waits), then push their frames."""
        done = await self._retrying(lambda: self._apply(actions))
        changes: list[Change] = []
        push = self._pusher.batch()
        for action, change, frame in done:
            key = (action.rule.pk, action.device_id)
            if change is None:
                # Refused: a raise found one open (another bridge's); a retrigger or clear found none.
                if action.what == R.RAISE:
                    self.open.setdefault(key, None)
                else:
                    self.open.pop(key, None)
                continue
            changes.append(change)
            push.frame(change.alarm.device_id, frame)
            logger.info("alarm %s %s: %s on %s", change.alarm.pk, change.event.kind, change.alarm.rule_name,
                        change.alarm.device_id)
            self._stats.counts[f"alarms_{change.event.kind}"] += 1
            if change.alarm.state == Alarm.CLEARED:
                if self.open.get(key) in (change.alarm.pk, None):
                    self.open.pop(key, None)
            else:
                self.open[key] = change.alarm.pk
        if changes:
            await self._pusher.send_now(push)
        return changes

    async def _retrying(self, call: Callable[[], Any]) -> Any:
        def failed(exc: BaseException, delay: float) -> None:
            self._stats.counts["db_errors"] += 1
            logger.warning("alarms: database unavailable (%s); retrying in %.1fs", str(exc)[:200], delay)

        return await retry(call, on=(OperationalError, InterfaceError), backoff=Backoff(first=0.2, most=5.0),
                           failed=failed)

    # --- commands and the sweep ---------------------------------------------------------------

    async def commands_finished(self, commands: list[Command]) -> None:
        """A failed or timed-out command raises (or retriggers) its rules' alarms; a success clears them."""
        if not self._loaded.is_set():
            await self._ready()
        actions: list[Action] = []
        for command in commands:
            for rule in self.rules.commands_for(command.device_id, command.name):
                key = (rule.pk, command.device_id)
                at = command.finished_at or timezone.now()
                if command.status in (Command.FAILED, Command.TIMED_OUT):
                    what = R.RETRIGGER if key in self.open else R.RAISE
                    message = f"command {command.name} {command.status}: {command.error}"[:300]
                    actions.append(Action(what, rule, command.device_id, at, message=message))
                    self.open.setdefault(key, None)
                elif command.status == Command.SUCCEEDED and key in self.open:
                    actions.append(Action(R.CLEAR, rule, command.device_id, at,
                                          message=f"command {command.name} succeeded"))
                    self.open.pop(key, None)
        if actions:
            await self.execute(actions)

    async def sweep(self, now: datetime | None = None) -> list[Change]:
        """Raise inactivity and offline alarms whose condition holds, clear those whose condition ended.

        One read of the devices the swept rules watch (all of them if one watches every device):
        the work grows with devices, not samples.
        """
        if not self.rules.swept:
            return []
        now = now or timezone.now()
        wanted: set[str] | None = set()
        for _, devices in self.rules.swept:
            if devices is None:
                wanted = None
                break
            wanted |= devices  # type: ignore[operator]
        presence = await in_db_thread(devices_presence)(wanted)
        actions: list[Action] = []
        for rule, devices in self.rules.swept:
            spec = self.rules.specs[rule.pk]
            limit = now - timedelta(seconds=spec.duration)
            for device_id, last_seen, online in presence:
                if devices is not None and device_id not in devices:
                    continue
                silent = last_seen is not None and last_seen < limit
                if spec.kind == R.INACTIVITY:
                    holds, ended = silent, not silent
                else:
                    holds, ended = silent and not online, online
                key = (rule.pk, device_id)
                if holds and key not in self.open:
                    actions.append(Action(R.RAISE, rule, device_id, now, message=_silence(spec, last_seen, now)))
                elif ended and key in self.open:
                    actions.append(Action(R.CLEAR, rule, device_id, now,
                                          message="the device spoke" if spec.kind == R.INACTIVITY
                                          else "the device is online"))
        return await self.execute(actions) if actions else []


def _message(spec: R.RuleSpec, metric: str, value: float) -> str:
    if spec.high is not None and value > spec.high:
        return f"{metric} {value:g} above {spec.high:g}"
    if spec.low is not None and value < spec.low:
        return f"{metric} {value:g} below {spec.low:g}"
    return f"{metric} {value:g} back within the clear thresholds"


def _silence(spec: R.RuleSpec, last_seen: datetime | None, now: datetime) -> str:
    silent = (now - last_seen).total_seconds() if last_seen else 0
    what = "silent" if spec.kind == R.INACTIVITY else "offline"
    return f"{what} for {silent:.0f} s (limit {spec.duration:g} s)"
