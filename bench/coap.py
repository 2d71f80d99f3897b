"""Benchmark phase for CoAP: samples/s and p99 latency to the dashboards, beside MQTT in the same run.

    make bench BENCH_ARGS="--quick --only gateway,coap"

One web process (Daphne) and one `manage.py coapserver` (plain mode) on the run's database
and Redis; dashboards watch every CoAP device; devices POST one sample per Confirmable
request, each device from its own UDP socket (as devices are: CoAP deduplicates by the
sender's address and message id, so one socket cannot carry more than 65,536 requests per
EXCHANGE_LIFETIME). The load generators build each datagram with aiocoap's own encoder
once per device and then only change the message id, token and payload, so they can offer
thousands of requests a second from one process; the server is the real aiocoap stack.

Measured per phase: requests sent, answered 2.04 (stored, by the gateway's promise) and
stored rows; the commits the CoAP process made (its heartbeat's `transactions`): samples
per transaction shows the batching; send → 2.04 and send → dashboard frame p50/p99.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench.load import sample
from bench.stats import latency_summary

SECRET = "bench-coap-secret"
KIND = "c"


def _template(device_id: str) -> tuple[bytes, bytes]:
    """The fixed parts of a device's POST: its first header byte and code, and its options (aiocoap encodes them)."""
    from aiocoap import CON, Code, Message

    message = Message(code=Code.POST, uri=f"coap://127.0.0.1/devices/{device_id}/telemetry?secret={SECRET}")
    message.mtype, message.mid, message.token = CON, 0, b"\0\0\0\0"
    raw = message.encode()
    return raw[:2], raw[8:]  # header byte + code | (mid: 2 bytes, token: 4 bytes) | options


class _Device(asyncio.DatagramProtocol):
    """One device's socket: requests out, 2.04s counted and timed as they come back."""

    def __init__(self, device_id: str, index: int, out: dict[str, Any]) -> None:
        self.head, self.options = _template(device_id)
        self.index = index
        self.out = out
        # Random first message id and token, as aiocoap's client does: a socket of a later phase may get the port
        # of an earlier one, and the server would answer a repeated (address, mid) with the earlier answer.
        self.mid = random.randrange(0x10000)
        self.token = random.randrange(0x100000000)
        self.seq = 0
        self.waiting: dict[int, float] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.batch = 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, ts_base: int, batch: int) -> None:
        self.mid = (self.mid + 1) & 0xFFFF
        self.token = (self.token + 1) & 0xFFFFFFFF
        now = time.time() * 1000.0
        samples = [sample(ts_base + self.seq + i, self.index * 1_000_000 + self.seq + i, now) for i in range(batch)]
        self.seq += batch
        payload = orjson.dumps(samples[0] if batch == 1 else samples)
        self.waiting[self.mid] = now
        assert self.transport is not None
        self.transport.sendto(self.head + self.mid.to_bytes(2, "big") + self.token.to_bytes(4, "big")
                              + self.options + b"\xff" + payload)
        self.out["sent"] += batch
        self.batch = batch

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 4 or data[0] >> 4 & 3 != 2:  # only ACKs: the piggybacked answers
            return
        sent = self.waiting.pop(int.from_bytes(data[2:4], "big"), None)
        if sent is None:
            return
        if data[1] == 0x44:  # 2.04 Changed
            self.out["acked"] += self.batch
            self.out["ack_ms"].append(time.time() * 1000.0 - sent)
        else:
            self.out["refused"] += 1


async def _send(port: int, devices: list[str], first: int, rate: float, duration: float, start_at: float,
                ts_base: int, batch: int) -> dict[str, Any]:
    out: dict[str, Any] = {"sent": 0, "acked": 0, "refused": 0, "ack_ms": []}
    loop = asyncio.get_running_loop()
    protocols = []
    for i, device_id in enumerate(devices):
        _, protocol = await loop.create_datagram_endpoint(lambda d=device_id, n=first + i: _Device(d, n, out),
                                                          remote_addr=("127.0.0.1", port))
        protocols.append(protocol)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    t0, sent, tick = time.monotonic(), 0, 0.005
    while (elapsed := time.monotonic() - t0) < duration:
        due = int(elapsed * rate / batch) - sent
        for _ in range(due):
            protocols[sent % len(protocols)].send(ts_base, batch)
            sent += 1
        await asyncio.sleep(tick)
    await asyncio.sleep(2.0)  # the last answers
    out["ack_ms"] = latency_summary(out["ack_ms"])
    return out


def _worker(port: int, devices: list[str], first: int, rate: float, duration: float, start_at: float,
            ts_base: int, batch: int, queue: Any) -> None:
    queue.put(asyncio.run(_send(port, devices, first, rate, duration, start_at, ts_base, batch)))


def _register(count: int) -> list[str]:
    from devices.models import Device
    from devices.secrets import secret_hash

    ids = [f"bench-{KIND}-{i:05d}" for i in range(count)]
    Device.objects.filter(pk__in=ids).delete()
    Device.objects.bulk_create([Device(id=d, name=d, secret_hash=secret_hash(SECRET), enabled=True) for d in ids])
    return ids


def _transactions(client_id: str) -> int:
    from devices.models import BridgeHeartbeat

    beat = BridgeHeartbeat.objects.filter(pk=client_id).first()
    return int(beat.counters.get("transactions", 0)) if beat else 0


def _stored(ts_range: tuple[int, int]) -> int:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM devices_telemetry WHERE device_id >= %s AND device_id < %s "
                    "AND ts BETWEEN to_timestamp(%s) AND to_timestamp(%s)",
                    [f"bench-{KIND}-", f"bench-{KIND}.", ts_range[0] / 1000, ts_range[1] / 1000])
        return cur.fetchone()[0]


def phase(*, port: int, devices: list[str], rate: float, duration: float, senders: int, coap_id: str,
          ts_base: int, batch: int = 1, monitor: Any = None) -> dict[str, Any]:
    """Offer `rate` samples/s (`batch` per request) for `duration` s; what was sent, answered and stored."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 1.5
    share = [devices[i::senders] for i in range(senders)]
    procs = [ctx.Process(target=_worker, args=(port, mine, i * 100_000, rate / senders, duration, start_at, ts_base,
                                               batch, queue), daemon=True) for i, mine in enumerate(share)]
    before = _transactions(coap_id)
    for p in procs:
        p.start()
    if monitor is not None:
        monitor.add("coap load", [p.pid for p in procs])
        time.sleep(max(0.0, start_at - time.time()))
        monitor.start()
        time.sleep(duration)
        usage = monitor.end()
        monitor.remove("coap load")
    results = [queue.get(timeout=duration + 60) for _ in procs]
    for p in procs:
        p.join(10)
    sent, acked = sum(r["sent"] for r in results), sum(r["acked"] for r in results)
    time.sleep(1.5)  # a heartbeat's worth, so its transaction count is this phase's
    stored = _stored((ts_base, ts_base + 10**7))
    transactions = _transactions(coap_id) - before
    # Each load process summarises its own answers; the slower of them stands for the phase.
    slowest = max((r["ack_ms"] for r in results), key=lambda s: s.get("p99") or 0)
    ack = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in slowest.items()}
    return {"offered_rate": rate, "batch": batch, "usage": usage if monitor is not None else {}, "sent": sent,
            "acked": acked, "refused": sum(r["refused"] for r in results),
            "stored": stored, "lost_stored": acked - stored, "stored_rate": round(stored / duration, 1),
            "transactions": transactions, "samples_per_transaction": round(stored / max(transactions, 1), 1),
            "send_to_204_ms": ack, "range_ms": [start_at * 1000, (start_at + duration) * 1000]}


def measure(*, env: dict[str, str], token: str, logdir: Path, rates: list[tuple[float, int]], duration: float,
            devices: int = 200, senders: int = 2, monitor: Any = None) -> dict[str, Any]:
    """Start a web and a CoAP process, dashboards on every CoAP device, and run a phase per (rate, batch)."""
    from bench.dashboards import Dashboards
    from bench.stack import BenchStack
    from testing.coap import free_udp_port
    from testing.processes import wait_bridge_connected

    ids = _register(devices)
    port = free_udp_port()
    coap_id = f"{env['MQTT_CLIENT_ID']}-coap"
    coap_env = dict(env, IOTGW_COAP_ID=coap_id, IOTGW_COAP_HOST="127.0.0.1", IOTGW_COAP_PORT=str(port),
                    IOTGW_COAP_PLAIN="1", IOTGW_COAP_RATE="100000", IOTGW_COAP_BURST="100000")
    stack = BenchStack(env, logdir, "coap")
    out: dict[str, Any] = {"devices": devices, "phases": []}
    try:
        stack.start_web()
        proc = stack._start("coapserver", [sys.executable, "manage.py", "coapserver"], coap_env)
        wait_bridge_connected(coap_id, proc)
        if monitor is not None:
            monitor.add("coapserver", [proc.popen.pid])
        dashes = Dashboards(stack.ws_urls, token, [ids, ids], 1)
        dashes.wait_ready()
        base = int(time.time() * 1000)
        for i, (rate, batch) in enumerate(rates):
            result = phase(port=port, devices=ids, rate=rate, duration=duration, senders=senders, coap_id=coap_id,
                           ts_base=base + i * 10**7, batch=batch, monitor=monitor)
            out["phases"].append(result)
        seen = dashes.stop()
        for result in out["phases"]:
            lo, hi = result.pop("range_ms")
            lat = [d for sent, lats in seen for t, d in zip(sent, lats, strict=True) if lo <= t <= hi]
            result["latency_ms"] = {k: (round(v, 1) if isinstance(v, float) else v)
                                    for k, v in latency_summary(lat).items()}
    finally:
        stack.stop()
        if monitor is not None:
            monitor.remove("coapserver")
    return out


def summary(phase: dict[str, Any]) -> str:
    """One line per phase for the run's output."""
    lat, ack = phase.get("latency_ms", {}), phase["send_to_204_ms"]
    cpu = phase.get("usage", {}).get("coapserver", {}).get("cpu_pct")
    rss = phase.get("usage", {}).get("coapserver", {}).get("rss_peak_mib")
    return (f"   {phase['offered_rate']:>7.0f} samples/s offered ({phase['batch']}/request): sent {phase['sent']} "
            f"2.04 {phase['acked']} "
            f"stored {phase['stored']} ({phase['stored_rate']:.0f}/s) in {phase['transactions']} transactions "
            f"({phase['samples_per_transaction']} samples each); send→2.04 p50 {ack.get('p50')} p99 {ack.get('p99')} "
            f"ms; send→dashboard p50 {lat.get('p50')} p99 {lat.get('p99')} ms; coapserver CPU {cpu} % RSS {rss} MiB")


if __name__ == "__main__":  # pragma: no cover - run through `python -m bench --only coap`
    print("run it as: python -m bench --only coap (or make bench BENCH_ARGS=\"--quick --only gateway,coap\")",
          file=sys.stderr)
    sys.exit(os.EX_USAGE)
