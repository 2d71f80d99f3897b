"""Simulated devices: paho publishers in separate processes, each pacing QoS 1 samples at a set rate."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import uuid
from dataclasses import dataclass

import orjson

from bench.stats import latency_summary

TICK = 0.005  # pacing granularity: publish what is due every 5 ms


@dataclass(frozen=True)
class LoadPlan:
    """One phase of offered load: who publishes what, how fast, for how long."""

    host: str
    port: int
    devices: tuple[str, ...]
    rate: float  # messages per second, all workers together
    duration: float
    workers: int
    qos: int = 1


def sample(ts_ms: int, seq: int) -> bytes:
    """A ~100-byte sample; `t` is the publish time in epoch ms (float) for end-to-end latency."""
    t = time.time() * 1000.0
    return orjson.dumps({"ts": ts_ms, "t": round(t, 3), "seq": seq, "temp": 21.5 + seq % 7, "hum": 48.25,
                         "volt": 3.301, "ok": True})


def _worker(plan: LoadPlan, index: int, start_at: float, out: mp.Queue) -> None:
    import paho.mqtt.client as mqtt

    devices = plan.devices[index::plan.workers]
    rate = plan.rate / plan.workers
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{index}-{uuid.uuid4().hex[:6]}",
                         protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    acked = 0
    lock = threading.Lock()
    # Publish time by message id. No lock around publish(): paho calls on_publish under its own
    # lock, and a PUBACK may come back before publish() returns (then it waits in `early`).
    started: dict[int, float] = {}
    early: dict[int, float] = {}
    puback_ms: list[float] = []

    def on_publish(_c, _u, mid, _rc, _p) -> None:
        nonlocal acked
        now = time.monotonic()
        with lock:
            acked += 1
        t = started.pop(mid, None)
        if t is None:
            early[mid] = now
        else:
            puback_ms.append((now - t) * 1000)

    client.on_publish = on_publish
    client.connect(plan.host, plan.port, keepalive=60)
    client.loop_start()
    last_ts = dict.fromkeys(devices, 0)
    topics = {d: f"devices/{d}/telemetry" for d in devices}
    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.monotonic()
    sent = 0
    i = 0
    n = len(devices)
    first_ms = int(time.time() * 1000)
    while True:
        elapsed = time.monotonic() - t0
        if elapsed >= plan.duration:
            break
        due = int(rate * elapsed) - sent
        for _ in range(due):
            device = devices[i % n]
            i += 1
            now_ms = int(time.time() * 1000)
            ts = max(now_ms, last_ts[device] + 1)  # unique per device: stored once per (device, ts)
            last_ts[device] = ts
            t_pub = time.monotonic()
            mid = client.publish(topics[device], sample(ts, sent), qos=plan.qos).mid
            started[mid] = t_pub
            back = early.pop(mid, None)
            if back is not None and started.pop(mid, None) is not None:
                puback_ms.append((back - t_pub) * 1000)
            sent += 1
        time.sleep(TICK)
    last_ms = max(last_ts.values()) if sent else first_ms
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            if acked >= sent:
                break
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()
    out.put({"worker": index, "sent": sent, "acked": acked, "first_ms": first_ms, "last_ms": last_ms,
             "offered_elapsed": time.monotonic() - t0, "puback_ms": puback_ms})


def run_load(plan: LoadPlan, *, lead: float = 1.0, on_started=None) -> dict:
    """Run the publishers (one process each) and return what they sent and what the broker acked."""
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    start_at = time.time() + lead
    procs = [ctx.Process(target=_worker, args=(plan, i, start_at, out), daemon=True) for i in range(plan.workers)]
    for p in procs:
        p.start()
    if on_started is not None:
        on_started([p.pid for p in procs])
    results = [out.get(timeout=plan.duration + lead + 60) for _ in procs]
    for p in procs:
        p.join(10)
    return {
        "sent": sum(r["sent"] for r in results),
        "acked": sum(r["acked"] for r in results),
        "first_ms": min(r["first_ms"] for r in results),
        "last_ms": max(r["last_ms"] for r in results),
        "start_ms": start_at * 1000,
        "puback_ms": latency_summary([x for r in results for x in r["puback_ms"]]),
        "pids": [p.pid for p in procs],
    }
