"""Channel-layer names and messages the processes exchange: web → bridge nudges, socket closes.

The layer is lossy (SPEC §5): what must survive is in the database first, and these
messages only make the other side look sooner.
"""

from __future__ import annotations

import hashlib
from typing import Any

# The channel the bridge's consumer listens on (`runworker mqtt-bridge`, the `channel` route).
BRIDGE_CHANNEL = "mqtt-bridge"
# "command.nudge" calls BridgeConsumer.command_nudge(): look for queued commands of a device now.
NUDGE_TYPE = "command.nudge"
# "sockets.revoke" calls DashboardConsumer.sockets_revoke(): close with 4401.
SOCKET_CLOSE = "sockets.revoke"


# "device.nudge" on a device's group: a web process holding that device's connection looks for its commands.
DEVICE_NUDGE = "device.nudge"


def device_group(device_id: str) -> str:
    """The group of the web processes holding a connection of this device (a WebSocket, a waiting request)."""
    return f"iotgw.device.{device_id}"


def device_nudge(*, device_id: str, command_id: str) -> dict[str, Any]:
    """The message that tells a web process a command of a device it holds is queued."""
    return {"type": DEVICE_NUDGE, "device": device_id, "id": command_id}


def command_nudge(*, device_id: str, command_id: str) -> dict[str, Any]:
    """The message that tells a bridge a command of `device_id` is queued."""
    return {"type": NUDGE_TYPE, "device": device_id, "id": command_id}


def sweep_nudge() -> dict[str, Any]:
    """The message that tells a bridge to look for every queued command now (a fleet-wide command)."""
    return {"type": NUDGE_TYPE}


# Every dashboard socket joins the groups below, so that revoking a token, logging out
# or disabling a user can end it. The layer is lossy: the socket also re-checks its
# credentials every IOTGW_WS_RECHECK_SECONDS, so a lost message only delays the close.
def user_group(user_id: int) -> str:
    """The group of every socket of a user."""
    return f"iotgw.user.{user_id}"


def token_group(token_id: int) -> str:
    """The group of the sockets opened with one API token."""
    return f"iotgw.token.{token_id}"


def session_group(session_key: str) -> str:
    """The group of the sockets opened with one Django session (by a hash of its key)."""
    return "iotgw.session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]
