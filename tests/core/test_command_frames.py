"""Pure validation and encoding of command frames and device responses (SPEC §6, §7)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from core.errors import PayloadInvalid
from core.wire import (
    DEFAULT_EXPIRES_IN,
    DEFAULT_TIMEOUT,
    command_frame,
    command_payload,
    command_request,
    parse_command_response,
)


def frame(**fields) -> dict:
    return {"type": "command", "device": "pump-1", "name": "reboot", **fields}


def test_command_frame_gets_defaults():
    request = command_request(frame(ref="r1"))
    assert request == {
        "device_id": "pump-1", "name": "reboot", "params": {}, "timeout": DEFAULT_TIMEOUT,
        "expires_in": DEFAULT_EXPIRES_IN, "oneway": False, "idempotency_key": None, "ref": "r1",
    }


def test_command_frame_keeps_given_fields():
    request = command_request(frame(params={"delay": 5}, timeout=2, expires_in=10.5, oneway=True,
                                    idempotency_key="k-1", ref=7))
    assert request["params"] == {"delay": 5} and request["timeout"] == 2.0 and request["expires_in"] == 10.5
    assert request["oneway"] is True and request["idempotency_key"] == "k-1" and request["ref"] == 7


@pytest.mark.parametrize(
    "fields",
    [
        {"device": "a/b"},
        {"device": None},
        {"name": ""},
        {"name": "re boot"},
        {"name": 5},
        {"params": [1, 2]},
        {"params": {"blob": "x" * 20_000}},
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": True},
        {"timeout": "30"},
        {"timeout": 10**9},
        {"expires_in": 0},
        {"oneway": "yes"},
        {"idempotency_key": ""},
        {"idempotency_key": 5},
        {"idempotency_key": "k" * 200},
        {"ref": {"a": 1}},
        {"ref": "r" * 200},
    ],
)
def test_bad_command_frame_is_rejected(fields):
    with pytest.raises(PayloadInvalid) as exc:
        command_request(frame(**fields))
    assert exc.value.reason == "bad_request"


def test_command_frame_carries_exactly_the_spec_keys():
    text = command_frame({"id": "i", "device": "d", "name": "n", "status": "sent", "result": None, "error": None,
                          "ref": "r", "updated_at": "t", "history": [], "params": {}})
    assert orjson.loads(text) == {"type": "command", "id": "i", "device": "d", "name": "n", "status": "sent",
                                  "result": None, "error": None, "ref": "r", "updated_at": "t"}


def test_command_payload_is_what_the_device_gets():
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    doc = orjson.loads(command_payload(command_id="c1", name="reboot", params={"x": 1}, expires_at=at))
    assert doc == {"id": "c1", "name": "reboot", "params": {"x": 1}, "expires_at": "2026-01-02T03:04:05.000000+00:00"}


def test_ok_and_error_responses_parse():
    cid = uuid.uuid4()
    ok = parse_command_response(orjson.dumps({"id": str(cid), "status": "ok", "result": {"up": 1}}), max_bytes=1000)
    assert ok.command_id == cid and ok.ok and ok.result == {"up": 1} and ok.error == ""
    err = parse_command_response(orjson.dumps({"id": str(cid), "status": "error", "error": "busy"}), max_bytes=1000)
    assert not err.ok and err.error == "busy"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not_json"),
        (b"\xff\xfe", "not_utf8"),
        (b"[1]", "bad_response"),
        (b'{"id": "x", "status": "maybe"}', "bad_response"),
        (b'{"id": "00000000-0000-0000-0000-000000000000", "status": "error", "error": 5}', "bad_response"),
        (b'{"id": "not-a-uuid", "status": "ok"}', "response_unknown"),
        (b'{"status": "ok"}', "response_unknown"),
        (b'{"id": "' + b"x" * 2000 + b'", "status": "ok"}', "too_large"),
    ],
)
def test_bad_response_is_rejected_with_a_reason(payload, reason):
    with pytest.raises(PayloadInvalid) as exc:
        parse_command_response(payload, max_bytes=1000)
    assert exc.value.reason == reason


def test_command_frame_drops_a_result_too_large_for_a_websocket_frame():
    state = {"id": "i", "device": "d", "name": "n", "status": "succeeded", "result": "x" * 70_000}
    frame = orjson.loads(command_frame(state))
    assert frame["result"] is None and frame["result_truncated"] is True and frame["status"] == "succeeded"
    assert orjson.loads(command_frame(dict(state, result="small")))["result"] == "small"
