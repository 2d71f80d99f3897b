"""Property tests of the dashboard frame parsers and encoders (core/wire.py): whatever a client sends,
the answer is a value every store and encoder takes, or PayloadInvalid, never another exception."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.errors import PayloadInvalid
from core.wire import (
    CLIENT_TYPES,
    command_frame,
    command_payload,
    command_request,
    decode_client_frame,
    error_frame,
    snapshot_frames,
    telemetry_frame,
    telemetry_frames,
)

# Any code point, lone surrogates and NUL included (JSON can escape them; Python's json parses them).
ANY_TEXT = st.text(st.characters(codec=None, categories=None, exclude_categories=()), max_size=40)
DEVICE_IDS = st.one_of(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,8}", fullmatch=True), ANY_TEXT)
NUMBERS = st.one_of(st.integers(min_value=-(2**80), max_value=2**80),
                    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none())
JSON = st.recursive(st.one_of(NUMBERS, ANY_TEXT),
                    lambda inner: st.one_of(st.lists(inner, max_size=4),
                                            st.dictionaries(ANY_TEXT, inner, max_size=4)),
                    max_leaves=30)
COMMAND_FIELDS = st.fixed_dictionaries(
    {"type": st.just("command"), "device": DEVICE_IDS},
    optional={"name": st.one_of(st.sampled_from(["reboot", "set.rate", "x:y"]), ANY_TEXT, NUMBERS),
              "params": st.one_of(st.dictionaries(ANY_TEXT, JSON, max_size=4), JSON),
              "timeout": st.one_of(NUMBERS, ANY_TEXT), "expires_in": NUMBERS, "oneway": JSON,
              "idempotency_key": st.one_of(ANY_TEXT, NUMBERS), "ref": st.one_of(ANY_TEXT, NUMBERS, JSON)},
)


# A ref comes back exactly to a JavaScript client only up to 2**53 - 1.
MAX_REF_INT = 2**53 - 1


def storable(value) -> bool:
    """What PostgreSQL's text and jsonb and orjson all take unchanged: no NUL, valid UTF-8, finite numbers."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return "\x00" not in value
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**64
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(storable(v) for v in value)
    if isinstance(value, dict):
        return all(storable(k) and storable(v) for k, v in value.items())
    return False


@settings(max_examples=300)
@given(st.one_of(st.none(), ANY_TEXT, JSON.map(lambda v: json.dumps(v, allow_nan=True)),
                 st.builds(lambda t, extra: json.dumps({"type": t, **extra}), st.sampled_from(CLIENT_TYPES),
                           st.dictionaries(st.sampled_from(["devices", "ref", "device", "name"]), JSON))))
@example('{"type": "subscribe", "devices": ["abc\\n"]}')
@example('{"type": "ping", "ref": ' + "[" * 300 + "]" * 300 + "}")
def test_any_text_is_a_frame_or_payload_invalid(text):
    try:
        frame = decode_client_frame(text)
    except PayloadInvalid as exc:
        assert exc.reason == "bad_request"
        return
    assert frame["type"] in CLIENT_TYPES
    if frame["type"] in ("subscribe", "unsubscribe"):
        assert frame["devices"] == "*" or all(isinstance(d, str) and d.isascii() and "\n" not in d
                                              for d in frame["devices"])
    orjson.loads(error_frame("bad_request", "x", frame.get("ref")))  # any ref echoes, or is left out


@settings(max_examples=500)
@given(COMMAND_FIELDS)
@example({"type": "command", "device": "d1", "name": "reboot", "ref": 2**70})
@example({"type": "command", "device": "d1", "name": "reboot", "params": {"x": float("nan")}})
@example({"type": "command", "device": "d1", "name": "reboot", "idempotency_key": "k\x00"})
@example({"type": "command", "device": "d1", "name": "reboot", "params": {"\ud800": 1}})
def test_an_accepted_command_can_be_stored_answered_and_published(frame):
    try:
        request = command_request(frame)
    except PayloadInvalid as exc:
        assert exc.reason == "bad_request"
        return
    assert storable(request["params"]) and storable(request["idempotency_key"])
    ref = request["ref"]
    assert ref is None or isinstance(ref, str) and storable(ref) or -MAX_REF_INT <= ref <= MAX_REF_INT
    state = {"id": "00000000-0000-0000-0000-000000000001", "device": request["device_id"], "name": request["name"],
             "status": "queued", "result": None, "error": None, "ref": ref, "updated_at": "2026-01-01T00:00:00+00:00"}
    assert orjson.loads(command_frame(state))["ref"] == ref
    payload = command_payload(command_id=state["id"], name=request["name"], params=request["params"],
                              expires_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert orjson.loads(payload)["params"] == request["params"]
    # What PostgreSQL's jsonb would be handed (Django encodes JSONField values with the json module).
    json.dumps(request["params"], allow_nan=False).encode()


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FRAGMENTS = st.lists(st.dictionaries(st.text(max_size=8), st.one_of(INT64, st.text(max_size=900)),
                                     max_size=6).map(lambda d: orjson.dumps(d).decode()), max_size=60)


@given(FRAGMENTS, st.integers(min_value=2_000, max_value=70_000))
def test_telemetry_frames_keep_every_item_in_order_under_the_cap(fragments, cap):
    frames = telemetry_frames(fragments, cap)
    items = [item for text in frames for item in orjson.loads(text)["items"]]
    assert items == [orjson.loads(f) for f in fragments]
    # Only an item too large for any frame gets one of its own over the cap.
    assert all(len(text.encode()) <= cap or len(orjson.loads(text)["items"]) == 1 for text in frames)
    assert frames or not fragments
    assert telemetry_frame([]) == '{"type":"telemetry","items":[]}'


@given(st.lists(st.fixed_dictionaries({"id": st.text(max_size=64), "name": st.text(max_size=200),
                                        "latest": st.dictionaries(st.text(max_size=8), INT64, max_size=5)}),
                max_size=80), st.integers(min_value=2_000, max_value=70_000))
def test_snapshot_parts_hold_every_device_and_only_the_last_lacks_more(devices, cap):
    texts = snapshot_frames(devices, cap)
    assert all(len(text.encode()) <= cap or len(orjson.loads(text)["devices"]) == 1 for text in texts)
    frames = [orjson.loads(text) for text in texts]
    assert [d for f in frames for d in f["devices"]] == devices
    assert [f.get("more", False) for f in frames] == [True] * (len(frames) - 1) + [False]
