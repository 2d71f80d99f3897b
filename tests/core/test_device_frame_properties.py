"""Properties of the WebSocket device's frame parser and of the device credentials parser: whatever a device
sends, the answer is what it said under the payload rules of SPEC §4 and §6, or PayloadInvalid, never another
exception; and a frame that parses means exactly what the MQTT payload with the same content means."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.credentials import device_credentials
from core.device_frames import DEVICE_TYPES, ack_frame, command_device_frame, decode_device_frame
from core.errors import PayloadInvalid
from core.payloads import Sample, parse_samples
from core.times import format_ts
from core.transport import Outbound

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SKEW = timedelta(days=1)
MAX = 4096

ANY_TEXT = st.text(st.characters(codec=None, categories=None, exclude_categories=()), max_size=30)
scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | ANY_TEXT
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(ANY_TEXT, inner, max_size=3), max_leaves=10)
samples = st.dictionaries(st.from_regex(r"\A[A-Za-z0-9_.:-]{1,8}\Z") | st.just("ts"),
                          scalars | st.integers(min_value=0, max_value=2 * 10**12), min_size=1, max_size=4)
frames = st.fixed_dictionaries(
    {"type": st.sampled_from([*DEVICE_TYPES, "other"]) | ANY_TEXT},
    optional={"ref": json_values, "data": samples | st.lists(samples, max_size=4) | json_values,
              "online": json_values, "id": st.uuids().map(str) | json_values,
              "status": st.sampled_from(["ok", "error"]) | json_values, "result": json_values,
              "error": json_values})
texts = (frames.map(json.dumps) | st.binary(max_size=80) | ANY_TEXT | json_values.map(json.dumps))


@settings(max_examples=800, deadline=None)
@given(texts)
@example('{"type": "telemetry", "data": []}')
@example('{"type": "telemetry", "ref": true, "data": {"x": 1}}')
@example('{"type": "status", "online": 1}')
@example('{"type": "telemetry", "data": {"0": -9223372036854775809}}')
@example('{"type": "response", "id": "x", "status": "ok", "result": "\\u0000"}')
def test_any_frame_is_what_it_says_or_payload_invalid(text):
    try:
        frame = decode_device_frame(text, device_id="d1", received_at=NOW, max_bytes=MAX, max_skew=SKEW)
    except PayloadInvalid as exc:
        assert exc.reason and str(exc)
        return
    assert frame.kind in DEVICE_TYPES
    orjson.dumps(ack_frame(frame.ref))  # whatever ref it kept, the ack carries it
    for said in frame.said:
        assert said.device_id == "d1"
        for sample in said.samples:
            assert sample.data and sample.ts.tzinfo is not None and sample.ts <= NOW + SKEW
            orjson.dumps(sample.data)
    if frame.kind == "telemetry":
        doc = orjson.loads(text)  # as the edge reads it: an integer past 64 bits is a float there, not an int
        mqtt = parse_samples(orjson.dumps(doc["data"]), received_at=NOW, max_bytes=MAX * 2, max_skew=SKEW)
        assert list(frame.said[0].samples) == mqtt, "the same samples as the MQTT payload with that content"


def test_a_frame_over_the_limit_is_refused_before_it_is_parsed():
    with pytest.raises(PayloadInvalid) as refused:
        decode_device_frame("x" * (MAX + 1), device_id="d1", received_at=NOW, max_bytes=MAX)
    assert refused.value.reason == "too_large"


def test_a_command_frame_is_the_mqtt_command_payload_with_its_type():
    command = Outbound(command_id=uuid.uuid4(), device_id="d1", name="reboot", params={"in": [1, 2]},
                       expires_at=NOW)
    frame = json.loads(command_device_frame(command))
    assert frame == {"type": "command", "id": str(command.command_id), "name": "reboot", "params": {"in": [1, 2]},
                     "expires_at": format_ts(NOW)}


def test_status_and_ping_frames():
    status = decode_device_frame('{"type":"status","online":false,"ref":"s"}', device_id="d1", received_at=NOW,
                                 max_bytes=MAX)
    assert (status.ref, status.said[0].online) == ("s", False)
    assert decode_device_frame('{"type":"ping"}', device_id="d1", received_at=NOW, max_bytes=MAX).said == []
    telemetry = decode_device_frame('{"type":"telemetry","data":{"t":1}}', device_id="d1", received_at=NOW,
                                    max_bytes=MAX)
    assert telemetry.said[0].samples == [Sample(ts=NOW, data={"t": 1}, assigned=True)]


@settings(max_examples=500, deadline=None)
@given(st.one_of(ANY_TEXT, st.binary(max_size=40).map(lambda b: "Basic " + base64.b64encode(b).decode()),
                 ANY_TEXT.map(lambda t: "Bearer " + t), st.none()), st.none() | st.just("d1"))
def test_any_authorization_header_gives_credentials_or_none(header, named):
    credentials = device_credentials(header, device_id=named)
    if credentials is not None:
        device_id, secret = credentials
        assert isinstance(device_id, str) and isinstance(secret, str) and device_id
        if named is not None:
            assert device_id == named


def test_basic_and_bearer_credentials():
    basic = "Basic " + base64.b64encode(b"d1:s3cret").decode()
    assert device_credentials(basic) == ("d1", "s3cret")
    assert device_credentials(basic, device_id="d2") is None, "the URL names another device"
    assert device_credentials("Bearer s3cret", device_id="d1") == ("d1", "s3cret")
    assert device_credentials("Bearer s3cret") is None, "a bearer secret needs the device id from the URL"
