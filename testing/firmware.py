"""A real paho client acting as a stock firmware: it publishes in the firmware's own topics and answers commands."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt

from core.broker import BrokerConfig

# Given a command's topic and payload, what the firmware publishes back: (topic, payload) pairs.
Answer = Callable[[str, bytes], list[tuple[str, bytes]]]


class Firmware:
    """A paho client (MQTT 3.1.1, as most firmwares speak) with a will, answering what it subscribes to."""

    def __init__(self, url: str, name: str, *, will: tuple[str, bytes] | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        config = BrokerConfig.from_url(url)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fw-{name}-{uuid.uuid4().hex[:4]}",
                                  protocol=mqtt.MQTTv311)
        if username:
            self.client.username_pw_set(username, password)
        if will:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.received: list[tuple[str, bytes]] = []
        self._answers: list[tuple[str, Answer]] = []
        self._got = threading.Condition()
        self._subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect(config.host, config.port)
        self.client.loop_start()

    def answer(self, topic_filter: str, answer: Answer) -> None:
        """Subscribe to commands on `topic_filter` and publish `answer`'s replies to each."""
        self._answers.append((topic_filter, answer))
        self._subscribed.clear()
        self.client.subscribe(topic_filter, qos=1)
        assert self._subscribed.wait(10), f"no SUBACK for {topic_filter}"

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False, qos: int = 1) -> None:
        """Publish and wait for the broker's ack."""
        data = payload.encode() if isinstance(payload, str) else payload
        self.client.publish(topic, data, qos=qos, retain=retain).wait_for_publish(10)

    def _on_message(self, _c, _u, msg) -> None:
        with self._got:
            self.received.append((msg.topic, msg.payload))
            self._got.notify_all()
        for topic_filter, answer in self._answers:
            if mqtt.topic_matches_sub(topic_filter, msg.topic):
                for topic, payload in answer(msg.topic, msg.payload):
                    self.client.publish(topic, payload, qos=1)

    def close(self) -> None:
        """Disconnect cleanly (no will), and clear retained messages it left."""
        self.client.disconnect()
        self.client.loop_stop()
