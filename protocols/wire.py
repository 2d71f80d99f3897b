"""Pure encoding and validation of dashboard WebSocket frames (SPEC §7)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from devices.exceptions import PayloadInvalid
from protocols.payloads import DEVICE_ID_RE

MAX_DEVICES_PER_FRAME = 10_000
CLIENT_TYPES = ("subscribe", "unsubscribe", "command", "ping")


def format_ts(ts: datetime) -> str:
    """Fixed-width UTC ISO-8601 with microseconds: sorts as text in time order."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def dumps(frame: dict[str, Any]) -> str:
    """Encode a server frame as JSON text."""
    return orjson.dumps(frame).decode()


def error_frame(code: str, message: str, ref: Any = None) -> str:
    """An `error` frame; `ref` echoes the client's reference when it gave one."""
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if ref is not None:
        frame["ref"] = ref
    return dumps(frame)


def decode_client_frame(text: str | None) -> dict[str, Any]:
    """Parse and check a client frame; raises PayloadInvalid with a readable reason."""
    if text is None:
        raise PayloadInvalid("bad_request", "frames must be JSON text, not binary")
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise PayloadInvalid("bad_request", "frame is not valid JSON") from None
    if not isinstance(frame, dict) or frame.get("type") not in CLIENT_TYPES:
        raise PayloadInvalid("bad_request", f"frame type must be one of {', '.join(CLIENT_TYPES)}")
    if frame["type"] in ("subscribe", "unsubscribe"):
        frame["devices"] = _device_selection(frame.get("devices"))
    return frame


def _device_selection(devices: Any) -> list[str] | str:
    if devices == "*":
        return "*"
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        raise PayloadInvalid("bad_request", "devices must be a list of device ids or \"*\"")
    if len(devices) > MAX_DEVICES_PER_FRAME:
        raise PayloadInvalid("bad_request", f"at most {MAX_DEVICES_PER_FRAME} devices per frame")
    bad = [d for d in devices if not DEVICE_ID_RE.match(d)]
    if bad:
        raise PayloadInvalid("bad_request", f"not a device id: {bad[0][:80]!r}")
    return devices


def telemetry_fragment(device_id: str, ts: datetime, data: dict[str, Any]) -> str:
    """One pre-encoded telemetry item, joined by consumers into a frame without re-encoding."""
    return orjson.dumps({"device": device_id, "ts": format_ts(ts), "data": data}).decode()


def telemetry_frame(fragments: list[str]) -> str:
    """A `telemetry` frame from pre-encoded items."""
    return '{"type":"telemetry","items":[' + ",".join(fragments) + "]}"


def status_frame(device_id: str, online: bool, ts: datetime) -> str:
    """A `status` frame."""
    return dumps({"type": "status", "device": device_id, "online": online, "ts": format_ts(ts)})
