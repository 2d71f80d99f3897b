"""The bridge bounds what a device can make it hold: IOTGW_MAX_PAYLOAD sets the MQTT client's packet limit,
and on MQTT 3.1.1 (no way to tell the broker) a message over it is skipped unread, rejected and acked once."""

from __future__ import annotations

import asyncio
import uuid

import paho.mqtt.client as mqtt
import pytest
from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer

from bridge.mqtt.client import PACKET_HEADROOM
from bridge.runtime import Bridge
from core.broker import BrokerConfig
from devices.models import Telemetry
from devices.services.devices import device_register
from testing.waiting import await_until
from tests.bridge.mqtt.test_refusals import until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def _device_publish(url: str, topic: str, payloads: list[bytes]) -> None:
    """A 3.1.1 device publishing at QoS 1, each publish acknowledged by the broker."""
    config = BrokerConfig.from_url(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex[:6]}",
                         protocol=mqtt.MQTTv311)
    client.connect(config.host, config.port)
    client.loop_start()
    try:
        for payload in payloads:
            info = client.publish(topic, payload, qos=1)
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def _stored(device_id: str) -> list[int]:
    return sorted(Telemetry.objects.filter(device_id=device_id).values_list("data__n", flat=True))


async def _started(url: str, client_id: str) -> Bridge:
    bridge = Bridge(broker=BrokerConfig.from_url(url), layer=InMemoryChannelLayer(), client_id=client_id,
                    subscribe=[("devices/#", 1)], max_payload=1000, heartbeat_seconds=60)
    await bridge.start()
    async with asyncio.timeout(15):
        await bridge.transport.until_connected()
    return bridge


async def test_v311_message_over_the_limit_is_rejected_once_unbuffered_and_the_next_is_stored(private_broker):
    device_id = (await sync_to_async(device_register)(device_id=f"big-{uuid.uuid4().hex[:6]}"))[0].id
    url = private_broker.url + "?protocol=3.1.1"
    client_id = f"br-{uuid.uuid4().hex[:6]}"
    bridge = await _started(url, client_id)
    topic = f"devices/{device_id}/telemetry"
    try:
        assert bridge.transport.max_packet_size == 1000 + PACKET_HEADROOM
        await asyncio.to_thread(_device_publish, url, topic, [b'{"x": "' + b"a" * 500_000 + b'"}',
                                                              b'{"ts": 1767225600000, "n": 1}'])
        await until(lambda: bridge.stats.counts["received"] == 2, what="both messages")
        await bridge.pipeline.idle()
        assert await sync_to_async(_stored)(device_id) == [1]
        assert bridge.stats.rejected == {"too_large": 1}
        assert bridge.transport.peak_buffered <= 1000 + PACKET_HEADROOM + 5
    finally:
        await bridge.stop()

    again = await _started(url, client_id)  # the same session: the big one was acked, not left to come back
    try:
        await asyncio.to_thread(_device_publish, url, topic, [b'{"ts": 1767225600001, "n": 2}'])
        await await_until(lambda: _stored(device_id) == [1, 2], what="the next message stored")
        await again.pipeline.idle()
        assert again.stats.counts["received"] == 1 and not again.stats.rejected
    finally:
        await again.stop()
