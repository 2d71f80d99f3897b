"""The running bridge: the MQTT transport, the shared ingest pipeline, the command dispatcher, presence, a heartbeat.

Everything runs on one event loop and is wired here, through constructors, from the
configuration the composition root passes in (iotgw/config.py reads it from settings):

    intake ← MqttTransport → (decode, ack) ← IngestPipeline → Pusher → channel layer
                    ↑ deliver                    ↓ resolve, committed
                    └──────────── CommandDispatcher
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from django.db import DatabaseError

from alarms.engine import AlarmEngine
from bridge.discovery import Discovery, DiscoverySink
from bridge.mqtt.client import PACKET_HEADROOM
from bridge.transport import MqttTransport
from core.broker import BrokerConfig, subscriptions
from core.hadiscovery import DEFAULT_PREFIX, discovery_filters
from core.profiles import Limits
from core.push import Layer
from core.router import ProfileRouter
from core.sparkplug.host import PrimaryHost
from core.transport import Sink
from devices.dbthread import in_db_thread, in_ingest_thread
from devices.dispatch import CommandDispatcher
from devices.maintenance import maintenance_loop, rollup_loop
from devices.pipeline import IngestPipeline, Intake
from devices.presence import presence_loop
from devices.profiles_watch import profiles_follow, profiles_load
from devices.pusher import Pusher
from devices.services.heartbeats import bridge_heartbeat, devices_note_rejections
from devices.services.history import Retention
from devices.services.telemetry import telemetry_ingest
from devices.stats import IngestStats

logger = logging.getLogger("iotgw.bridge")

_current: Bridge | None = None


# The `Device.transport` values whose commands this bridge publishes.
MQTT_DELIVERS_TO = (MqttTransport.name, "")


class BridgeNotRunning(RuntimeError):
    """The bridge has not been started in this process."""


def current() -> Bridge:
    """The bridge running in this process (the `mqtt-bridge` channel's consumer nudges its dispatcher)."""
    if _current is None:
        raise BridgeNotRunning("the MQTT bridge is not running in this process")
    return _current


class Bridge:
    """Owns one bridge process's MQTT connection, ingest, commands, presence sweep, history maintenance, heartbeat.

    Every setting is a keyword with the default of its IOTGW_*/MQTT_* variable (README, Configuration).
    `intake` and `sink` let a drain (bridge/drain.py) see the messages before the pipeline does.
    """

    def __init__(
        self,
        *,
        broker: BrokerConfig,
        layer: Layer,
        client_id: str,
        share_group: str | None = None,
        session_expiry: int = 86400,
        receive_maximum: int = 20000,
        max_batch: int = 5000,
        max_payload: int = 64 * 1024,
        max_clock_skew: float = 86400.0,
        push_buckets: int = 1,
        push_interval: float = 0.01,
        heartbeat_seconds: float = 2.0,
        offline_after: float = 600.0,
        retention: Retention | None = None,
        maintenance_seconds: float = 3600.0,
        alarm_poll: float = 2.0,
        alarm_sweep: float = 5.0,
        rollup_seconds: float = 30.0,
        subscribe: list[tuple[str, int]] | None = None,
        intake: Intake | None = None,
        sink: Sink | None = None,
        profile_refresh: float = 2.0,
        sparkplug_host_id: str = "",
        ha_discovery: bool = False,
        ha_discovery_prefix: str = DEFAULT_PREFIX,
        ha_discovery_register: bool = False,
    ) -> None:
        self.broker = broker
        self._share_group = share_group
        self._profile_refresh = profile_refresh
        self._fixed_subscriptions = subscribe is not None  # a drain's marker topic: no profile's topics
        # The one decoder and command encoder: SPEC §4's dialect, and every device profile in use (docs/profiles.md).
        self.router = ProfileRouter(limits=Limits(max_payload=max_payload, max_skew=timedelta(seconds=max_clock_skew)))
        self.client_id = client_id
        self._heartbeat_seconds = heartbeat_seconds
        self._offline_after = offline_after
        self._retention = Retention() if retention is None else retention
        self._maintenance_seconds = maintenance_seconds
        self._rollup_seconds = rollup_seconds
        self.stats = IngestStats()
        self.intake = Intake() if intake is None else intake
        # Home Assistant discovery configs, read aside from the telemetry batches (bridge/discovery.py).
        self.discovery = (Discovery(router=self.router, stats=self.stats, prefix=ha_discovery_prefix,
                                    register=ha_discovery_register) if ha_discovery else None)
        sink = self.intake if sink is None else sink
        if self.discovery is not None:
            sink = DiscoverySink(sink, self.discovery)
        self.pusher = Pusher(layer=layer, stats=self.stats, buckets=push_buckets, interval=push_interval)
        self.transport = MqttTransport(
            broker, sink=sink, stats=self.stats, client_id=client_id,
            decoder=self.router, encode=self.router.command_message,
            subscriptions=subscriptions(broker, share_group) if subscribe is None else subscribe,
            session_expiry=session_expiry, receive_maximum=receive_maximum,
            max_packet_size=max_payload + PACKET_HEADROOM,
            host=PrimaryHost(sparkplug_host_id) if sparkplug_host_id else None,
        )
        # Alarm rules: on each committed batch, on commands' ends, and a sweep for silence (docs/alarms.md).
        self.alarms = AlarmEngine(pusher=self.pusher, stats=self.stats, poll=alarm_poll, sweep=alarm_sweep)
        # Devices last seen on MQTT, or not seen yet; one heard on another transport (http, ws, coap) gets its
        # commands there (an HTTP device by asking: api/http_devices.py).
        self.dispatcher = CommandDispatcher(outlet=self.transport, owner=client_id, stats=self.stats,
                                            pusher=self.pusher, transports=MQTT_DELIVERS_TO, listeners=[self.alarms])
        # Its commits on a thread and connection of their own (PostgreSQL): never behind this process's housekeeping.
        self.pipeline = IngestPipeline(intake=self.intake, stats=self.stats, pusher=self.pusher, max_batch=max_batch,
                                       responses=self.dispatcher, listeners=[self.dispatcher, self.alarms],
                                       store=in_ingest_thread(telemetry_ingest))
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Connect (retrying in the background until the broker answers) and start the loops."""
        global _current
        if not self._fixed_subscriptions:
            await self._load_profiles()
        self.transport.start()
        self._tasks = [
            asyncio.ensure_future(profiles_follow(self.router, interval=self._profile_refresh,
                                                  changed=None if self._fixed_subscriptions else self._resubscribe)),
            asyncio.ensure_future(self.pipeline.run()),
            asyncio.ensure_future(self._heartbeat()),
            asyncio.ensure_future(self.dispatcher.run()),
            asyncio.ensure_future(self.alarms.run()),
            asyncio.ensure_future(presence_loop(pusher=self.pusher, stats=self.stats,
                                                interval=self._heartbeat_seconds, offline_after=self._offline_after)),
            asyncio.ensure_future(maintenance_loop(retention=self._retention, interval=self._maintenance_seconds,
                                                   stats=self.stats)),
            asyncio.ensure_future(rollup_loop(interval=self._rollup_seconds, stats=self.stats)),
        ]
        if self.discovery is not None:
            self._tasks.append(asyncio.ensure_future(self.discovery.run()))
        _current = self
        logger.info("bridge %s connecting to %s:%s (MQTT %s)", self.client_id, self.broker.host, self.broker.port,
                    "5" if self.broker.protocol == 5 else "3.1.1")

    async def prepare_drain(self) -> None:
        """What ingest needs without the loops (a drain, bridge/drain.py): the profiles in use, to decode what the
        session queued, and the alarm rules, which every committed batch waits for."""
        await profiles_load(self.router)
        await self.alarms.start()

    async def _load_profiles(self) -> None:
        """Before connecting: the built-in profiles installed, and the topics of the profiles in use subscribed."""
        try:
            await profiles_load(self.router, install=True)
        except DatabaseError as exc:
            logger.warning("profiles not read at start (%s); SPEC §4's topics only until they are",
                           str(exc).strip()[:200])
        self.transport.subscriptions = self._subscriptions(self.router.filters())

    def _subscriptions(self, filters: list[str]) -> list[tuple[str, int]]:
        """The device topics (shared, with a share group), and discovery's configs: never shared, since a shared
        subscription is sent no retained messages, and every bridge keeps its own view of them."""
        subs = subscriptions(self.broker, self._share_group, filters)
        if self.discovery is not None:
            subs += subscriptions(self.broker, None, discovery_filters(self.discovery.prefix))
        return subs

    async def _resubscribe(self, filters: list[str]) -> None:
        logger.info("profiles in use changed: subscribing to %s", ", ".join(filters))
        try:
            await self.transport.resubscribe(self._subscriptions(filters))
        except ConnectionError as exc:
            logger.warning("resubscribing waits for the connection: %s", exc)

    async def stop(self) -> None:
        """Disconnect cleanly (the session stays on the broker) and stop the loops."""
        global _current
        for task in self._tasks:
            task.cancel()
        await self.transport.stop()
        if _current is self:
            _current = None

    async def _heartbeat(self) -> None:
        beat = in_db_thread(bridge_heartbeat)
        note = in_db_thread(devices_note_rejections)
        while True:
            self.stats.flush()
            try:
                await beat(client_id=self.client_id, connected=self.transport.connected,
                           counters={**self.stats.snapshot(), "profile_events": self.router.events()})
                recent = self.stats.take_recent()
                if recent:  # each device's last refusal, for its page: one statement per beat
                    await note(recent=recent)
            except DatabaseError as exc:
                logger.warning("heartbeat not written: %s", str(exc).strip()[:200])
            await asyncio.sleep(self._heartbeat_seconds)
