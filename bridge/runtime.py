"""The running bridge: our asyncio MQTT client, one event loop for all async work, a heartbeat."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError

from bridge.commands import CommandDispatcher
from bridge.db import in_db_thread
from bridge.ingest import Ingestor
from bridge.mqtt.client import MqttClient
from bridge.mqtt.codec import Raw
from bridge.presence import presence_loop
from bridge.stats import BridgeStats
from core.broker import BrokerConfig, subscriptions
from devices.services.heartbeats import bridge_heartbeat

logger = logging.getLogger("iotgw.bridge")

_current: Bridge | None = None


class BridgeNotRunning(RuntimeError):
    """The bridge has not been started in this process."""


def current() -> Bridge:
    """The bridge running in this process."""
    if _current is None:
        raise BridgeNotRunning("the MQTT bridge is not running in this process")
    return _current


class Bridge:
    """Owns the MQTT connection, the ingest loop and the heartbeat of one bridge process."""

    def __init__(self, *, broker: BrokerConfig, layer: Any, client_id: str | None = None,
                 subscribe: list[tuple[str, int]] | None = None) -> None:
        self.broker = broker
        self.layer = layer
        self.client_id = client_id or settings.MQTT_CLIENT_ID
        self.stats = BridgeStats()
        self.connected = threading.Event()  # read by the heartbeat and readiness
        self.up = asyncio.Event()  # the same, for the bridge's own loop
        self.ingestor = Ingestor(
            layer=layer,
            stats=self.stats,
            ack=self._ack,
            max_batch=settings.IOTGW_MAX_BATCH,
            max_payload=settings.IOTGW_MAX_PAYLOAD,
            max_skew=timedelta(seconds=settings.IOTGW_MAX_CLOCK_SKEW),
        )
        self.commands = CommandDispatcher(bridge=self)
        self.ingestor.on_responses = self.commands.on_responses
        self.ingestor.on_online = self.commands.nudge
        self._tasks: list[asyncio.Task] = []
        self.client = MqttClient(
            broker,
            client_id=self.client_id,
            on_messages=self.ingestor.offer_many,
            subscriptions=subscriptions(broker, settings.MQTT_SHARE_GROUP) if subscribe is None else subscribe,
            keepalive=30,
            # v5: clean_start=0 and this expiry keep the session across restarts (v3.1.1: clean_session=0).
            session_expiry=settings.MQTT_SESSION_EXPIRY,
            receive_maximum=settings.MQTT_RECEIVE_MAXIMUM,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    @property
    def generation(self) -> int:
        """The current connection's number: +1 per connection to the broker."""
        return self.client.generation

    async def start(self) -> None:
        """Connect (retrying in the background until the broker answers) and start the loops."""
        global _current
        self.client.start()
        self._tasks = [
            asyncio.ensure_future(self.ingestor.run()),
            asyncio.ensure_future(self._heartbeat()),
            asyncio.ensure_future(self.commands.run()),
            asyncio.ensure_future(presence_loop(layer=self.layer, stats=self.stats,
                                                interval=settings.IOTGW_HEARTBEAT_SECONDS)),
        ]
        _current = self
        logger.info("bridge %s connecting to %s:%s (MQTT %s)", self.client_id, self.broker.host, self.broker.port,
                    "5" if self.broker.protocol == 5 else "3.1.1")

    async def stop(self) -> None:
        """Disconnect cleanly (the session stays on the broker) and stop the loops."""
        global _current
        for task in self._tasks:
            task.cancel()
        await self.client.stop()
        self.connected.clear()
        if _current is self:
            _current = None

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, response_topic: str | None = None,
                      correlation_data: bytes | None = None) -> None:
        """Publish and wait until the broker acknowledged it (PUBACK for QoS 1); ConnectionError if it cannot."""
        await self.client.publish(topic, payload, qos=qos, response_topic=response_topic,
                                  correlation_data=correlation_data)

    # --- MQTT client callbacks (on the event loop) ------------------------------------------

    def _on_connect(self, session_present: bool) -> None:
        self.connected.set()
        self.up.set()
        self.commands.nudge()  # what queued up while away goes out now
        logger.info("bridge connected (session present: %s)", session_present)

    def _on_disconnect(self, why: str) -> None:
        self.connected.clear()
        self.up.clear()
        logger.warning("bridge disconnected from broker (%s); reconnecting with backoff", why)

    def _ack(self, raws: list[Raw]) -> None:
        """Ack after the commit; a message from an older connection is left for the broker to resend."""
        self.client.ack(raws)

    async def _heartbeat(self) -> None:
        beat = in_db_thread(bridge_heartbeat)
        while True:
            self.stats.flush()
            try:
                await beat(client_id=self.client_id, connected=self.connected.is_set(), counters=self.stats.snapshot())
            except DatabaseError as exc:
                logger.warning("heartbeat not written: %s", str(exc).strip()[:200])
            await asyncio.sleep(settings.IOTGW_HEARTBEAT_SECONDS)

