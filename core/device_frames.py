"""The WebSocket device's frames (SPEC §11): what a device sends on `/ws/device/`, and what it is sent; pure.

A device frame is a JSON object with a `type` and an optional `ref` (echoed in the answer):

    {"type": "telemetry", "ref": 1, "data": {"temp": 21.5}}      data: one sample, or an array (SPEC §4)
    {"type": "status", "ref": 2, "online": false}
    {"type": "response", "ref": 3, "id": "<command id>", "status": "ok", "result": {...}}    (SPEC §6)
    {"type": "ping"}

The payload rules are the MQTT ones (core/payloads.py, core/wire.py): the same functions read them.
The device is sent `ack` once what a frame said is committed, `error` for a frame refused (at once),
`command` for a command, and `pong`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from core.errors import PayloadInvalid
from core.payloads import samples_of
from core.times import DEFAULT_MAX_SKEW, format_ts
from core.transport import Outbound, Said
from core.wire import check_ref, command_response_of, dumps

DEVICE_TYPES = ("telemetry", "status", "response", "ping")


@dataclass(frozen=True, slots=True)
class DeviceFrame:
    """One decoded device frame: its type, the device's reference, and what it said (nothing for a ping)."""

    kind: str
    ref: Any
    said: list[Said]


def decode_device_frame(text: str | bytes | None, *, device_id: str, received_at: datetime,
                        max_bytes: int, max_skew: timedelta = DEFAULT_MAX_SKEW) -> DeviceFrame:
    """Parse and check a device frame with the payload rules of SPEC §4 and §6; PayloadInvalid with a reason."""
    if text is None:
        raise PayloadInvalid("bad_request", "frames must be JSON text")
    if len(text) > max_bytes:
        raise PayloadInvalid("too_large", f"frame of {len(text)} bytes is over the {max_bytes}-byte limit")
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise PayloadInvalid("not_json", "frame is not valid JSON") from None
    if not isinstance(frame, dict) or frame.get("type") not in DEVICE_TYPES:
        raise PayloadInvalid("bad_request", f"frame type must be one of {', '.join(DEVICE_TYPES)}")
    ref = frame.get("ref")
    check_ref(ref)
    kind = frame["type"]
    if kind == "telemetry":
        if "data" not in frame:
            raise PayloadInvalid("bad_sample", "a telemetry frame carries its sample, or samples, in `data`")
        samples = samples_of(frame["data"], received_at=received_at, max_skew=max_skew)
        return DeviceFrame(kind, ref, [Said(device_id, samples=samples)])
    if kind == "status":
        if not isinstance(frame.get("online"), bool):
            raise PayloadInvalid("bad_status", "a status frame says `online`: true or false")
        return DeviceFrame(kind, ref, [Said(device_id, online=frame["online"])])
    if kind == "response":
        return DeviceFrame(kind, ref, [Said(device_id, response=command_response_of(frame))])
    return DeviceFrame(kind, ref, [])


def ack_frame(ref: Any) -> str:
    """What a frame said is stored (or, for a response, applied)."""
    return dumps({"type": "ack", "ref": ref})


def command_device_frame(command: Outbound) -> str:
    """A command as a WebSocket device receives it: the MQTT command payload (SPEC §6) with `type`."""
    return dumps({"type": "command", "id": str(command.command_id), "name": command.name,
                  "params": command.params, "expires_at": format_ts(command.expires_at)})
