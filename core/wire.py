"""Pure encoding and validation of dashboard WebSocket frames (SPEC §7)."""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from core.errors import PayloadInvalid
from core.ids import DEVICE_ID_RE
from core.payloads import decode_json, holds_nul, storable_text
from core.times import format_ts

MAX_DEVICES_PER_FRAME = 10_000
CLIENT_TYPES = ("subscribe", "unsubscribe", "command", "ping")


def dumps(frame: dict[str, Any]) -> str:
    """Encode a server frame as JSON text."""
    return orjson.dumps(frame).decode()


def error_frame(code: str, message: str, ref: Any = None) -> str:
    """An `error` frame; `ref` echoes the client's reference when it gave one."""
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if ref is not None:
        try:
            return dumps({**frame, "ref": ref})
        except TypeError:  # a ref no frame can carry (nested past orjson's depth): answer without it
            pass
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
    bad = [d for d in devices if not DEVICE_ID_RE.fullmatch(d)]
    if bad:
        raise PayloadInvalid("bad_request", f"not a device id: {bad[0][:80]!r}")
    return devices


def telemetry_fragment(device_id: str, ts_text: str, data: dict[str, Any]) -> str:
    """One pre-encoded telemetry item (`ts_text` as format_ts wrote it), joined into frames without re-encoding."""
    return orjson.dumps({"device": device_id, "ts": ts_text, "data": data}).decode()


def telemetry_frame(fragments: list[str]) -> str:
    """A `telemetry` frame from pre-encoded items."""
    return '{"type":"telemetry","items":[' + ",".join(fragments) + "]}"


def _packed(fragments: list[str], max_bytes: int, envelope: int) -> list[list[str]]:
    """Greedy runs of pre-encoded items whose frame, with its envelope, stays within `max_bytes`."""
    runs: list[list[str]] = []
    run: list[str] = []
    size = envelope
    for f in fragments:
        n = (len(f) if f.isascii() else len(f.encode())) + 1
        if run and size + n > max_bytes:
            runs.append(run)
            run, size = [], envelope
        run.append(f)
        size += n
    if run:
        runs.append(run)
    return runs


def telemetry_frames(fragments: list[str], max_bytes: int) -> list[str]:
    """`telemetry` frames of at most `max_bytes` each (Daphne refuses to send a larger one)."""
    return [telemetry_frame(run) for run in _packed(fragments, max_bytes, 32)]


def snapshot_frames(devices: list[dict[str, Any]], max_bytes: int) -> list[str]:
    """A snapshot in frames of at most `max_bytes`; all but the last carry `"more": true`."""
    runs = _packed([orjson.dumps(d).decode() for d in devices], max_bytes, 48) or [[]]
    return [
        '{"type":"snapshot","devices":[' + ",".join(run) + ("]}" if i == len(runs) - 1 else '],"more":true}')
        for i, run in enumerate(runs)
    ]


def status_frame(device_id: str, online: bool, ts: datetime) -> str:
    """A `status` frame."""
    return dumps({"type": "status", "device": device_id, "online": online, "ts": format_ts(ts)})


ALARM_FRAME_KEYS = ("id", "device", "rule", "rule_name", "kind", "severity", "state", "value", "message", "first_seen",
                    "last_seen", "retriggers", "acknowledged_at", "acknowledged_by", "ack_note", "cleared_at",
                    "cleared_by")


def alarm_frame(state: dict[str, Any], *, event: str) -> str:
    """An `alarm` frame: an alarm's state after the transition `event` (raised, acknowledged, retriggered, cleared)."""
    return dumps({"type": "alarm", "event": event, **{k: state.get(k) for k in ALARM_FRAME_KEYS}})


# --- commands (SPEC §6, §7) -----------------------------------------------------

COMMAND_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
DEFAULT_TIMEOUT = 30.0
DEFAULT_EXPIRES_IN = 3600.0
MAX_TIMEOUT = 86_400.0
MAX_EXPIRES_IN = 30 * 86_400.0
MAX_PARAMS_BYTES = 16 * 1024
MAX_KEY = 128
MAX_ERROR_TEXT = 1000
# A ref is echoed to JavaScript dashboards, whose numbers are exact only up to 2**53.
MAX_REF_INT = 2**53 - 1
# orjson encodes integers of 64 bits at most (signed or unsigned).
INT_RANGE = range(-(2**63), 2**64)
MAX_PARAMS_DEPTH = 32
# Under the 64 KiB WebSocket frame cap (IOTGW_WS_MAX_FRAME) with room to spare.
MAX_COMMAND_FRAME = 48 * 1024
COMMAND_FRAME_KEYS = ("id", "device", "name", "status", "result", "error", "ref", "updated_at")


def _seconds(value: Any, what: str, default: float, maximum: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PayloadInvalid("bad_request", f"{what} must be a number of seconds")
    if not 0 < value <= maximum:
        raise PayloadInvalid("bad_request", f"{what} must be above 0 and at most {maximum:g} seconds")
    return float(value)


def _plain_json(value: Any, depth: int = 0) -> bool:
    """JSON that round-trips through orjson, PostgreSQL's jsonb and SQLite alike (finite numbers, clean text)."""
    if value is None or isinstance(value, (bool, str)):
        return not isinstance(value, str) or storable_text(value)
    if isinstance(value, int):
        return value in INT_RANGE
    if isinstance(value, float):
        return math.isfinite(value)
    if depth >= MAX_PARAMS_DEPTH:
        return False
    if isinstance(value, list):
        return all(_plain_json(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and storable_text(k) and _plain_json(v, depth + 1) for k, v in value.items())
    return False


def _check_params(params: Any) -> dict[str, Any]:
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise PayloadInvalid("bad_request", "params must be a JSON object")
    try:
        encoded = orjson.dumps(params)
    except TypeError:
        raise PayloadInvalid("bad_request", "params must be plain JSON") from None
    if len(encoded) > MAX_PARAMS_BYTES:
        raise PayloadInvalid("bad_request", f"params are over {MAX_PARAMS_BYTES} bytes")
    if not _plain_json(params):
        raise PayloadInvalid("bad_request", "params must be plain JSON: finite numbers, 64-bit integers, "
                             f"text without NUL, at most {MAX_PARAMS_DEPTH} levels deep")
    return params


def check_ref(ref: Any) -> None:
    """A client's reference, echoed in frames: a safe integer or a short string without NUL."""
    if ref is None:
        return
    if isinstance(ref, str) and len(ref) <= MAX_KEY and storable_text(ref):
        return
    if isinstance(ref, int) and not isinstance(ref, bool) and -MAX_REF_INT <= ref <= MAX_REF_INT:
        return
    raise PayloadInvalid("bad_request", f"ref must be an integer of at most 2**53-1 in magnitude, or a string "
                         f"of at most {MAX_KEY} characters without NUL")


def command_fields(
    *,
    name: Any,
    params: Any = None,
    timeout: Any = None,
    expires_in: Any = None,
    oneway: Any = False,
    idempotency_key: Any = None,
    ref: Any = None,
) -> dict[str, Any]:
    """Check a command's fields and fill in the defaults; raises PayloadInvalid naming the bad one."""
    if not isinstance(name, str) or not COMMAND_NAME_RE.fullmatch(name):
        raise PayloadInvalid("bad_request", f"command name must match {COMMAND_NAME_RE.pattern}")
    params = _check_params(params)
    if not isinstance(oneway, bool):
        raise PayloadInvalid("bad_request", "oneway must be true or false")
    key = idempotency_key
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= MAX_KEY or not storable_text(key)):
        raise PayloadInvalid("bad_request", f"idempotency_key must be a string of 1 to {MAX_KEY} characters "
                             "without NUL")
    check_ref(ref)
    return {
        "name": name,
        "params": params,
        "timeout": _seconds(timeout, "timeout", DEFAULT_TIMEOUT, MAX_TIMEOUT),
        "expires_in": _seconds(expires_in, "expires_in", DEFAULT_EXPIRES_IN, MAX_EXPIRES_IN),
        "oneway": oneway,
        "idempotency_key": idempotency_key,
        "ref": ref,
    }


def command_request(frame: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `command_issue` from a client `command` frame, checked."""
    device = frame.get("device")
    if not isinstance(device, str) or not DEVICE_ID_RE.fullmatch(device):
        raise PayloadInvalid("bad_request", "device must be a device id")
    fields = {k: frame.get(k) for k in ("params", "timeout", "expires_in", "idempotency_key", "ref")}
    return {"device_id": device, **command_fields(name=frame.get("name"), oneway=frame.get("oneway", False), **fields)}


def command_frame(state: dict[str, Any], *, max_bytes: int = MAX_COMMAND_FRAME) -> str:
    """A `command` frame from a command's state (see devices.selectors.command_state).

    A device's result can be as large as its payload limit; a frame that would pass
    `max_bytes` carries `"result": null, "result_truncated": true` instead (the HTTP
    API has the whole result), since Daphne drops a socket sent an oversized frame.
    """
    frame = {"type": "command", **{k: state.get(k) for k in COMMAND_FRAME_KEYS}}
    text = dumps(frame)
    if len(text) > max_bytes:
        text = dumps({**frame, "result": None, "result_truncated": True})
    return text


def command_payload(*, command_id: str, name: str, params: dict[str, Any], expires_at: datetime) -> bytes:
    """What the device receives on devices/{id}/commands."""
    return orjson.dumps({"id": command_id, "name": name, "params": params, "expires_at": format_ts(expires_at)})


@dataclass(frozen=True, slots=True)
class CommandResponse:
    """A device's answer on devices/{id}/commands/response, checked (a profile's answer may carry no id)."""

    # None: the answer names no command (firmwares without ids); it answers the device's oldest sent command.
    command_id: uuid.UUID | None
    ok: bool
    result: Any
    error: str


def parse_command_response(payload: bytes, *, max_bytes: int) -> CommandResponse:
    """Decode `{"id", "status": "ok"|"error", "result", "error"}`; raises PayloadInvalid with a reason."""
    return command_response_of(decode_json(payload, max_bytes=max_bytes))


def command_response_of(doc: Any) -> CommandResponse:
    """The command response in a decoded document; raises PayloadInvalid with a reason."""
    if not isinstance(doc, dict):
        raise PayloadInvalid("bad_response", "a command response must be a JSON object")
    if doc.get("status") not in ("ok", "error"):
        raise PayloadInvalid("bad_response", "status must be 'ok' or 'error'")
    error = doc.get("error")
    if error is not None and not isinstance(error, str):
        raise PayloadInvalid("bad_response", "error must be a string")
    if holds_nul(doc.get("result")) or holds_nul(error):  # the database would refuse the whole batch
        raise PayloadInvalid("bad_response", "result and error must not hold a NUL character (\\u0000)")
    try:
        command_id = uuid.UUID(doc.get("id"))
    except (TypeError, ValueError, AttributeError):
        raise PayloadInvalid("response_unknown", "id is not a command id") from None
    return CommandResponse(command_id=command_id, ok=doc["status"] == "ok", result=doc.get("result"),
                           error=(error or "")[:MAX_ERROR_TEXT])
