"""Simulated devices: publisher processes, each pacing QoS 1 samples at a set rate.

The default publisher (`lean`) is a minimal MQTT 3.1.1 client on a raw socket: it
writes every packet due in one tick with one `sendall` and reads PUBACKs on a
thread, at a few microseconds per message. paho (`--load-client paho`) costs
about ten times that per message, and on a 2-core machine every core-second the
load generator burns is taken from the gateway it measures.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import orjson

from bench.stats import latency_summary
from bridge.mqtt.codec import encode_connect, encode_publish

TICK = 0.005  # pacing granularity: publish what is due every 5 ms


@dataclass(frozen=True)
class LoadPlan:
    """One phase of offered load: who publishes what, how fast, for how long."""

    host: str
    port: int
    devices: tuple[str, ...]
    rate: float  # samples per second, all workers together
    duration: float
    workers: int
    qos: int = 1
    batch: int = 1  # samples per message: 1 is a bare sample, more is a JSON array (SPEC §4)
    client: str = "lean"  # "lean" or "paho"


def sample(ts_ms: int, seq: int, t: float | None = None) -> dict:
    """A ~100-byte sample; `t` is the publish time in epoch ms (float) for end-to-end latency."""
    t = time.time() * 1000.0 if t is None else t
    return {"ts": ts_ms, "t": round(t, 3), "seq": seq, "temp": 21.5 + seq % 7, "hum": 48.25, "volt": 3.301,
            "ok": True}


def message(ts_list: list[int], seq: int) -> bytes:
    """One MQTT payload: a bare sample, or an array of samples with consecutive timestamps."""
    t = time.time() * 1000.0
    if len(ts_list) == 1:
        return orjson.dumps(sample(ts_list[0], seq, t))
    return orjson.dumps([sample(ts, seq + i, t) for i, ts in enumerate(ts_list)])


class LeanPublisher:
    """MQTT 3.1.1, clean session, QoS 1 publishes written in bulk; PUBACKs read on a thread."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # MQTT 3.1.1, clean session, keepalive 0 (the phase is short); packets by the bridge's own codec.
        self.sock.sendall(encode_connect(client_id=client_id, v5=False, keepalive=0, clean=True))
        connack = self._read_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused the publisher: CONNACK {connack.hex()}")
        self.sock.settimeout(None)
        self.acked = 0
        self.started: dict[int, float] = {}
        self.puback_ms: list[float] = []
        self._next = 0
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_acks, daemon=True)
        self._reader.start()

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return data

    def _read_acks(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            now = time.monotonic()
            buf += chunk
            usable = len(buf) - len(buf) % 4
            with self._lock:
                for i in range(0, usable, 4):  # PUBACK: 0x40 0x02 mid
                    if buf[i] != 0x40:
                        raise ConnectionError(f"unexpected packet from the broker: {buf[i:i + 4].hex()}")
                    t = self.started.pop(int.from_bytes(buf[i + 2:i + 4], "big"), None)
                    if t is not None:
                        self.puback_ms.append((now - t) * 1000)
                    self.acked += 1
            buf = buf[usable:]

    def publish_many(self, items: list[tuple[bytes, bytes]]) -> None:
        """QoS 1 PUBLISH of each (topic, payload), in one write."""
        out = []
        now = time.monotonic()
        with self._lock:
            for topic, payload in items:
                while True:
                    self._next = self._next % 65535 + 1
                    if self._next not in self.started:
                        break
                mid = self._next
                self.started[mid] = now
                out.append(encode_publish(topic, payload, qos=1, mid=mid, v5=False))
        self.sock.sendall(b"".join(out))

    def close(self) -> None:
        try:
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
        finally:
            self.sock.close()


class PahoPublisher:
    """The same, through paho (for comparison: `--load-client paho`)."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(2000)
        self.client.max_queued_messages_set(0)
        self.acked = 0
        self.puback_ms: list[float] = []
        # No lock around publish(): paho calls on_publish under its own lock, and a PUBACK
        # may come back before publish() returns (then it waits in `early`).
        self.started: dict[int, float] = {}
        self._early: dict[int, float] = {}
        self._lock = threading.Lock()
        self.client.on_publish = self._on_publish
        self.client.connect(host, port, keepalive=60)
        self.client.loop_start()

    def _on_publish(self, _c, _u, mid, _rc, _p) -> None:
        now = time.monotonic()
        with self._lock:
            self.acked += 1
        t = self.started.pop(mid, None)
        if t is None:
            self._early[mid] = now
        else:
            self.puback_ms.append((now - t) * 1000)

    def publish_many(self, items: list[tuple[bytes, bytes]]) -> None:
        for topic, payload in items:
            t_pub = time.monotonic()
            mid = self.client.publish(topic.decode(), payload, qos=1).mid
            self.started[mid] = t_pub
            back = self._early.pop(mid, None)
            if back is not None and self.started.pop(mid, None) is not None:
                self.puback_ms.append((back - t_pub) * 1000)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _worker(plan: LoadPlan, index: int, start_at: float, out: mp.Queue) -> None:
    devices = plan.devices[index::plan.workers]
    per_message = plan.batch
    msg_rate = plan.rate / plan.workers / per_message
    cls = LeanPublisher if plan.client == "lean" else PahoPublisher
    pub = cls(plan.host, plan.port, f"bench-pub-{index}-{uuid.uuid4().hex[:6]}")
    last_ts = dict.fromkeys(devices, 0)
    topics = {d: f"devices/{d}/telemetry".encode() for d in devices}
    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.monotonic()
    sent = 0  # messages
    i = 0
    n = len(devices)
    first_ms = int(time.time() * 1000) - per_message  # the earliest ts a message of this phase can carry
    while True:
        elapsed = time.monotonic() - t0
        if elapsed >= plan.duration:
            break
        due = int(msg_rate * elapsed) - sent
        items = []
        for _ in range(due):
            device = devices[i % n]
            i += 1
            now_ms = int(time.time() * 1000)
            # Unique per device: each sample is stored once per (device, ts).
            first = max(now_ms - per_message + 1, last_ts[device] + 1)
            ts_list = list(range(first, first + per_message))
            last_ts[device] = ts_list[-1]
            items.append((topics[device], message(ts_list, sent * per_message)))
            sent += 1
        if items:
            pub.publish_many(items)
        time.sleep(TICK)
    last_ms = max(last_ts.values()) if sent else first_ms
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and pub.acked < sent:
        time.sleep(0.01)
    pub.close()
    out.put({"worker": index, "sent": sent * per_message, "acked": pub.acked * per_message, "messages": sent,
             "first_ms": first_ms, "last_ms": last_ms, "offered_elapsed": time.monotonic() - t0,
             "puback_ms": pub.puback_ms})


def run_load(plan: LoadPlan, *, lead: float = 1.0, on_started=None) -> dict:
    """Run the publishers (one process each) and return what they sent and what the broker acked, in samples."""
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
        "messages": sum(r["messages"] for r in results),
        "first_ms": min(r["first_ms"] for r in results),
        "last_ms": max(r["last_ms"] for r in results),
        "start_ms": start_at * 1000,
        "puback_ms": latency_summary([x for r in results for x in r["puback_ms"]]),
        "pids": [p.pid for p in procs],
    }
