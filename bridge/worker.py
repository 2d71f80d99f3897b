"""A channels Worker that starts the MQTT bridge with itself and survives channel-layer outages."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.worker import Worker
from redis.exceptions import RedisError

from bridge.runtime import Bridge
from core.broker import BrokerConfig
from core.channels import BRIDGE_CHANNEL
from core.retry import Backoff

logger = logging.getLogger("iotgw.bridge")


class BridgeWorker(Worker):
    """Connects to the broker as soon as it starts, not on a first channel message.

    `broker_url` and `bridge` (the Bridge's keywords) come from the composition root
    (iotgw/config.py), which reads them from settings.
    """

    def __init__(self, *args: Any, broker_url: str, bridge: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._broker_url = broker_url
        self._bridge_options = bridge

    async def handle(self) -> None:
        """Start the bridge when serving `mqtt-bridge`, then listen on the channels."""
        if BRIDGE_CHANNEL in self.channels:
            bridge = Bridge(broker=BrokerConfig.from_url(self._broker_url), layer=self.channel_layer,
                            **self._bridge_options)
            await bridge.start()
        await super().handle()

    async def listener(self, channel: str) -> None:
        """Listen on one channel; a Redis outage is waited out with backoff, not fatal."""
        backoff = Backoff(first=0.5, most=10.0)
        while True:
            try:
                message = await self.channel_layer.receive(channel)
            except (TimeoutError, OSError, RedisError) as exc:
                delay = backoff.next()
                logger.warning("channel layer unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            if not message.get("type"):
                logger.warning("dropped a message with no type on %s", channel)
                continue
            scope = {"type": "channel", "channel": channel}
            await self.get_or_create_application_instance(channel, scope).put(message)
