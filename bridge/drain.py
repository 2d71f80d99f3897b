"""Retiring a bridge for good: resume its session, store what it queued, then remove the session."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt

from bridge.mqtt.codec import Raw
from bridge.runtime import Bridge
from core.broker import INBOUND_TOPICS, QOS1, BrokerConfig
from core.push import Layer
from core.transport import Inlet
from devices.pipeline import Intake

logger = logging.getLogger("iotgw.bridge")

# Filters a bridge's session may hold: its own plain one, its group's shared one, and the shared one
# of the default group of earlier versions (unsubscribing a filter the session lacks is harmless).
LEGACY_SHARE_GROUP = "iotgw"


class DrainIncomplete(RuntimeError):
    """The queue was not drained in time; the session is kept, so nothing is lost: run it again."""


class _MarkerSink:
    """Passes device messages on to the intake, acks the marker and says it arrived."""

    def __init__(self, intake: Intake, marker: str) -> None:
        self.intake = intake
        self.marker = marker
        self.arrived = asyncio.Event()
        self.drained = 0

    def offer(self, inlet: Inlet[Raw], envelopes: Sequence[Raw]) -> None:
        device_messages = [raw for raw in envelopes if raw.topic != self.marker]
        self.drained += len(device_messages)
        self.intake.offer(inlet, device_messages)
        if len(device_messages) < len(envelopes):
            inlet.ack([raw for raw in envelopes if raw.topic == self.marker])
            self.arrived.set()

    def __len__(self) -> int:
        return len(self.intake)


async def session_drain(*, broker: BrokerConfig, layer: Layer, client_id: str, share_group: str | None,
                        timeout: float = 300.0, **bridge: Any) -> int:
    """Store what the session of `client_id` holds through the normal ingest path (ack after commit).

    The session stops collecting (its device subscriptions go), then a marker published to a topic
    of its own goes to the end of its queue: once the marker is in, everything queued before it was
    delivered, and once the pipeline is idle, stored and acknowledged. Returns the messages drained.
    `bridge` holds the Bridge's other keywords (its limits), as the composition root reads them.
    """
    marker = f"iotgw/drain/{uuid.uuid4().hex}"
    intake = Intake()
    sink = _MarkerSink(intake, marker)
    drain = Bridge(broker=broker, layer=layer, client_id=client_id, subscribe=[(marker, QOS1)], intake=intake,
                   sink=sink, **bridge)
    await drain.prepare_drain()
    drain.transport.start()
    ingesting = asyncio.ensure_future(drain.pipeline.run())
    try:
        async with asyncio.timeout(timeout):
            await drain.transport.until_connected()
            groups = {g for g in (share_group, LEGACY_SHARE_GROUP) if g}
            await drain.transport.unsubscribe([*INBOUND_TOPICS, *(f"$share/{g}/{t}" for g in groups
                                                                  for t in INBOUND_TOPICS)])
            await drain.transport.publish(marker, b"", qos=1)
            await sink.arrived.wait()
            await drain.pipeline.idle()
    except TimeoutError:
        raise DrainIncomplete(f"the session of {client_id} was not drained within {timeout:g}s "
                              f"({sink.drained} messages so far, all stored); it is kept: run this again") from None
    finally:
        ingesting.cancel()
        await drain.transport.stop()
    logger.info("drained %d messages from the session of %s (%s)", sink.drained, client_id,
                dict(drain.stats.rejected))
    return sink.drained


def session_remove(config: BrokerConfig, client_id: str) -> None:
    """End a persistent session: a clean connect with no session expiry replaces it, and ends on disconnect."""
    v5 = config.protocol == 5
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, clean_session=None if v5 else True)
    if config.username:
        client.username_pw_set(config.username, config.password)
    if config.tls:
        client.tls_set_context(config.ssl_context())
    rc = client.connect(config.host, config.port, clean_start=True) if v5 else client.connect(config.host, config.port)
    if rc != mqtt.MQTT_ERR_SUCCESS:
        raise ConnectionError(f"could not connect to the broker: {mqtt.error_string(rc)}")
    client.loop_start()
    client.disconnect()
    client.loop_stop()
