"""Telling the other processes about a stored command, over the channel layer; best-effort by design.

The command is in the database before this runs: a lost frame only means a dashboard
learns of it from the next one, a lost nudge that the bridges' sweep finds it instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence

from core.channels import BRIDGE_CHANNEL, command_nudge, device_group, device_nudge, sweep_nudge
from core.push import Layer, PushBatch, push_send
from core.wire import command_frame
from devices.models import Command
from devices.selectors import command_state

logger = logging.getLogger("iotgw.devices")


async def command_announce(layer: Layer, command: Command, *, buckets: int) -> None:
    """Show a command's state to its device's dashboards and, if it is queued, nudge the bridges."""
    push = PushBatch(buckets=buckets)
    push.frame(command.device_id, command_frame(command_state(command)))
    sends = [push_send(layer, push)]
    if command.status == Command.QUEUED:
        # The nudges go with the push, not after its Redis round trips (7 ms of a command's ~40 ms round trip,
        # traced). The push is sent first, and the bridge's next frame for the command needs a transaction and
        # the device's PUBACK before it goes, so dashboards still see `queued` first in practice (frames carry
        # `updated_at` for the rare case they do not, docs/commands.md).
        sends.append(layer.send(BRIDGE_CHANNEL, command_nudge(device_id=command.device_id,
                                                              command_id=str(command.id))))
        # And the web processes holding the device's WebSocket or waiting request (devices/inprocess.py).
        sends.append(layer.group_send(device_group(command.device_id),
                                      device_nudge(device_id=command.device_id, command_id=str(command.id))))
    await _all(sends, f"command {command.id}")


async def commands_announce(layer: Layer, commands: list[Command], *, buckets: int) -> None:
    """command_announce for a fleet-wide command: one push for every device's frame, one nudge for all."""
    push = PushBatch(buckets=buckets)
    for command in commands:
        push.frame(command.device_id, command_frame(command_state(command)))
    sends = [push_send(layer, push)]
    if any(command.status == Command.QUEUED for command in commands):
        sends.append(layer.send(BRIDGE_CHANNEL, sweep_nudge()))
    await _all(sends, f"{len(commands)} commands")


async def _all(sends: Sequence[Awaitable[None]], what: str) -> None:
    """Run the sends side by side; a failed one is logged (e.g. Redis away: the bridges' sweep finds the command
    within a second of seeing it)."""
    for outcome in await asyncio.gather(*sends, return_exceptions=True):
        if isinstance(outcome, Exception):
            logger.warning("%s stored but not announced: %s", what, outcome)
