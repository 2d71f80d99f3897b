"""Helpers for the command tests: a paho device that receives and answers commands, and HTTP calls."""

from __future__ import annotations

import json
import threading
import urllib.request
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from core.broker import BrokerConfig
from tests.support import wait_until


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


def http(method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    """A JSON request with a bearer token; (status, decoded body)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def command_status(command_id: str) -> str:
    from devices.models import Command

    return Command.objects.values_list("status", flat=True).get(pk=command_id)


def wait_status(command_id: str, status: str, timeout: float = 15.0) -> None:
    """Wait until the stored command reaches `status`."""
    wait_until(lambda: command_status(command_id) == status, timeout=timeout, what=f"command {command_id} {status}")
