"""Simulated devices for demos and load: drifting sensor values over MQTT, answering commands (SPEC §4, §6)."""

from __future__ import annotations

import heapq
import json
import logging
import math
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.broker import BrokerConfig
from core.topics import device_topic

logger = logging.getLogger("iotgw.simulator")


# --- pure value generation ---------------------------------------------------------------------


class Sensor:
    """One device's sensor state; `step()` advances it and returns a sample's metrics."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.setpoint = round(rng.uniform(19.0, 24.0), 1)
        self.temperature = self.setpoint + rng.uniform(-1.0, 1.0)
        self.humidity = rng.uniform(35.0, 55.0)
        self.battery = rng.uniform(80.0, 100.0)
        self.rssi = rng.uniform(-75.0, -50.0)
        self.uptime = 0.0

    def step(self, dt: float) -> dict[str, Any]:
        """Advance `dt` seconds: temperature and RSSI wander around their means, the battery drains."""
        dt = max(0.0, dt)
        # Ornstein–Uhlenbeck: a random walk pulled back towards the setpoint, so it drifts but stays plausible.
        self.temperature += 0.05 * (self.setpoint - self.temperature) * dt + self.rng.gauss(0, 0.15) * math.sqrt(dt)
        # Warmer air holds more water: relative humidity falls as the temperature rises.
        target_rh = 45.0 - 2.0 * (self.temperature - self.setpoint)
        self.humidity += 0.05 * (target_rh - self.humidity) * dt + self.rng.gauss(0, 0.4) * math.sqrt(dt)
        self.humidity = min(100.0, max(0.0, self.humidity))
        self.battery = max(0.0, self.battery - 0.002 * dt * self.rng.uniform(0.5, 1.5))
        if self.battery <= 5.0:  # someone swaps the batteries
            self.battery = 100.0
        self.rssi += 0.1 * (-62.0 - self.rssi) * dt + self.rng.gauss(0, 1.0) * math.sqrt(dt)
        self.uptime += dt
        return {
            "temperature": round(self.temperature, 2),
            "humidity": round(self.humidity, 1),
            "battery": round(self.battery, 2),
            "rssi": round(self.rssi),
        }

    def resume(self, latest: dict[str, Any]) -> None:
        """Carry on from a device's last known values, so a restarted simulator does not jump."""
        for name in ("temperature", "humidity", "battery", "rssi"):
            value = latest.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                setattr(self, name, float(value))

    def reboot(self) -> None:
        """Uptime starts again."""
        self.uptime = 0.0


def command_answer(sensor: Sensor, command: dict[str, Any], *, failed: bool) -> dict[str, Any]:
    """The response to a command (SPEC §6): known names act on the sensor, unknown ones are errors."""
    response: dict[str, Any] = {"id": command.get("id")}
    name, params = command.get("name"), command.get("params") or {}
    if failed:
        return response | {"status": "error", "error": "simulated failure"}
    if name == "ping":
        return response | {"status": "ok", "result": {"pong": True, "uptime": round(sensor.uptime)}}
    if name == "reboot":
        sensor.reboot()
        return response | {"status": "ok", "result": {"rebooted": True}}
    if name == "set_setpoint":
        value = params.get("value") if isinstance(params, dict) else None
        if not isinstance(value, int | float) or not 5 <= value <= 35:
            return response | {"status": "error", "error": "params.value must be a number from 5 to 35"}
        sensor.setpoint = float(value)
        return response | {"status": "ok", "result": {"setpoint": sensor.setpoint}}
    return response | {"status": "error", "error": f"unknown command {str(name)[:64]!r}"}


def spread(count: int, rate: float, start: float) -> list[float]:
    """First publish time of each of `count` devices, spread over one period so they do not burst together."""
    if count <= 0 or rate <= 0:
        return []
    period = count / rate
    return [start + period * i / count for i in range(count)]


# --- devices on the wire -----------------------------------------------------------------------


@dataclass
class Stats:
    """Counters for the progress line."""

    sent: int = 0
    acked: int = 0
    commands: int = 0
    command_errors: int = 0
    connected: int = 0
    refused: int = 0
    logins: int = 0  # connections the broker accepted, ever
    refusal: str = ""  # the broker's last reason for refusing one
    started: float = field(default_factory=time.monotonic)
    # paho calls back from one thread per device: `+=` on a shared int could lose counts.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    history: deque = field(default_factory=lambda: deque(maxlen=64), repr=False)

    def add(self, name: str, n: int = 1) -> None:
        """Add to a counter from any thread."""
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def average(self) -> float:
        """Samples per second since the start."""
        return self.sent / max(time.monotonic() - self.started, 1e-9)

    def rate(self, window: float = 5.0) -> float:
        """Samples per second over about the last `window` seconds."""
        now = time.monotonic()
        self.history.append((now, self.sent))
        while len(self.history) > 2 and now - self.history[1][0] >= window:
            self.history.popleft()
        then, sent = self.history[0]
        return (self.sent - sent) / (now - then) if now - then >= 0.2 else 0.0


class SimulatedDevice:
    """One device: its sensor and its paho client (Last Will `offline`, `online` at connect)."""

    def __init__(self, sim: Simulator, device_id: str, secret: str | None, seed: int | None,
                 latest: dict[str, Any] | None = None) -> None:
        self.sim = sim
        self.id = device_id
        self.sensor = Sensor(random.Random(seed))
        self.sensor.resume(latest or {})
        self.last_step = time.monotonic()
        self.connected = False
        self.refused = False
        self.refusals = 0
        # Telemetry awaiting its PUBACK; bounded, as a message lost with a connection is never acked.
        self.inflight: deque[mqtt.MQTTMessageInfo] = deque(maxlen=10_000)
        config = sim.broker
        v5 = config.protocol == 5
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-{device_id}-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        # The device logs in as itself; on an anonymous broker a missing secret does no harm.
        self.client.username_pw_set(device_id, secret)
        if config.tls:
            self.client.tls_set_context(config.ssl_context())
        self.client.will_set(self.topic("status"), b"offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def topic(self, kind: str) -> str:
        return device_topic(self.id, kind)

    def start(self) -> None:
        """Connect in the background; paho retries until the broker answers."""
        self.client.connect_async(self.sim.broker.host, self.sim.broker.port, keepalive=30)
        self.client.loop_start()

    def say_offline(self) -> mqtt.MQTTMessageInfo | None:
        """Publish `offline` on purpose: a clean disconnect does not fire the Will."""
        if not self.connected:
            return None
        return self.client.publish(self.topic("status"), b"offline", qos=1, retain=True)

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def publish_sample(self) -> None:
        """Advance the sensor and publish one telemetry sample (QoS 1, with its ts)."""
        self.count_acks()
        now = time.monotonic()
        sample = self.sensor.step(now - self.last_step)
        self.last_step = now
        # Microseconds: at a high per-device rate, millisecond stamps would collide and be stored once.
        sample["ts"] = datetime.now(UTC).isoformat()
        info = self.client.publish(self.topic("telemetry"), json.dumps(sample).encode(), qos=1)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self.sim.stats.add("sent")
            self.inflight.append(info)

    def count_acks(self) -> None:
        """Count the telemetry the broker has acknowledged (PUBACKs come back in order)."""
        while self.inflight and self.inflight[0].is_published():
            self.inflight.popleft()
            self.sim.stats.add("acked")

    def _on_connect(self, client, _userdata, _flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            self.sim.stats.add("refused")
            self.sim.stats.refusal = str(reason_code)
            self.refusals += 1
            # Say it once, count the rest (paho retries with backoff); a first refusal may be a device just
            # registered that the broker has not caught up with yet.
            if self.refusals == 2:
                logger.warning("%s: the broker refused the connection (%s); retrying", self.id, reason_code)
            self.refused = True
            return
        self.connected = True
        self.sim.stats.add("connected")
        self.sim.stats.add("logins")
        client.subscribe(self.topic("commands"), qos=1)
        client.publish(self.topic("status"), b"online", qos=1, retain=True)

    def _on_disconnect(self, _client, _userdata, _flags, _reason_code, _props) -> None:
        if self.connected:
            self.connected = False
            self.sim.stats.add("connected", -1)

    def _on_message(self, _client, _userdata, msg: mqtt.MQTTMessage) -> None:
        try:
            command = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(command, dict):
            return
        props = getattr(msg, "properties", None)
        topic = getattr(props, "ResponseTopic", None) or self.topic("commands/response")
        correlation = getattr(props, "CorrelationData", None)
        self.sim.schedule(self.sim.latency, lambda: self._answer(command, topic, correlation))

    def _answer(self, command: dict, topic: str, correlation: bytes | None) -> None:
        failed = self.sim.rng.random() < self.sim.failure_rate
        answer = command_answer(self.sensor, command, failed=failed)
        props = None
        if correlation is not None and self.sim.broker.protocol == 5:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation
        self.client.publish(topic, json.dumps(answer).encode(), qos=1, properties=props)
        self.sim.stats.add("commands")
        self.sim.stats.add("command_errors", answer["status"] != "ok")


class SimulatorRefused(Exception):
    """No simulated device could log in to the broker; the message is the broker's reason."""


class Simulator:
    """N devices publishing `rate` samples/s in total, spread evenly; one scheduler thread drives them."""

    def __init__(self, *, broker: BrokerConfig, devices: dict[str, str | None], rate: float,
                 latency: float = 0.2, failure_rate: float = 0.0, seed: int | None = None,
                 latest: dict[str, dict[str, Any]] | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be above 0 samples/s")
        self.broker = broker
        self.rate = rate
        self.latency = latency
        self.failure_rate = failure_rate
        self.rng = random.Random(seed)
        self.stats = Stats()
        latest = latest or {}
        self.devices = [SimulatedDevice(self, d, s, None if seed is None else seed + i, latest.get(d))
                        for i, (d, s) in enumerate(devices.items())]
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def schedule(self, delay: float, action: Callable[[], None]) -> None:
        """Run `action` on the scheduler thread after `delay` seconds (thread-safe)."""
        with self._lock:
            self._timer_seq += 1
            heapq.heappush(self._timers, (time.monotonic() + max(0.0, delay), self._timer_seq, action))

    def stop(self) -> None:
        """Ask `run()` to return; it then takes the devices offline."""
        self._stop.set()

    def run(self, *, duration: float | None = None, progress: Callable[[Stats], None] | None = None,
            progress_every: float = 0.5, give_up_after: float | None = None) -> Stats:
        """Connect every device, publish until `duration` passes or `stop()`, then disconnect them.

        With `give_up_after`, a run in which no device could log in by then ends, raising SimulatorRefused.
        """
        for device in self.devices:
            device.start()
        start = time.monotonic()
        period = len(self.devices) / self.rate  # seconds between two samples of one device
        due = [(t, i) for i, t in enumerate(spread(len(self.devices), self.rate, start))]
        heapq.heapify(due)
        next_progress = start
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if duration is not None and now - start >= duration:
                    break
                if give_up_after is not None and self._hopeless(now - start, give_up_after):
                    raise SimulatorRefused(self.stats.refusal or "no answer from the broker")
                self._run_timers(now)
                while due and due[0][0] <= now:
                    t, i = heapq.heappop(due)
                    device = self.devices[i]
                    if device.connected:
                        device.publish_sample()
                    # Behind by more than a period (a stall): skip, rather than burst to catch up.
                    heapq.heappush(due, (max(t + period, now - period), i))
                if progress is not None and now >= next_progress:
                    for device in self.devices:
                        device.count_acks()
                    progress(self.stats)
                    next_progress = now + progress_every
                wake = min(due[0][0] if due else now + 0.1, self._timers[0][0] if self._timers else now + 0.1,
                           next_progress if progress else now + 0.1)
                self._stop.wait(max(0.0, min(wake - time.monotonic(), 0.1)))
        finally:
            self._shutdown()
            if progress is not None:
                progress(self.stats)
        return self.stats

    def _hopeless(self, elapsed: float, give_up_after: float) -> bool:
        """No device has logged in: for `give_up_after` seconds, or for 5 s with every one of them refused."""
        if self.stats.logins:
            return False
        return elapsed >= give_up_after or (elapsed >= 5.0 and all(d.refused for d in self.devices))

    def _shutdown(self, timeout: float = 5.0) -> None:
        """Every device says `offline` (waiting for the acks together, not one by one), then disconnects."""
        infos = [info for info in (d.say_offline() for d in self.devices) if info is not None]
        deadline = time.monotonic() + timeout
        while any(not i.is_published() for i in infos) and time.monotonic() < deadline:
            time.sleep(0.02)
        for device in self.devices:
            device.count_acks()
            device.stop()

    def _run_timers(self, now: float) -> None:
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > now:
                    return
                _, _, action = heapq.heappop(self._timers)
            try:
                action()
            except Exception:
                logger.exception("a simulated device failed to answer a command")


def progress_line(stats: Stats, *, final: bool = False) -> str:
    """`sent 120  acked 118  10.0/s  commands 2 (0 failed)  devices 3 connected` for the terminal."""
    rate = stats.average() if final else stats.rate()
    line = (f"sent {stats.sent}  acked {stats.acked}  {rate:.1f}/s{' on average' if final else ''}  "
            f"commands {stats.commands} ({stats.command_errors} failed)  devices {stats.connected} connected")
    if stats.refused:
        line += f"  refused {stats.refused}"
    return line
