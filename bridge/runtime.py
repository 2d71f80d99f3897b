"""The running bridge: one paho client, one event loop for all async work, a heartbeat."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt
from django.conf import settings
from django.db import DatabaseError

from bridge.client import BrokerConfig, build_client, connect_properties, subscriptions
from bridge.commands import CommandDispatcher
from bridge.db import in_db_thread
from bridge.ingest import Ingestor, Raw
from bridge.stats import BridgeStats
from devices.services import bridge_heartbeat

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

    def __init__(self, *, broker: BrokerConfig, layer: Any, client_id: str | None = None) -> None:
        self.broker = broker
        self.layer = layer
        self.client_id = client_id or settings.MQTT_CLIENT_ID
        self.stats = BridgeStats()
        self.connected = threading.Event()
        self.generation = 0
        self.ingestor = Ingestor(
            layer=layer,
            stats=self.stats,
            ack=self._ack,
            max_batch=settings.IOTGW_MAX_BATCH,
            max_payload=settings.IOTGW_MAX_PAYLOAD,
        )
        self.commands = CommandDispatcher(bridge=self)
        self.ingestor.on_responses = self.commands.on_responses
        self.ingestor.on_online = self.commands.nudge
        self._pending: dict[int, asyncio.Future] = {}
        self._early: set[int] = set()
        self._lock = threading.Lock()
        self._tasks: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.client = build_client(broker, client_id=self.client_id)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish

    async def start(self) -> None:
        """Connect (retrying in the background until the broker answers) and start the loops."""
        global _current
        self._loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {"keepalive": 30}
        if self.broker.protocol == 5:
            # paho's default cleans the session on the first connect: every restart would lose it.
            kwargs["clean_start"] = False
            kwargs["properties"] = connect_properties(
                session_expiry=settings.MQTT_SESSION_EXPIRY, receive_maximum=settings.MQTT_RECEIVE_MAXIMUM
            )
        self.client.connect_async(self.broker.host, self.broker.port, **kwargs)
        self.client.loop_start()
        self._tasks = [
            asyncio.ensure_future(self.ingestor.run()),
            asyncio.ensure_future(self._heartbeat()),
            asyncio.ensure_future(self.commands.run()),
        ]
        _current = self
        logger.info("bridge %s connecting to %s:%s (MQTT %s)", self.client_id, self.broker.host, self.broker.port,
                    "5" if self.broker.protocol == 5 else "3.1.1")

    async def stop(self) -> None:
        """Disconnect cleanly (the session stays on the broker) and stop the loops."""
        global _current
        for task in self._tasks:
            task.cancel()
        self.client.disconnect()
        self.client.loop_stop()
        if _current is self:
            _current = None

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, properties: Any = None) -> None:
        """Publish and wait until the broker acknowledged it (PUBACK for QoS 1)."""
        assert self._loop is not None
        future = self._loop.create_future()
        # Not under self._lock: paho calls on_publish holding its own message lock, and
        # publish() takes that lock too, so holding ours around it deadlocks both threads.
        # A PUBACK that beats the registration below is parked in _early by _on_publish.
        info = self.client.publish(topic, payload, qos=qos, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
            raise ConnectionError(f"publish failed: {mqtt.error_string(info.rc)}")
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                future.set_result(None)
            else:
                self._pending[info.mid] = future
        await future

    # --- paho callbacks (paho's network thread) ---------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            logger.error("broker refused the connection: %s", reason_code)
            return
        self.generation += 1
        client.subscribe(subscriptions(self.broker, settings.MQTT_SHARE_GROUP))
        self.connected.set()
        self._loop.call_soon_threadsafe(self.commands.nudge)  # what queued up while away goes out now
        logger.info("bridge connected (session present: %s)", flags.session_present)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        self.connected.clear()
        logger.warning("bridge disconnected from broker (%s); reconnecting with backoff", reason_code)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.ingestor.offer(Raw(msg.topic, msg.payload, msg.qos, msg.mid, self.generation))

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, _rc: Any, _props: Any) -> None:
        with self._lock:
            future = self._pending.pop(mid, None)
            if future is None:
                self._early.add(mid)
                return
        self._loop.call_soon_threadsafe(_resolve, future)

    def _ack(self, raws: list[Raw]) -> None:
        """Ack after the commit; a message from an older connection is left for the broker to resend."""
        generation = self.generation
        for raw in raws:
            if raw.qos and raw.generation == generation:
                self.client.ack(raw.mid, raw.qos)

    async def _heartbeat(self) -> None:
        beat = in_db_thread(bridge_heartbeat)
        while True:
            try:
                await beat(client_id=self.client_id, connected=self.connected.is_set(), counters=self.stats.snapshot())
            except DatabaseError as exc:
                logger.warning("heartbeat not written: %s", str(exc).strip()[:200])
            await asyncio.sleep(settings.IOTGW_HEARTBEAT_SECONDS)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
