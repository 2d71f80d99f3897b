"""The `mqtt-bridge` channel's consumer: what web processes tell this process's bridge."""

from __future__ import annotations

from typing import Any

from channels.consumer import AsyncConsumer

from bridge import runtime


class BridgeConsumer(AsyncConsumer):
    """Handles `command.nudge` (core.channels) sent to `mqtt-bridge`."""

    async def command_nudge(self, message: dict[str, Any]) -> None:
        """A web process stored a command: look for queued commands of that device now."""
        device = message.get("device")
        runtime.current().dispatcher.nudge([device] if isinstance(device, str) else None)
