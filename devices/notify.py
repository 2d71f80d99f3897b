"""Telling the other processes about a stored command, over the channel layer; best-effort by design.

The command is in the database before this runs: a lost frame only means a dashboard
learns of it from the next one, a lost nudge that the bridges' sweep finds it instead.
"""

from __future__ import annotations

import logging

from core.channels import BRIDGE_CHANNEL, command_nudge, device_group, device_nudge, sweep_nudge
from core.push import Layer, PushBatch, push_send
from core.wire import command_frame
from devices.models import Command
from devices.selectors import command_state

logger = logging.getLogger("iotgw.devices")


async def command_announce(layer: Layer, command: Command, *, buckets: int) -> None:
    """Show a command's state to its device's dashboards and, if it is queued, nudge the bridges."""
    try:
        push = PushBatch(buckets=buckets)
        push.frame(command.device_id, command_frame(command_state(command)))
        await push_send(layer, push)  # first, so dashboards see `queued` before the bridge's `sent`
        if command.status == Command.QUEUED:
            await layer.send(BRIDGE_CHANNEL, command_nudge(device_id=command.device_id, command_id=str(command.id)))
            # And the web processes holding the device's WebSocket or waiting request (devices/inprocess.py).
            await layer.group_send(device_group(command.device_id),
                                   device_nudge(device_id=command.device_id, command_id=str(command.id)))
    except Exception as exc:  # e.g. Redis away: the sweep publishes it within a second of the bridge seeing it
        logger.warning("command %s stored but not announced: %s", command.id, exc)


async def commands_announce(layer: Layer, commands: list[Command], *, buckets: int) -> None:
    """command_announce for a fleet-wide command: one push for every device's frame, one nudge for all."""
    try:
        push = PushBatch(buckets=buckets)
        for command in commands:
            push.frame(command.device_id, command_frame(command_state(command)))
        await push_send(layer, push)
        if any(command.status == Command.QUEUED for command in commands):
            await layer.send(BRIDGE_CHANNEL, sweep_nudge())
    except Exception as exc:
        logger.warning("%d commands stored but not announced: %s", len(commands), exc)
