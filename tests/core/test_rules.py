"""The rule engine and the router, alone: documented firmware payloads in, samples and commands out; fuzzed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import PayloadInvalid
from core.ids import METRIC_RE, child_device_id, is_device_id
from core.profiles import IOTGW, Directory, Member, ProfileDef, covering, topic_matches
from core.profilespec import SpecInvalid, parse_spec
from core.router import DecoderCodec, ProfileRouter
from core.rules import flatten, parse_value
from core.transport import Outbound, Said
from devices.builtin_profiles import BUILTIN

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MEMBERS = {
    "tasmota_1": Member("tasmota"),
    "zigbee2mqtt": Member("zigbee2mqtt"),
    "zigbee2mqtt.lamp": Member("zigbee2mqtt", "zigbee2mqtt", "lamp"),
    "shellyplus1-a1": Member("shelly-gen2"),
    "esp1": Member("esphome"),
    "tbgw": Member("gateway-api"),
    "tbgw.Device.20A": Member("gateway-api", "tbgw", "Device A"),
}


def router(members=MEMBERS, profiles=None) -> ProfileRouter:
    r = ProfileRouter()
    r.update(profiles or [ProfileDef(n, k, s) for n, (k, _, s) in BUILTIN.items()], Directory.of(members))
    return r


def said(topic: str, payload: bytes | str, r: ProfileRouter | None = None) -> list[Said]:
    data = payload.encode() if isinstance(payload, str) else payload
    return (r or router())(topic, data, received_at=NOW)


def command(device_id: str, name: str, params: dict) -> tuple[str, bytes]:
    message = router().command_message(Outbound(uuid.UUID(int=7), device_id, name, params, NOW))
    return message.topic, message.payload


def test_tasmota_sensor_is_flattened_at_its_offset_less_time():
    [one] = said("tele/tasmota_1/SENSOR", '{"Time":"2019-01-01T00:00:00","AM2301":{"Temperature":24.6,'
                                         '"Humidity":58.2},"TempUnit":"C"}')
    assert one.device_id == "tasmota_1"
    assert one.samples[0].data == {"AM2301.Temperature": 24.6, "AM2301.Humidity": 58.2}
    assert one.samples[0].ts == datetime(2019, 1, 1, tzinfo=UTC)


def test_an_offset_less_time_is_read_in_the_profiles_zone():
    spec = {"topics": [{"topic": "t/{device}", "role": "telemetry",
                        "time": {"field": "Time", "tz": "Europe/Berlin"}}]}
    r = router({"d": Member("berlin")}, [ProfileDef("berlin", "rules", spec)])
    [one] = said("t/d", '{"Time":"2019-07-01T12:00:00","x":1}', r)
    assert one.samples[0].ts == datetime(2019, 7, 1, 10, tzinfo=UTC)


def test_tasmota_lwt_and_result():
    assert said("tele/tasmota_1/LWT", "Online")[0].online is True
    assert said("tele/tasmota_1/LWT", "Offline")[0].online is False
    [answer] = said("stat/tasmota_1/RESULT", '{"POWER":"ON"}')
    assert answer.response.command_id is None and answer.response.ok and answer.response.result == {"POWER": "ON"}
    assert command("tasmota_1", "Power", {"value": "TOGGLE"}) == ("cmnd/tasmota_1/Power", b"TOGGLE")
    assert command("tasmota_1", "Status", {}) == ("cmnd/tasmota_1/Status", b"")


def test_zigbee2mqtt_children_speak_through_their_coordinator():
    state, answer = said("zigbee2mqtt/lamp", '{"state":"ON","brightness":200,"update":{"state":"idle"}}')
    assert state.device_id == "zigbee2mqtt.lamp" and state.child_of == ("zigbee2mqtt", "lamp")
    assert state.samples[0].data == {"state": "ON", "brightness": 200, "update.state": "idle"}
    assert answer.response is not None and answer.response.command_id is None
    assert said("zigbee2mqtt/lamp/availability", '{"state":"offline"}')[0].online is False
    assert said("zigbee2mqtt/lamp/availability", "online")[0].online is True  # the legacy plain payload
    assert said("zigbee2mqtt/bridge/state", '{"state":"online"}')[0].device_id == "zigbee2mqtt"
    assert said("zigbee2mqtt/lamp/set", '{"state":"ON"}') == []  # our own request, echoed
    assert command("zigbee2mqtt.lamp", "set", {"state": "ON"}) == ("zigbee2mqtt/lamp/set", b'{"state":"ON"}')


def test_shelly_notify_status_in_float_seconds_and_rpc_answers_by_id():
    [one] = said("shellyplus1-a1/events/rpc", '{"src":"shellyplus1-a1","method":"NotifyStatus","params":'
                                             '{"ts":1708179956.30,"switch:0":{"id":0,"apower":8.2,"output":true}}}')
    assert one.samples[0].ts == datetime(2024, 2, 17, 14, 25, 56, 300000, tzinfo=UTC)
    assert one.samples[0].data == {"switch:0.id": 0, "switch:0.apower": 8.2, "switch:0.output": True}
    assert said("shellyplus1-a1/events/rpc", '{"method":"NotifyEvent","params":{"ts":1,"events":[]}}') == []
    assert said("shellyplus1-a1/online", "false")[0].online is False
    topic, payload = command("shellyplus1-a1", "Switch.Set", {"id": 0, "on": True})
    assert topic == "shellyplus1-a1/rpc"
    assert orjson.loads(payload) == {"id": str(uuid.UUID(int=7)), "src": "shellyplus1-a1/iotgw",
                                     "method": "Switch.Set", "params": {"id": 0, "on": True}}
    [ok] = said("shellyplus1-a1/iotgw/rpc", orjson.dumps({"id": str(uuid.UUID(int=7)), "result": {"was_on": 0}}))
    assert ok.response.command_id == uuid.UUID(int=7) and ok.response.ok and ok.response.result == {"was_on": 0}
    [failed] = said("shellyplus1-a1/iotgw/rpc", orjson.dumps({"id": str(uuid.UUID(int=7)),
                                                             "error": {"code": -103, "message": "bad id"}}))
    assert not failed.response.ok and failed.response.error == "bad id"


def test_esphome_plain_states():
    assert said("esp1/sensor/temperature/state", "22.4")[0].samples[0].data == {"sensor.temperature": 22.4}
    assert said("esp1/switch/relay/state", "ON")[0].samples[0].data == {"switch.relay": True}
    assert said("esp1/sensor/temperature/state", "nan")[0].samples[0].data == {"sensor.temperature": None}
    assert said("esp1/status", "offline")[0].online is False
    assert command("esp1", "switch", {"entity": "relay", "value": "ON"}) == ("esp1/switch/relay/command", b"ON")


def test_gateway_api_children_by_name():
    [child] = said("v1/gateway/telemetry", '{"Device A":[{"ts":1483228800000,"values":{"temperature":42}}]}')
    assert child.device_id == "tbgw.Device.20A" and child.child_of == ("tbgw", "Device A")
    assert child.samples[0].ts == datetime(2017, 1, 1, tzinfo=UTC) and child.samples[0].data == {"temperature": 42}
    assert said("v1/gateway/connect", '{"device":"Device A"}')[0].online is True
    assert said("v1/gateway/disconnect", '{"device":"Device A"}')[0].online is False
    topic, payload = command("tbgw.Device.20A", "toggle", {"on": 1})
    assert topic == "v1/gateway/rpc"
    assert orjson.loads(payload) == {"device": "Device A", "data": {"id": str(uuid.UUID(int=7)), "method": "toggle",
                                                                    "params": {"on": 1}}}
    assert said("v1/gateway/rpc", payload) == []  # our own request, echoed back
    [answer] = said("v1/gateway/rpc", orjson.dumps({"device": "Device A", "id": str(uuid.UUID(int=7)),
                                                    "data": {"success": True}}))
    assert answer.device_id == "tbgw.Device.20A" and answer.response.result == {"success": True}


def test_a_topic_of_a_device_on_another_profile_is_refused_as_wrong_profile():
    with pytest.raises(PayloadInvalid) as refused:
        said("tele/not_tasmota/SENSOR", '{"x":1}')
    assert refused.value.reason == "wrong_profile"
    assert router().source("tele/not_tasmota/SENSOR") == "not_tasmota"


def test_a_topic_no_profile_claims_is_unclaimed():
    with pytest.raises(PayloadInvalid) as refused:
        said("nobody/knows/this/topic/at/all", "1")
    assert refused.value.reason == "unclaimed"


def test_the_default_profile_is_unchanged_and_unused_profiles_subscribe_nothing():
    r = router({})
    assert r.filters() == ["devices/#"]
    [one] = said("devices/d1/telemetry", '{"t":1}', r)
    assert one.device_id == "d1" and one.samples[0].data == {"t": 1}
    assert r.command_message(Outbound(uuid.UUID(int=1), "d1", "x", {}, NOW)).topic == "devices/d1/commands"


def test_filters_of_the_profiles_in_use_without_overlaps():
    filters = router().filters()
    assert "devices/#" in filters and "tele/+/SENSOR" in filters and "+/+" in filters
    assert "+/status" not in filters  # under +/+: a message must not arrive twice
    assert covering(["a/#", "a/b", "+/c", "x/+/c"]) == ["+/c", "a/#", "x/+/c"]


def test_a_code_backed_kind_plugs_in_with_its_replies():
    class Echo:
        def __init__(self) -> None:
            self.pending: list[tuple[str, bytes, int]] = []

        def __call__(self, topic, payload, *, received_at):
            self.pending.append(("echo/cmd", payload, 0))
            return [Said("e1", online=True)]

        def source(self, topic):
            return "e1"

        def replies(self):
            out, self.pending = self.pending, []
            return out

    from core import profiles

    decoder = Echo()
    profiles.KINDS["echo-test"] = lambda p, limits: DecoderCodec(
        p.name, decoder, filters=["echo/#"], encode=lambda c: ("echo/cmd", c.name.encode()))
    try:
        r = router({"e1": Member("echo")}, [ProfileDef("echo", "echo-test", {})])
        assert r("echo/x", b"hi", received_at=NOW)[0].online is True
        assert r.replies() == [("echo/cmd", b"hi", 0)] and r.replies() == []
        assert r.command_message(Outbound(uuid.UUID(int=1), "e1", "go", {}, NOW)).payload == b"go"
        r2 = router({"other": Member("echo")}, [ProfileDef("echo", "echo-test", {})])
        with pytest.raises(PayloadInvalid):  # e1 is not on the profile
            r2("echo/x", b"hi", received_at=NOW)
    finally:
        del profiles.KINDS["echo-test"]


def test_a_profile_unchanged_keeps_its_codec_across_refreshes():
    r = router()
    before = r._codecs["tasmota"]
    r.update([ProfileDef(n, k, s) for n, (k, _, s) in BUILTIN.items()], Directory.of(MEMBERS))
    assert r._codecs["tasmota"] is before


@pytest.mark.parametrize("spec, where", [
    ({"topics": []}, "topics"),
    ({"topics": [{"topic": "a/#/b", "role": "telemetry"}]}, "#"),
    ({"topics": [{"topic": "a/{x}/{x}", "role": "telemetry"}]}, "twice"),
    ({"topics": [{"topic": "a/{device}", "role": "telemetry", "format": "value"}]}, "metric"),
    ({"topics": [{"topic": "a/{device}", "role": "telemetry", "time": {"field": "t", "tz": "Mars/Base"}}]}, "zone"),
    ({"topics": [{"topic": "a/{device}", "role": "telemetry", "prefix": "{nope}."}]}, "capture"),
    ({"topics": [{"topic": "a", "role": "x"}]}, "role"),
    ({"topics": [{"topic": "a", "role": "ignore"}], "command": {"topic": "c/{params}"}}, "topic"),
    ({"topics": [{"topic": "a", "role": "ignore"}], "command": {"topic": "c", "payload": "{__class__}"}}, "unknown"),
    ({"topics": [{"topic": "a", "role": "ignore", "eval": "1"}]}, "eval"),
])
def test_a_broken_spec_is_refused_saying_where(spec, where):
    with pytest.raises(SpecInvalid) as refused:
        parse_spec(spec)
    assert where in str(refused.value)


def test_child_ids_follow_the_documented_rule():
    assert child_device_id("zigbee2mqtt", "Living Room") == "zigbee2mqtt.Living.20Room"
    assert child_device_id("gw", "0x00158d0001a2b3c4") == "gw.0x00158d0001a2b3c4"
    long = child_device_id("g" * 60, "child")
    assert len(long) == 64 and is_device_id(long) and long == child_device_id("g" * 60, "child")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=300),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=70), children, max_size=5),
    max_leaves=40)


@given(st.text(max_size=120), st.binary(max_size=300) | json_values.map(orjson.dumps))
@settings(max_examples=400, deadline=None)
def test_any_message_is_decoded_or_refused_with_a_reason(topic, payload):
    r = router()
    for t in (topic, f"tele/tasmota_1/{topic}", f"zigbee2mqtt/{topic}", f"esp1/sensor/{topic}/state",
              "v1/gateway/telemetry", "shellyplus1-a1/events/rpc", "zigbee2mqtt/lamp"):
        try:
            out = r(t, payload, received_at=NOW)
        except PayloadInvalid as exc:
            assert exc.reason
            continue
        for one in out:
            assert is_device_id(one.device_id)
            for sample in one.samples:
                assert all(METRIC_RE.match(name) for name in sample.data)
                assert sample.ts <= NOW + timedelta(days=1)


@given(json_values, st.text(max_size=30))
@settings(max_examples=300, deadline=None)
def test_flattening_gives_valid_bounded_metrics(doc, prefix):
    flat = flatten(doc, prefix)
    assert len(flat) <= 256
    for name, value in flat.items():
        assert METRIC_RE.match(name)
        assert value is None or isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 256
                                                                          and "\x00" not in value)


@given(st.text(max_size=300))
def test_a_plain_value_is_a_number_a_boolean_null_or_short_text(text):
    try:
        value = parse_value(text)
    except PayloadInvalid:
        return
    assert value is None or isinstance(value, bool | int | float | str)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_any_spec_document_is_accepted_or_refused_as_a_bad_profile(doc):
    try:
        parse_spec(doc)
    except SpecInvalid:
        pass
    try:
        parse_spec({"topics": [{"topic": "a/{device}", "role": "telemetry", "select": doc}]})
    except SpecInvalid:
        pass


@given(st.dictionaries(st.text(max_size=10), json_values, max_size=4), st.text(max_size=20))
@settings(max_examples=200, deadline=None)
def test_command_topics_never_hold_wildcards(params, entity):
    r = router()
    for device_id, name in (("esp1", "switch"), ("tasmota_1", "Power"), ("zigbee2mqtt.lamp", "set")):
        try:
            message = r.command_message(Outbound(uuid.uuid4(), device_id, name, {**params, "entity": entity}, NOW))
        except ValueError:
            continue
        assert not any(c in message.topic for c in "+#\x00") and "//" not in message.topic


@given(st.text(alphabet="ab/+#", max_size=12), st.text(alphabet="ab/", max_size=12))
def test_filter_matching_agrees_with_covering(filt, topic):
    if covering([filt, "a/#"]) == ["a/#"] and filt != "a/#" and topic_matches(filt, topic):
        assert topic_matches("a/#", topic)


def test_iotgw_is_the_default():
    assert Directory.of({}).profile_of("anyone") == IOTGW
