"""Real paho clients acting as devices: publishing, receiving commands, reporting the broker's reason codes."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from core.broker import BrokerConfig


class MqttDevice:
    """A real paho client acting as a device."""

    def __init__(self, url: str, device_id: str, *, protocol: int = mqtt.MQTTv5, password: str | None = None,
                 will: bool = True) -> None:
        config = BrokerConfig.from_url(url)
        self.device_id = device_id
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dev-{device_id}-{uuid.uuid4().hex[:4]}",
                                  protocol=protocol)
        if password:
            self.client.username_pw_set(device_id, password)
        if will:
            self.client.will_set(f"devices/{device_id}/status", b"offline", qos=1, retain=True)
        self.received: list[mqtt.MQTTMessage] = []
        self.got = threading.Condition()
        self.client.on_message = self._on_message
        self.client.connect(config.host, config.port)
        self.client.loop_start()

    def _on_message(self, _c, _u, msg) -> None:
        with self.got:
            self.received.append(msg)
            self.got.notify_all()

    def publish(self, topic_kind: str, payload: Any, *, qos: int = 1, retain: bool = False, topic: str | None = None):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode() if not isinstance(
            payload, str) else payload.encode()
        info = self.client.publish(topic or f"devices/{self.device_id}/{topic_kind}", data, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(10)
        return info

    def telemetry(self, sample: Any, qos: int = 1):
        return self.publish("telemetry", sample, qos=qos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class MqttProbe:
    """A paho client (v5 unless told otherwise) that reports the broker's reason codes (CONNACK, PUBACK, SUBACK)."""

    def __init__(self, port: int, *, protocol: int = mqtt.MQTTv5, client_id: str | None = None) -> None:
        self.port = port
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
                                  protocol=protocol)
        self.events: dict[str, object] = {}
        self.received: list[mqtt.MQTTMessage] = []
        self.cond = threading.Condition()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self._event("connack", rc.value)
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self._event("disconnected", rc.value)
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self._event(f"puback-{mid}", rc.value)
        self.client.on_subscribe = lambda _c, _u, mid, rcs, _p: self._event(f"suback-{mid}", [r.value for r in rcs])
        self.client.on_message = self._message

    def _event(self, name: str, value: object) -> None:
        with self.cond:
            self.events[name] = value
            self.cond.notify_all()

    def _message(self, _c, _u, msg) -> None:
        with self.cond:
            self.received.append(msg)
            self.cond.notify_all()

    def wait(self, name: str, timeout: float = 10.0) -> object:
        with self.cond:
            assert self.cond.wait_for(lambda: name in self.events, timeout), f"no {name}"
            return self.events.pop(name)

    def try_connect(self, username: str, password: str) -> int:
        """Connect and return the CONNACK reason code (0 = accepted)."""
        self.client.username_pw_set(username, password)
        try:
            self.client.connect("127.0.0.1", self.port)
        except OSError:
            return -1
        self.client.loop_start()
        try:
            code = self.wait("connack")
        except AssertionError:
            code = -1
        if code != 0:
            self.client.loop_stop()
        return code

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 and return the PUBACK reason code (0x87 = not authorised)."""
        info = self.client.publish(topic, payload, qos=1)
        return self.wait(f"puback-{info.mid}")

    def subscribe(self, topic: str) -> int:
        _rc, mid = self.client.subscribe(topic, qos=1)
        return self.wait(f"suback-{mid}")[0]

    def got(self, topic: str, payload: bytes | None = None, timeout: float = 10.0,
            match: Callable[[mqtt.MQTTMessage], bool] | None = None) -> bool:
        """Wait for a message on `topic` with that payload (or that `match` accepts)."""
        def seen() -> bool:
            return any(m.topic == topic and (m.payload == payload if match is None else match(m))
                       for m in self.received)

        with self.cond:
            return self.cond.wait_for(seen, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


NOT_AUTHORIZED = 0x87


class Responder:
    """A real paho device: subscribes to its commands on every connect, says `online`, answers per `answer`.

    `answer` is "ok", "error" or None (silent); it can be changed while running.
    """

    def __init__(self, url: str, device_id: str, *, answer: str | None = "ok", announce: bool = True) -> None:
        config = BrokerConfig.from_url(url)
        self.device_id = device_id
        self.answer = answer
        self.announce = announce
        self.received: list[dict] = []
        self.properties: list[Any] = []
        self._cond = threading.Condition()
        client_id = f"resp-{device_id}-{uuid.uuid4().hex[:4]}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.will_set(f"devices/{device_id}/status", b"offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.connect(config.host, config.port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the device could not subscribe to its commands"

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason_code: Any, _p: Any) -> None:
        if reason_code.is_failure:
            return
        client.subscribe(f"devices/{self.device_id}/commands", qos=1)
        if self.announce:
            self.go_online()

    def go_online(self) -> None:
        """Publish the retained `online` status, as a device does when it connects."""
        self.announce = True
        self.client.publish(f"devices/{self.device_id}/status", b"online", qos=1, retain=True)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        command = json.loads(msg.payload)
        with self._cond:
            self.received.append(command)
            self.properties.append(msg.properties)
            self._cond.notify_all()
        if self.answer is not None:
            self.respond(command["id"], self.answer, result={"echo": command["params"]},
                         error="device says no" if self.answer == "error" else None)

    def respond(self, command_id: str, status: str = "ok", *, result: Any = None, error: str | None = None,
                device_id: str | None = None) -> None:
        """Publish a response (as this device, or on another device's response topic)."""
        body = {"id": command_id, "status": status, "result": result}
        if error is not None:
            body["error"] = error
        topic = f"devices/{device_id or self.device_id}/commands/response"
        self.client.publish(topic, json.dumps(body).encode(), qos=1)

    def wait_commands(self, count: int, timeout: float = 15.0) -> list[dict]:
        """Wait until at least `count` commands arrived; returns all of them."""
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.received) >= count, timeout), (
                f"{self.device_id} got {len(self.received)} commands, expected {count}")
            return list(self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class FleetResponder:
    """One paho connection speaking for many devices (a fleet on an anonymous test broker): each says
    `online`, and every command to any of them is answered `ok` at once."""

    def __init__(self, url: str, device_ids: list[str]) -> None:
        config = BrokerConfig.from_url(url)
        self.device_ids = list(device_ids)
        self.answered: set[str] = set()
        self._cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fleet-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.connect(config.host, config.port)
        self.client.loop_start()
        self.client.subscribe("devices/+/commands", qos=1)
        assert self.subscribed.wait(10), "the fleet could not subscribe to its commands"
        for device_id in self.device_ids:
            self.client.publish(f"devices/{device_id}/status", b"online", qos=1)

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        device_id = msg.topic.split("/")[1]
        command = json.loads(msg.payload)
        client.publish(f"devices/{device_id}/commands/response",
                       json.dumps({"id": command["id"], "status": "ok", "result": None}).encode(), qos=1)
        with self._cond:
            self.answered.add(command["id"])
            self._cond.notify_all()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
