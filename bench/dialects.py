"""Device profiles' cost (bench/runner.py `--only dialects`): the ingest pipeline with a mixed fleet against the plain
dialect, in the same run, on the real database.

`measure()` registers two fleets of N devices: one on SPEC §4's own dialect, one with a quarter on
each of four profiles (Tasmota, Shelly Gen2, ESPHome, Zigbee2MQTT children), each sending its
firmware's documented payload (two or three metrics, nested where the firmware nests; the plain
fleet's message carries a `ts` exactly where the firmware's carries a time). It then
runs the bridge's own pipeline (devices/pipeline.py with the bridge's ProfileRouter, read from the
database as a bridge reads it, and a command dispatcher resolving the id-less answers Zigbee2MQTT
and ESPHome states count as) over an in-memory transport: all messages offered at once in reads of
100, timed until every one is stored and acknowledged. The two fleets alternate for `rounds`
rounds; the best of each is compared (and the medians: on a busy machine rounds vary twofold).
MQTT is left out on purpose: the broker and the socket cost
the same per message whatever the dialect, and the question is what conversion costs the batch path.
Returns {"devices", "messages", "plain_per_s", "mixed_per_s", "cost_pct", "median": {…}, "decode_us": {…},
"rounds": […]}; decode_us is the router alone, per message, in this process.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

READ = 100  # messages per offer, as one socket read brings them under load


def _fleets(devices: int, run: str) -> tuple[list[str], dict[str, list[str]]]:
    from devices.models import Device
    from devices.services.profiles import profiles_install_builtin

    profiles_install_builtin()
    quarter = max(1, devices // 4)
    plain = [f"dial-{run}-p{i:05d}" for i in range(devices)]
    mixed = {
        "tasmota": [f"dial-{run}-t{i:05d}" for i in range(quarter)],
        "shelly-gen2": [f"dial-{run}-s{i:05d}" for i in range(quarter)],
        "esphome": [f"dial-{run}-e{i:05d}" for i in range(quarter)],
        "zigbee2mqtt": [f"c{i:05d}" for i in range(quarter)],  # children's names at the coordinator
    }
    rows = [Device(id=d, secret_hash="-") for d in plain]
    rows += [Device(id=d, secret_hash="-", profile_id=p) for p in ("tasmota", "shelly-gen2", "esphome")
             for d in mixed[p]]
    gateway = f"dial-{run}-z2m"
    rows.append(Device(id=gateway, secret_hash="-", profile_id="zigbee2mqtt"))
    Device.objects.bulk_create(rows, batch_size=2000)
    from core.ids import child_device_id

    Device.objects.bulk_create([Device(id=child_device_id(gateway, name), secret_hash="-", profile_id="zigbee2mqtt",
                                       gateway_id=gateway, child_name=name) for name in mixed["zigbee2mqtt"]],
                               batch_size=2000)
    mixed["zigbee2mqtt"] = [f"{gateway}/{name}" for name in mixed["zigbee2mqtt"]]
    return plain, mixed


def _messages(plain: list[str], mixed: dict[str, list[str]], count: int) -> tuple[list, list]:
    """The same number of messages, round robin over each fleet's devices, each sample at its own time."""
    t0 = datetime.now(UTC) - timedelta(hours=2)
    plain_msgs, mixed_msgs = [], []
    mixed_devices = [(p, d) for p, ds in mixed.items() for d in ds]
    for i in range(count):
        ts = t0 + timedelta(milliseconds=i)
        t, h = round(20 + (i % 50) / 10, 1), 40 + i % 20
        profile, mixed_device = mixed_devices[i % len(mixed_devices)]
        # Like for like: where the firmware sends no time (ESPHome, Zigbee2MQTT) the plain message has no `ts`
        # either, so both fleets take the same store path and the difference is the conversion.
        sample: dict[str, Any] = {"temperature": t, "humidity": h}
        if profile in ("tasmota", "shelly-gen2"):
            sample["ts"] = int(ts.timestamp() * 1000)
        plain_msgs.append((f"devices/{plain[i % len(plain)]}/telemetry", orjson.dumps(sample)))
        device = mixed_device
        if profile == "tasmota":
            mixed_msgs.append((f"tele/{device}/SENSOR", orjson.dumps(
                {"Time": ts.replace(tzinfo=None).isoformat(), "AM2301": {"Temperature": t, "Humidity": h},
                 "TempUnit": "C"})))
        elif profile == "shelly-gen2":
            mixed_msgs.append((f"{device}/events/rpc", orjson.dumps(
                {"src": device, "dst": f"{device}/events", "method": "NotifyStatus",
                 "params": {"ts": ts.timestamp(), "switch:0": {"id": 0, "apower": t, "voltage": 230.1}}})))
        elif profile == "esphome":
            mixed_msgs.append((f"{device}/sensor/temperature/state", str(t).encode()))
        else:
            mixed_msgs.append((device, orjson.dumps({"temperature": t, "humidity": h, "linkquality": 96})))
    return plain_msgs, mixed_msgs


async def _ingest(router: Any, messages: list[tuple[str, bytes]]) -> float:
    """Seconds for the bridge's pipeline to store and acknowledge every message."""
    from channels.layers import InMemoryChannelLayer

    from devices.dispatch import CommandDispatcher
    from devices.pipeline import IngestPipeline, Intake
    from devices.pusher import Pusher
    from devices.stats import IngestStats
    from testing.transport import MemoryTransport

    intake, stats = Intake(), IngestStats()
    pusher = Pusher(layer=InMemoryChannelLayer(), stats=stats)
    transport = MemoryTransport(intake, decoder=router)
    dispatcher = CommandDispatcher(outlet=transport, owner="bench-dialects", stats=stats, pusher=pusher)
    pipeline = IngestPipeline(intake=intake, stats=stats, pusher=pusher, max_batch=5000, responses=dispatcher)
    task = asyncio.ensure_future(pipeline.run())
    t0 = time.perf_counter()
    for start in range(0, len(messages), READ):
        transport.send(*messages[start:start + READ])
    await transport.until_acked(len(messages), timeout=600)
    elapsed = time.perf_counter() - t0
    task.cancel()
    rejected = sum(stats.rejected.values())
    if rejected:
        raise RuntimeError(f"{rejected} messages rejected: {dict(stats.rejected)}")
    return elapsed


def _decode_us(router: Any, messages: list[tuple[str, bytes]]) -> float:
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    for topic, payload in messages:
        router(topic, payload, received_at=now)
    return round((time.perf_counter() - t0) / len(messages) * 1e6, 2)


def measure(*, devices: int = 400, messages: int = 20000, rounds: int = 5) -> dict[str, Any]:
    """Plain against mixed, alternating; Django is set up by the caller (bench/runner.py)."""
    import uuid

    from core.profiles import Limits
    from core.router import ProfileRouter
    from devices.selectors import profiles_snapshot

    run = uuid.uuid4().hex[:6]
    plain, mixed = _fleets(devices, run)
    router = ProfileRouter(limits=Limits())
    router.update(*profiles_snapshot())
    per_round = []
    for n in range(rounds):
        # Sample times from now on each round: nothing is a duplicate of an earlier round's.
        plain_msgs, mixed_msgs = _messages(plain, mixed, messages)
        plain_s = asyncio.run(_ingest(router, plain_msgs))
        mixed_s = asyncio.run(_ingest(router, mixed_msgs))
        per_round.append({"plain_per_s": round(messages / plain_s), "mixed_per_s": round(messages / mixed_s)})
        print(f"   round {n + 1}: plain {per_round[-1]['plain_per_s']}/s, mixed {per_round[-1]['mixed_per_s']}/s",
              flush=True)
    best_plain = max(r["plain_per_s"] for r in per_round)
    best_mixed = max(r["mixed_per_s"] for r in per_round)
    plain_msgs, mixed_msgs = _messages(plain, mixed, min(messages, 5000))
    median_plain = sorted(r["plain_per_s"] for r in per_round)[len(per_round) // 2]
    median_mixed = sorted(r["mixed_per_s"] for r in per_round)[len(per_round) // 2]
    return {"devices": devices, "messages": messages, "plain_per_s": best_plain, "mixed_per_s": best_mixed,
            "cost_pct": round(100 * (1 - best_mixed / best_plain), 1),
            "median": {"plain_per_s": median_plain, "mixed_per_s": median_mixed,
                       "cost_pct": round(100 * (1 - median_mixed / median_plain), 1)},
            "decode_us": {"plain": _decode_us(router, plain_msgs), "mixed": _decode_us(router, mixed_msgs)},
            "rounds": per_round}
