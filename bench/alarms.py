"""Alarm rules' cost on the hot path (bench/runner.py `--only alarms`): the ingest pipeline with the bridge's
AlarmEngine holding 1,000 threshold rules over the fleet against the same engine with none, in the same run.

`measure()` registers N devices and 1,000 threshold rules on them (above, below and outside on the
two metrics every message carries, with durations and clear thresholds; one in a hundred fires,
so raises, and then the throttled `last_seen` touches, are in the cost too). It runs the bridge's
own pipeline (devices/pipeline.py, the engine as a BatchListener as bridge/runtime.py wires it) over
an in-memory transport: all messages offered at once in reads of 100, timed until every one is stored
and acknowledged, on the real database. The two alternate for `rounds` rounds; the best of each is
compared, and the medians (on a busy machine rounds vary). MQTT is left out on purpose: the broker and
the socket cost the same per message with or without rules.
Returns {"devices", "rules", "messages", "none_per_s", "rules_per_s", "cost_pct", "median": {…}, "raised",
"evaluate_us_per_sample" (the engine's in-memory step alone, noise-free), "rounds": […]}.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

READ = 100  # messages per offer, as one socket read brings them under load
RULES = 1000


def _fleet(devices: int, run: str) -> list[str]:
    from devices.models import Device

    ids = [f"alarm-{run}-{i:05d}" for i in range(devices)]
    Device.objects.bulk_create([Device(id=d, secret_hash="-") for d in ids], batch_size=2000)
    return ids


def _rules(ids: list[str], run: str) -> list[Any]:
    """1,000 threshold rules spread over the devices; every hundredth one fires on the fleet's values."""
    from alarms.models import AlarmRule

    rules = []
    for i in range(RULES):
        metric = ("temperature", "humidity")[i % 2]
        kind = ("above", "below", "outside")[i % 3]
        fields: dict[str, Any] = {"above": {"high": 1000.0, "high_clear": 990.0},
                                  "below": {"low": -1000.0, "low_clear": -990.0},
                                  "outside": {"low": -1000.0, "high": 1000.0, "low_clear": -990.0,
                                              "high_clear": 990.0}}[kind]
        if i % 100 == 0:  # fires: the fleet's values are all above 0
            kind, fields = "above", {"high": 0.0}
        rules.append(AlarmRule(name=f"bench-{run}-{i}", kind=kind, metric=metric, severity="minor",
                               device_id=ids[i % len(ids)], duration=float(i % 4) * 5, **fields))
    for rule in rules:
        rule.clean()
    return AlarmRule.objects.bulk_create(rules)


def _messages(ids: list[str], count: int) -> list[tuple[str, bytes]]:
    """Round robin over the devices, each sample at its own time (from now, so no round repeats another's)."""
    t0 = datetime.now(UTC) - timedelta(hours=1)
    return [(f"devices/{ids[i % len(ids)]}/telemetry", orjson.dumps(
        {"ts": int((t0 + timedelta(milliseconds=i)).timestamp() * 1000), "temperature": round(20 + (i % 50) / 10, 1),
         "humidity": 40 + i % 20})) for i in range(count)]


async def _ingest(rules: list[Any], messages: list[tuple[str, bytes]]) -> tuple[float, int]:
    """Seconds for the bridge's pipeline, with an engine holding `rules`, to store and ack every message."""
    from channels.layers import InMemoryChannelLayer

    from alarms.engine import AlarmEngine, RuleSet
    from alarms.selectors import RuleLoad
    from core.dialect import IotgwDecoder
    from devices.pipeline import IngestPipeline, Intake
    from devices.pusher import Pusher
    from devices.stats import IngestStats
    from testing.transport import MemoryTransport

    intake, stats = Intake(), IngestStats()
    pusher = Pusher(layer=InMemoryChannelLayer(), stats=stats)
    transport = MemoryTransport(intake, decoder=IotgwDecoder(max_payload=64 * 1024))
    engine = AlarmEngine(pusher=pusher, stats=stats)
    await engine.start()  # the open alarms, as a bridge starts; then exactly these rules
    engine.rules = RuleSet(RuleLoad(0, rules))
    pipeline = IngestPipeline(intake=intake, stats=stats, pusher=pusher, max_batch=5000, listeners=[engine])
    task = asyncio.ensure_future(pipeline.run())
    t0 = time.perf_counter()
    for start in range(0, len(messages), READ):
        transport.send(*messages[start:start + READ])
    await transport.until_acked(len(messages), timeout=600)
    elapsed = time.perf_counter() - t0
    task.cancel()
    if stats.rejected:
        raise RuntimeError(f"messages rejected: {dict(stats.rejected)}")
    return elapsed, stats.counts["alarms_raised"]


def _evaluate_us(rules: list[Any], ids: list[str], count: int = 20000) -> float:
    """The engine's in-memory step alone, per sample (no database: the transitions it asks for are dropped)."""
    from alarms.engine import AlarmEngine, RuleSet
    from alarms.selectors import RuleLoad
    from core.payloads import Sample
    from devices.stats import IngestStats

    engine = AlarmEngine(pusher=None, stats=IngestStats())  # type: ignore[arg-type]
    engine.rules = RuleSet(RuleLoad(0, rules))
    t0 = datetime.now(UTC)
    samples = [(ids[i % len(ids)], Sample(ts=t0 + timedelta(milliseconds=i),
                                          data={"temperature": 20 + (i % 50) / 10, "humidity": 40 + i % 20}))
               for i in range(count)]
    start = time.perf_counter()
    actions: list[Any] = []
    for device_id, sample in samples:
        engine._evaluate(device_id, [sample], engine.rules.thresholds_for(device_id), actions, {})
    return round((time.perf_counter() - start) / count * 1e6, 2)


def measure(*, devices: int = 1000, messages: int = 20000, rounds: int = 5) -> dict[str, Any]:
    """No rules against 1,000, alternating; Django is set up by the caller (bench/runner.py)."""
    run = uuid.uuid4().hex[:6]
    ids = _fleet(devices, run)
    rules = _rules(ids, run)
    per_round, raised = [], 0
    for n in range(rounds):
        none_s, _ = asyncio.run(_ingest([], _messages(ids, messages)))
        rules_s, fired = asyncio.run(_ingest(rules, _messages(ids, messages)))
        raised += fired
        per_round.append({"none_per_s": round(messages / none_s), "rules_per_s": round(messages / rules_s)})
        print(f"   round {n + 1}: no rules {per_round[-1]['none_per_s']}/s, {RULES} rules "
              f"{per_round[-1]['rules_per_s']}/s", flush=True)
    best_none = max(r["none_per_s"] for r in per_round)
    best_rules = max(r["rules_per_s"] for r in per_round)
    median_none = sorted(r["none_per_s"] for r in per_round)[len(per_round) // 2]
    median_rules = sorted(r["rules_per_s"] for r in per_round)[len(per_round) // 2]
    return {"devices": devices, "rules": RULES, "messages": messages, "none_per_s": best_none,
            "rules_per_s": best_rules, "cost_pct": round(100 * (1 - best_rules / best_none), 1),
            "median": {"none_per_s": median_none, "rules_per_s": median_rules,
                       "cost_pct": round(100 * (1 - median_rules / median_none), 1)},
            "raised": raised, "evaluate_us_per_sample": _evaluate_us(rules, ids), "rounds": per_round}
