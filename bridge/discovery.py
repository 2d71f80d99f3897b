"""Home Assistant discovery, consumed (docs/profiles/home-assistant-discovery.md): configs off the bridge's messages.

With IOTGW_HA_DISCOVERY on, the bridge subscribes to `<prefix>/+/+/config` and
`<prefix>/+/+/+/config`. `DiscoverySink` sits in front of the ingest pipeline's intake and
takes those messages aside (everything else goes on untouched); `Discovery.run` handles them
one by one, off the telemetry batch path: decode (core), map to a device (the router's
profiles in use), one service call on the database thread, then the ack.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import orjson
from django.db import DatabaseError

from core.errors import GatewayError, PayloadInvalid
from core.hadiscovery import DEFAULT_PREFIX, Entity, Removed, claim, discovered_device_id, parse_config
from core.router import ProfileRouter
from core.transport import Envelope, Inlet, Sink
from devices.dbthread import in_db_thread
from devices.services.discovery import discovery_device_register, discovery_entity_remove, discovery_metric_save
from devices.stats import IngestStats

logger = logging.getLogger("iotgw.discovery")

# Configs waiting past this many are dropped (acknowledged and counted, not kept in memory): they are retained,
# so the next subscribe brings them again, and unacknowledged they would hold the broker's window shut.
BACKLOG = 10_000
# Entities no device could be found for, kept to try again when the devices on profiles change.
PENDING = 10_000


class DiscoverySink:
    """The pipeline's sink, but configs under the prefix go to the discovery queue instead."""

    def __init__(self, sink: Sink, discovery: Discovery) -> None:
        self._sink = sink
        self._discovery = discovery
        self._prefix = discovery.prefix + "/"

    def offer(self, inlet: Inlet, envelopes: Sequence[Envelope]) -> None:
        prefix = self._prefix
        # One pass, ~0.1-0.3 µs a message; a topic under the prefix that is no config stays the profiles'.
        configs = [e for e in envelopes if e.topic.startswith(prefix) and e.topic.endswith("/config")]
        if not configs:
            self._sink.offer(inlet, envelopes)
            return
        self._discovery.offer(inlet, configs)
        rest = [e for e in envelopes if not (e.topic.startswith(prefix) and e.topic.endswith("/config"))]
        if rest:
            self._sink.offer(inlet, rest)

    def __len__(self) -> int:
        return len(self._sink)


class Discovery:
    """Reads each config and records what it says; never on the event loop's time for database work."""

    def __init__(self, *, router: ProfileRouter, stats: IngestStats, prefix: str = DEFAULT_PREFIX,
                 register: bool = False, retry: float = 2.0) -> None:
        self.prefix = prefix
        self.router = router  # the profiles in use and who is on them, as the bridge last read them
        self.register = register  # IOTGW_HA_DISCOVERY_REGISTER: register devices no profile in use claims
        self._stats = stats
        self._queue: asyncio.Queue[tuple[Inlet, Envelope]] = asyncio.Queue()
        self.handled = 0
        # A config is retained and read once per subscribe: one whose device is registered or put on a
        # profile later is tried again (every `retry` seconds, when the directory has changed), not lost.
        self._retry = retry
        self._pending: dict[str, tuple[Entity, dict[str, Any]]] = {}
        self._seen: Any = None

    def offer(self, inlet: Inlet, configs: Sequence[Envelope]) -> None:
        """Queue configs (non-blocking); past the backlog they are dropped and counted (`discovery_dropped`)."""
        dropped = []
        for config in configs:
            if self._queue.qsize() < BACKLOG:
                self._queue.put_nowait((inlet, config))
            else:
                dropped.append(config)
        if dropped:
            self._stats.counts["discovery_dropped"] += len(dropped)
            inlet.ack(dropped)

    async def run(self) -> None:
        """Handle the queued configs in order, forever; each is acknowledged once handled (or refused)."""
        while True:
            try:
                inlet, config = await asyncio.wait_for(self._queue.get(), timeout=self._retry)
            except TimeoutError:
                await self._again()
                continue
            delay = 1.0
            while True:
                try:
                    await self.handle(config.topic, bytes(config.payload))
                except DatabaseError as exc:  # the database is away: this config waits for it, telemetry does not
                    logger.warning("discovery config %s not recorded (again in %.0f s): %s", config.topic[:200],
                                   delay, str(exc).strip()[:200])
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    continue
                except Exception:
                    logger.exception("discovery config %s not recorded", config.topic[:200])
                break
            inlet.ack([config])  # after its commit
            self.handled += 1

    async def _again(self) -> None:
        """The pending entities once more, when who is on which profile has changed since they were tried."""
        members = self.router.directory.members
        if not self._pending or members == self._seen:
            return
        self._seen = members
        for entity, config in list(self._pending.values()):
            try:
                await self._entity(entity, config)
            except DatabaseError as exc:
                logger.warning("discovery: %s not retried: %s", entity.key, str(exc).strip()[:200])
                return

    async def handle(self, topic: str, payload: bytes) -> None:
        """One config: parsed, mapped to a device, recorded; a refusal is counted like a refused message."""
        try:
            found = parse_config(self.prefix, topic, payload)
        except PayloadInvalid as exc:
            self._stats.reject(source=topic[:200], reason=exc.reason, message=str(exc))
            return
        if isinstance(found, Removed):
            self._pending.pop(found.key, None)
            devices = await in_db_thread(discovery_entity_remove)(key=found.key)
            logger.info("discovery: %s removed (%s)", found.key, ", ".join(devices) or "no metric")
            return
        await self._entity(found, orjson.loads(payload))

    async def _entity(self, entity: Entity, config: dict[str, Any]) -> None:
        self._pending.pop(entity.key, None)
        owner = claim(entity, self.router.active(), self.router.directory)
        # Who a refusal is shown on: the device (a child's gateway) whose topic it is, else whoever the topic names.
        source = (owner.speaker if owner else self.router.source(entity.state_topic) if entity.state_topic
                  else entity.key)
        if entity.refused is not None:
            self._stats.reject(source=source, reason="template_refused", message=f"{entity.key}: {entity.refused}")
        if owner is not None and owner.metric is not None and entity.refused is None:
            saved = await in_db_thread(discovery_metric_save)(
                key=entity.key, device_id=owner.device_id, metric=owner.metric, label=entity.label,
                unit=entity.unit, device_class=entity.device_class,
                config=config if owner.profile.startswith("ha-") else None)
            if not saved:
                self._hold(entity, config)
                self._stats.reject(source=owner.speaker, reason="unknown_device",  # a child's gateway hears of it
                                   message=f"{entity.key}: device {owner.device_id} is not registered")
            return
        if owner is not None or entity.refused is not None:
            return  # its device's profile reads the topic, just not as one metric iotgw can label
        if not self.register:
            self._hold(entity, config)
            self._stats.reject(source=source, reason="discovery_unclaimed",
                               message=f"{entity.key}: no profile in use reads {entity.state_topic or 'its topics'}")
            return
        device_id = discovered_device_id(entity)
        if device_id is None:
            self._stats.reject(source=source, reason="bad_device_id",
                               message=f"{entity.key}: neither its node id nor its identifier can be a device id")
            return
        try:
            profile = await in_db_thread(discovery_device_register)(entity=entity, device_id=device_id, config=config)
        except GatewayError as exc:
            self._stats.reject(source=device_id, reason=getattr(exc, "reason", exc.code), message=str(exc))
            return
        logger.info("discovery: %s on device %s (profile %s)", entity.key, device_id, profile)

    def _hold(self, entity: Entity, config: dict[str, Any]) -> None:
        """Keep an entity no device was found for, to try again once the directory changes."""
        self._seen = self.router.directory.members
        if len(self._pending) < PENDING:
            self._pending[entity.key] = (entity, config)
