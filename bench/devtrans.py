"""Benchmark phases for WebSocket and HTTP devices: samples/s and p99 latency to the dashboards, beside MQTT.

    make bench BENCH_ARGS="--quick --only gateway,devtrans"

One web process (Daphne) on the run's database and Redis; two dashboards watch every device.
WebSocket devices (the `websockets` client, one socket each) send one sample per telemetry
frame and time each `ack`; HTTP devices (`requests`, keep-alive, a thread per device) POST one
sample per request and time each 200. Both are stored by the web process's own pipeline, so
the phase reports the transactions it made (`iotgw_web_transactions_total`): samples per
transaction shows the batching. Per phase: sent, acked (stored, by the gateway's promise),
stored rows, send → ack and send → dashboard frame p50/p99.
"""

from __future__ import annotations

import asyncio
import base64
import multiprocessing as mp
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from bench.load import sample
from bench.stats import latency_summary

SECRET = "bench-devtrans-secret"
KINDS = {"http": "h", "ws": "w"}


async def _ws_send(url: str, devices: list[str], first: int, rate: float, duration: float, start_at: float,
                   ts_base: int) -> dict[str, Any]:
    import websockets

    out: dict[str, Any] = {"sent": 0, "acked": 0, "refused": 0, "ack_ms": []}
    sockets = []
    for device_id in devices:
        auth = "Basic " + base64.b64encode(f"{device_id}:{SECRET}".encode()).decode()
        sockets.append(await websockets.connect(url, additional_headers={"Authorization": auth}))
    waiting: list[dict[int, float]] = [{} for _ in sockets]

    async def read(i: int) -> None:
        async for text in sockets[i]:
            frame = orjson.loads(text)
            sent = waiting[i].pop(frame.get("ref"), None)
            if sent is None:
                continue
            if frame["type"] == "ack":
                out["acked"] += 1
                out["ack_ms"].append(time.time() * 1000.0 - sent)
            else:
                out["refused"] += 1

    readers = [asyncio.ensure_future(read(i)) for i in range(len(sockets))]
    await asyncio.sleep(max(0.0, start_at - time.time()))
    t0, sent = time.monotonic(), 0
    while (elapsed := time.monotonic() - t0) < duration:
        for _ in range(int(elapsed * rate) - sent):
            i = sent % len(sockets)
            now = time.time() * 1000.0
            waiting[i][sent] = now
            await sockets[i].send(orjson.dumps({"type": "telemetry", "ref": sent,
                                                "data": sample(ts_base + first + sent, first + sent, now)}).decode())
            out["sent"] += 1
            sent += 1
        await asyncio.sleep(0.005)
    await asyncio.sleep(2.0)  # the last acks
    for reader in readers:
        reader.cancel()
    for socket in sockets:
        await socket.close()
    out["ack_ms"] = latency_summary(out["ack_ms"])
    return out


def _http_send(web: str, devices: list[str], first: int, rate: float, duration: float, start_at: float,
               ts_base: int) -> dict[str, Any]:
    import requests

    out: dict[str, Any] = {"sent": 0, "acked": 0, "refused": 0, "ack_ms": []}
    lock = threading.Lock()

    def device(index: int, device_id: str) -> None:
        session = requests.Session()
        session.auth = (device_id, SECRET)
        period = len(devices) / rate
        time.sleep(max(0.0, start_at - time.time()) + period * index / len(devices))
        t0, n = time.monotonic(), 0
        while time.monotonic() - t0 < duration:
            seq = first + index * 10_000 + n
            now = time.time() * 1000.0
            try:
                reply = session.post(f"{web}/api/ingest/{device_id}/telemetry", data=orjson.dumps(
                    sample(ts_base + seq, seq, now)), headers={"Content-Type": "application/json"}, timeout=10)
                ok = reply.status_code == 200
            except requests.RequestException:
                ok = False
            with lock:
                out["sent"] += 1
                if ok:
                    out["acked"] += 1
                    out["ack_ms"].append(time.time() * 1000.0 - now)
                else:
                    out["refused"] += 1
            n += 1
            time.sleep(max(0.0, t0 + n * period - time.monotonic()))

    threads = [threading.Thread(target=device, args=(i, d), daemon=True) for i, d in enumerate(devices)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + 30)
    out["ack_ms"] = latency_summary(out["ack_ms"])
    return out


def _worker(transport: str, web: str, devices: list[str], first: int, rate: float, duration: float,
            start_at: float, ts_base: int, queue: Any) -> None:
    if transport == "ws":
        url = web.replace("http", "ws", 1) + "/ws/device/"
        queue.put(asyncio.run(_ws_send(url, devices, first, rate, duration, start_at, ts_base)))
    else:
        queue.put(_http_send(web, devices, first, rate, duration, start_at, ts_base))


def _register(kind: str, count: int) -> list[str]:
    from devices.models import Device
    from devices.secrets import secret_hash

    ids = [f"bench-{kind}-{i:05d}" for i in range(count)]
    Device.objects.filter(pk__in=ids).delete()
    Device.objects.bulk_create([Device(id=d, name=d, secret_hash=secret_hash(SECRET), enabled=True) for d in ids])
    return ids


def _stored(kind: str, ts_range: tuple[int, int]) -> int:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM devices_telemetry WHERE device_id >= %s AND device_id < %s "
                    "AND ts BETWEEN to_timestamp(%s) AND to_timestamp(%s)",
                    [f"bench-{kind}-", f"bench-{kind}.", ts_range[0] / 1000, ts_range[1] / 1000])
        return cur.fetchone()[0]


def _metric(web: str, name: str) -> int:
    from testing.http import http_get

    status, body = http_get(f"{web}/metrics")
    found = re.search(rb"^" + name.encode() + rb" (\S+)$", body, re.MULTILINE) if status == 200 else None
    return int(float(found.group(1))) if found else 0


def _transactions(web: str) -> int:
    return _metric(web, "iotgw_web_transactions_total")


def _drained(web: str, timeout: float = 120.0) -> float:
    """Wait until the web process's intake is empty (a phase past saturation leaves a backlog); seconds waited."""
    started = time.monotonic()
    while _metric(web, "iotgw_web_intake_waiting") and time.monotonic() - started < timeout:
        time.sleep(0.5)
    return round(time.monotonic() - started, 1)


def phase(*, transport: str, web: str, devices: list[str], rate: float, duration: float, senders: int,
          ts_base: int, monitor: Any = None) -> dict[str, Any]:
    """Offer `rate` samples/s over `transport` for `duration` s; what was sent, acked and stored."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 3.0  # the sockets are open by then
    share = [devices[i::senders] for i in range(senders)]
    # Timestamps stay within the accepted clock skew (a day): a phase spans 10^7 ms, a sender 10^6 of it.
    procs = [ctx.Process(target=_worker, args=(transport, web, mine, i * 1_000_000, rate / senders, duration,
                                               start_at, ts_base, queue), daemon=True)
             for i, mine in enumerate(share)]
    before = _transactions(web)
    for p in procs:
        p.start()
    usage: dict[str, Any] = {}
    if monitor is not None:
        monitor.add(f"{transport} load", [p.pid for p in procs])
        time.sleep(max(0.0, start_at - time.time()))
        monitor.start()
        time.sleep(duration)
        usage = monitor.end()
        monitor.remove(f"{transport} load")
    results = [queue.get(timeout=duration + 90) for _ in procs]
    for p in procs:
        p.join(10)
    sent, acked = sum(r["sent"] for r in results), sum(r["acked"] for r in results)
    drain = _drained(web)
    stored = _stored(KINDS[transport], (ts_base, ts_base + 10**7))
    transactions = _transactions(web) - before
    slowest = max((r["ack_ms"] for r in results), key=lambda s: s.get("p99") or 0)
    return {"transport": transport, "offered_rate": rate, "usage": usage, "sent": sent, "acked": acked,
            "refused": sum(r["refused"] for r in results), "drained_in_s": drain, "stored": stored,
            "lost_stored": acked - stored,
            "stored_rate": round(stored / duration, 1), "transactions": transactions,
            "samples_per_transaction": round(stored / max(transactions, 1), 1),
            "send_to_ack_ms": {k: (round(v, 1) if isinstance(v, float) else v) for k, v in slowest.items()},
            "range_ms": [start_at * 1000, (start_at + duration) * 1000]}


def measure(*, env: dict[str, str], token: str, logdir: Path, rates: list[float], duration: float,
            devices: int = 50, senders: int = 2, monitor: Any = None) -> dict[str, Any]:
    """Start a web process, dashboards on every device, and run a phase per transport and rate."""
    from bench.dashboards import Dashboards
    from bench.stack import BenchStack

    ids = {transport: _register(kind, devices) for transport, kind in KINDS.items()}
    # Each WebSocket device sends at most IOTGW_WS_RATE frames/s; HTTP ones as many requests.
    env = dict(env, IOTGW_WS_RATE="1000", IOTGW_WS_BURST="1000", IOTGW_HTTP_INGEST_RATE="1000",
               IOTGW_HTTP_INGEST_BURST="1000")
    stack = BenchStack(env, logdir, "devtrans")
    out: dict[str, Any] = {"devices": devices, "phases": []}
    try:
        proc = stack.start_web()
        web = f"http://127.0.0.1:{stack.web_ports[0]}"
        if monitor is not None:
            monitor.add("web", [proc.popen.pid])
        everything = ids["ws"] + ids["http"]
        dashes = Dashboards(stack.ws_urls, token, [everything, everything], 1)
        dashes.wait_ready()
        base = int(time.time() * 1000)
        for i, (transport, rate) in enumerate((t, r) for t in KINDS for r in rates):
            out["phases"].append(phase(transport=transport, web=web, devices=ids[transport], rate=rate,
                                       duration=duration, senders=senders, ts_base=base + i * 10**7,
                                       monitor=monitor))
        seen = dashes.stop()
        for result in out["phases"]:
            lo, hi = result.pop("range_ms")
            lat = [d for sent, lats in seen for t, d in zip(sent, lats, strict=True) if lo <= t <= hi]
            result["latency_ms"] = {k: (round(v, 1) if isinstance(v, float) else v)
                                    for k, v in latency_summary(lat).items()}
    finally:
        stack.stop()
        if monitor is not None:
            monitor.remove("web")
    return out


def summary(phase: dict[str, Any]) -> str:
    """One line per phase for the run's output."""
    lat, ack = phase.get("latency_ms", {}), phase["send_to_ack_ms"]
    cpu = phase.get("usage", {}).get("web", {}).get("cpu_pct")
    return (f"   {phase['transport']:>4} {phase['offered_rate']:>7.0f} samples/s offered: sent {phase['sent']} "
            f"acked {phase['acked']} stored {phase['stored']} ({phase['stored_rate']:.0f}/s) in "
            f"{phase['transactions']} transactions ({phase['samples_per_transaction']} samples each, drained in "
            f"{phase['drained_in_s']} s); "
            f"send→ack p50 {ack.get('p50')} p99 {ack.get('p99')} ms; send→dashboard p50 {lat.get('p50')} "
            f"p99 {lat.get('p99')} ms; web CPU {cpu} %")


if __name__ == "__main__":  # pragma: no cover - run through `python -m bench --only devtrans`
    print("run it as: python -m bench --only devtrans (or make bench BENCH_ARGS=\"--quick --only gateway,devtrans\")",
          file=sys.stderr)
    sys.exit(os.EX_USAGE)
