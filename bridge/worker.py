"""A channels Worker that starts the MQTT bridge with itself and survives channel-layer outages."""

from __future__ import annotations

import asyncio
import logging

from channels.layers import get_channel_layer
from channels.worker import Worker
from django.conf import settings
from redis.exceptions import RedisError

from bridge.runtime import Bridge
from core.broker import BrokerConfig
from core.channels import BRIDGE_CHANNEL

logger = logging.getLogger("iotgw.bridge")



async def bridge_start(layer=None, url: str | None = None) -> Bridge:
    """Build the bridge from settings (or `url`) and connect it; used by runworker and the gateway."""
    bridge = Bridge(broker=BrokerConfig.from_url(url or settings.MQTT_URL), layer=layer or get_channel_layer())
    await bridge.start()
    return bridge


class BridgeWorker(Worker):
    """Connects to the broker as soon as it starts, not on a first channel message."""

    broker_url: str | None = None

    async def handle(self) -> None:
        """Start the bridge when serving `mqtt-bridge`, then listen on the channels."""
        if BRIDGE_CHANNEL in self.channels:
            self.bridge = await bridge_start(self.channel_layer, self.broker_url)
        await super().handle()

    async def listener(self, channel: str) -> None:
        """Listen on one channel; a Redis outage is waited out with backoff, not fatal."""
        delay = 0.5
        while True:
            try:
                message = await self.channel_layer.receive(channel)
            except (TimeoutError, OSError, RedisError) as exc:
                logger.warning("channel layer unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            if not message.get("type"):
                logger.warning("dropped a message with no type on %s", channel)
                continue
            scope = {"type": "channel", "channel": channel}
            await self.get_or_create_application_instance(channel, scope).put(message)
