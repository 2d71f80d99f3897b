"""The `mqtt-bridge` channel's consumer: messages from web processes to the broker."""

from __future__ import annotations

import logging

from channels.consumer import AsyncConsumer

from bridge import runtime

logger = logging.getLogger("iotgw.bridge")


class BridgeConsumer(AsyncConsumer):
    """Handles `mqtt.publish` (and, with commands, their nudges) sent to `mqtt-bridge`."""

    async def mqtt_publish(self, message: dict) -> None:
        """Publish a payload to a topic through this process's bridge."""
        payload = message["payload"]
        if isinstance(payload, str):
            payload = payload.encode()
        try:
            await runtime.current().publish(message["topic"], payload, qos=int(message.get("qos", 1)))
        except ConnectionError as exc:  # the channel layer is best-effort too: nothing queues this
            logger.warning("mqtt.publish to %s dropped: %s", message["topic"], exc)

    async def command_nudge(self, message: dict) -> None:
        """A web process stored a command: look for queued commands of that device now."""
        device = message.get("device")
        runtime.current().commands.nudge([device] if isinstance(device, str) else None)
