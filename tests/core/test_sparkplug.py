"""The Sparkplug B dialect: births, aliases, seq gaps and rebirths, deaths and bdSeq, commands confirmed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from core.errors import ConfigMissing, PayloadInvalid
from core.ids import child_device_id
from core.sparkplug.commands import state_payload
from core.sparkplug.decoder import SparkplugDecoder, node_device_id
from core.sparkplug.host import PrimaryHost
from core.sparkplug.sparkplug_b_pb2 import DataType, Payload
from core.sparkplug.topic import parse_topic
from core.times import EPOCH
from core.transport import Outbound
from testing.sparkplug import EdgeNode

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NOW_MS = int((NOW - EPOCH).total_seconds() * 1000)
T = "spBv1.0/Plant1/{}/Edge1"
D = "spBv1.0/Plant1/{}/Edge1/Pump 7"
NODE = "Plant1.Edge1"
PUMP = child_device_id(NODE, "Pump 7")


def decode(dec, topic, payload, at=NOW):
    return dec(topic, payload, received_at=at)


@pytest.fixture
def dec():
    return SparkplugDecoder(max_payload=65536)


@pytest.fixture
def node():
    return EdgeNode(now_ms=NOW_MS)


def born(dec, node):
    """An edge node with one device, born: NBIRTH then DBIRTH with aliases."""
    decode(dec, T.format("NBIRTH"), node.nbirth([
        {"name": "Properties/Hardware Make", "datatype": DataType.String, "value": "Acme", "alias": 1}]))
    decode(dec, D.format("DBIRTH"), node.next([
        {"name": "Inputs/Temperature", "alias": 10, "datatype": DataType.Float, "value": 21.5},
        {"name": "Outputs/Run", "alias": 11, "datatype": DataType.Boolean, "value": False},
        {"name": "Setpoint", "alias": 12, "datatype": DataType.Int16, "value": -3}]))


def test_the_node_is_group_dot_edge_and_its_devices_are_its_children():
    assert node_device_id("Plant1", "Edge1") == NODE
    assert node_device_id("Sparkplug B Devices", "Edge 1") == "Sparkplug.20B.20Devices.Edge.201"
    assert node_device_id("a.b", "c") != node_device_id("a", "b.c")
    assert len(node_device_id("x" * 60, "y" * 60)) <= 64
    assert PUMP == "Plant1.Edge1.Pump.207"


def test_nbirth_brings_the_node_online_with_its_metrics(dec, node):
    said = decode(dec, T.format("NBIRTH"), node.nbirth([
        {"name": "Properties/Hardware Make", "datatype": DataType.String, "value": "Acme"},
        {"name": "Uptime", "datatype": DataType.UInt64, "value": 2**64 - 1}]))
    assert [(s.device_id, s.online) for s in said] == [(NODE, True)]
    (sample,) = said[0].samples
    assert sample.ts == NOW and not sample.assigned
    assert sample.data == {"Properties.Hardware_Make": "Acme", "Uptime": 2**64 - 1}  # bdSeq, Node Control: not data


def test_dbirth_brings_the_device_online_and_ddata_by_alias_is_named(dec, node):
    born(dec, node)
    said = decode(dec, D.format("DDATA"), node.next([
        {"alias": 10, "value": 22.25, "datatype": DataType.Float, "timestamp": NOW_MS + 5},
        {"alias": 12, "value": -300, "timestamp": NOW_MS + 5}]))
    assert [(s.device_id, s.child_of) for s in said] == [(PUMP, (NODE, "Pump 7"))]
    (sample,) = said[0].samples
    assert sample.ts == NOW + timedelta(milliseconds=5)
    assert sample.data == {"Inputs.Temperature": 22.25, "Setpoint": -300}


def test_signed_integers_sign_extended_to_32_bits_read_as_negative(dec, node):
    decode(dec, T.format("NBIRTH"), node.nbirth([{"name": "i8", "datatype": DataType.Int8, "value": 0}]))
    said = decode(dec, T.format("NDATA"), node.next([{"name": "i8", "value": 2**32 - 1}]))  # -1, sign-extended
    assert said[0].samples[0].data == {"i8": -1}


def test_every_datatype_maps(dec, node):
    said = decode(dec, T.format("NBIRTH"), node.nbirth([
        {"name": "i8", "datatype": DataType.Int8, "value": -1},
        {"name": "i32", "datatype": DataType.Int32, "value": -2**31},
        {"name": "i64", "datatype": DataType.Int64, "value": -2**63},
        {"name": "u32", "datatype": DataType.UInt32, "value": 2**32 - 1},
        {"name": "d", "datatype": DataType.Double, "value": 1e300},
        {"name": "b", "datatype": DataType.Boolean, "value": True},
        {"name": "s", "datatype": DataType.Text, "value": "héllo"},
        {"name": "when", "datatype": DataType.DateTime, "value": NOW_MS},
        {"name": "n", "datatype": DataType.Double, "null": True}]))
    assert said[0].samples[0].data == {"i8": -1, "i32": -2**31, "i64": -2**63, "u32": 2**32 - 1, "d": 1e300,
                                       "b": True, "s": "héllo", "when": "2026-12-01T12:00:00.000000+00:00",
                                       "n": None}


def test_unsupported_metrics_are_skipped_and_counted(dec, node):
    payload = Payload(timestamp=NOW_MS, seq=0)
    ds = payload.metrics.add(name="Table", datatype=DataType.DataSet)
    ds.dataset_value.num_of_columns = 1
    payload.metrics.add(name="Blob", datatype=DataType.Bytes, bytes_value=b"\x00\x01")
    payload.metrics.add(name="T", datatype=DataType.Template).template_value.version = "1"
    payload.metrics.add(name="Nan", datatype=DataType.Float, float_value=float("nan"))
    payload.metrics.add(name="Long" * 20, datatype=DataType.Boolean, boolean_value=True)
    payload.metrics.add(name="ok", datatype=DataType.Boolean, boolean_value=True)
    said = decode(dec, T.format("NBIRTH"), payload.SerializeToString())
    assert said[0].online is True and said[0].samples[0].data == {"ok": True}
    assert dec.counts["skipped_unsupported_type"] == 3
    assert dec.counts["skipped_not_finite"] == 1 and dec.counts["skipped_name_invalid"] == 1


def test_metrics_with_their_own_timestamps_become_one_sample_per_time(dec, node):
    decode(dec, T.format("NBIRTH"), node.nbirth([{"name": "a", "datatype": DataType.Double, "value": 0.0}]))
    said = decode(dec, T.format("NDATA"), node.next([
        {"name": "a", "value": 1.0, "timestamp": NOW_MS - 2000},
        {"name": "a", "value": 2.0, "timestamp": NOW_MS - 1000},
        {"name": "a", "value": 9.0, "timestamp": NOW_MS + 10 * 86_400_000}]))  # far in the future: skipped
    assert [(s.ts, s.data) for s in said[0].samples] == [
        (NOW - timedelta(seconds=2), {"a": 1.0}), (NOW - timedelta(seconds=1), {"a": 2.0})]
    assert dec.counts["skipped_bad_timestamp"] == 1


def test_a_payload_without_timestamps_gets_the_receive_time(dec):
    payload = Payload(seq=0)
    payload.metrics.add(name="x", datatype=DataType.Boolean, boolean_value=False)
    (said,) = decode(dec, T.format("NBIRTH"), payload.SerializeToString())
    assert said.samples[0].ts == NOW and said.samples[0].assigned


def test_data_before_any_birth_is_rejected_and_asks_for_a_rebirth(dec, node):
    with pytest.raises(PayloadInvalid) as exc:
        decode(dec, T.format("NDATA"), node.next([{"alias": 1, "value": 3}]))
    assert exc.value.reason == "no_birth"
    (reply,) = dec.replies()
    topic, payload, qos = reply
    assert topic == "spBv1.0/Plant1/NCMD/Edge1" and qos == 0
    request = Payload.FromString(payload)
    assert [(m.name, m.datatype, m.boolean_value) for m in request.metrics] == [
        ("Node Control/Rebirth", DataType.Boolean, True)]
    assert dec.replies() == []  # drained


def test_rebirth_requests_are_rate_limited_per_node(dec, node):
    for i in range(5):
        with pytest.raises(PayloadInvalid):
            decode(dec, T.format("NDATA"), node.next([]), at=NOW + timedelta(seconds=i))
    assert len(dec.replies()) == 1
    with pytest.raises(PayloadInvalid):
        decode(dec, T.format("NDATA"), node.next([]), at=NOW + timedelta(seconds=6))
    assert len(dec.replies()) == 1


def test_ddata_of_a_device_never_born_is_rejected_and_asks_for_a_rebirth(dec, node):
    decode(dec, T.format("NBIRTH"), node.nbirth([]))
    with pytest.raises(PayloadInvalid, match="DBIRTH"):
        decode(dec, D.format("DDATA"), node.next([{"alias": 10, "value": 1.0}]))
    assert [r[0] for r in dec.replies()] == ["spBv1.0/Plant1/NCMD/Edge1"]


def test_a_seq_gap_asks_for_a_rebirth_but_keeps_the_data(dec, node):
    born(dec, node)
    node.skip()
    said = decode(dec, D.format("DDATA"), node.next([{"alias": 10, "value": 30.0}]))
    assert said[0].samples[0].data == {"Inputs.Temperature": 30.0}
    assert dec.counts["seq_gap"] == 1 and len(dec.replies()) == 1
    decode(dec, D.format("DDATA"), node.next([{"alias": 10, "value": 31.0}]))
    assert dec.counts["seq_gap"] == 1 and dec.replies() == []


def test_seq_wraps_from_255_to_0_without_a_gap(dec, node):
    born(dec, node)
    for _ in range(600):
        decode(dec, D.format("DDATA"), node.next([{"alias": 10, "value": 1.0}]))
    assert dec.counts["seq_gap"] == 0 and dec.replies() == []


def test_an_unknown_alias_is_skipped_and_asks_for_a_rebirth(dec, node):
    born(dec, node)
    said = decode(dec, D.format("DDATA"), node.next([{"alias": 99, "value": 1}, {"alias": 11, "value": True,
                                                                                  "datatype": DataType.Boolean}]))
    assert said[0].samples[0].data == {"Outputs.Run": True}
    assert dec.counts["skipped_unknown_alias"] == 1 and len(dec.replies()) == 1


def test_ndeath_with_the_birth_bdseq_takes_the_node_and_its_devices_offline(dec, node):
    born(dec, node)
    said = decode(dec, T.format("NDEATH"), node.ndeath())
    assert {(s.device_id, s.online) for s in said} == {(NODE, False), (PUMP, False)}
    with pytest.raises(PayloadInvalid, match="NBIRTH"):
        decode(dec, D.format("DDATA"), node.next([{"alias": 10, "value": 1.0}]))


def test_a_stale_ndeath_is_ignored(dec, node):
    stale = EdgeNode(bdseq=4, now_ms=NOW_MS).ndeath()
    node.bdseq = 5
    born(dec, node)
    assert decode(dec, T.format("NDEATH"), stale) == []
    assert dec.counts["stale_death"] == 1
    assert decode(dec, D.format("DDATA"), node.next([{"alias": 10, "value": 1.0}]))[0].samples


def test_ddeath_takes_only_that_device_offline(dec, node):
    born(dec, node)
    assert [(s.device_id, s.online) for s in decode(dec, D.format("DDEATH"), node.next([]))] == [(PUMP, False)]
    assert decode(dec, T.format("NDATA"), node.next([{"alias": 1, "value": "x"}]))[0].samples


def test_a_new_session_takes_the_devices_of_the_old_one_offline(dec, node):
    born(dec, node)
    node.bdseq = 1
    said = decode(dec, T.format("NBIRTH"), node.nbirth([]))
    assert [(s.device_id, s.online) for s in said] == [(PUMP, False), (NODE, True)]


def test_hosts_messages_and_state_say_nothing(dec):
    assert decode(dec, T.format("NCMD"), b"\xff") == []
    assert decode(dec, D.format("DCMD"), b"") == []
    assert decode(dec, "spBv1.0/STATE/scada", b'{"online":true}') == []


@pytest.mark.parametrize("topic", ["devices/x/telemetry", "spBv1.0/G/NBIRTH", "spBv1.0/G/DDATA/E",
                                   "spBv1.0/G/NDATA/E/D", "spBv1.0/G/NOPE/E", "spBv1.0/G/+/E", "spAv1.0/G/NDATA/E",
                                   "spBv1.0//NDATA/E"])
def test_other_topics_are_bad_topics(dec, topic):
    with pytest.raises(PayloadInvalid) as exc:
        decode(dec, topic, b"")
    assert exc.value.reason == "bad_topic"


def test_garbage_and_oversized_payloads_are_rejected():
    dec = SparkplugDecoder(max_payload=10)
    with pytest.raises(PayloadInvalid) as exc:
        decode(dec, T.format("NBIRTH"), b"\x0a\xff\xff")
    assert exc.value.reason == "not_protobuf"
    with pytest.raises(PayloadInvalid) as exc:
        decode(dec, T.format("NBIRTH"), b"\x00" * 11)
    assert exc.value.reason == "too_large"


def test_sources_are_the_node_and_device_ids(dec):
    assert dec.source(T.format("NDATA")) == NODE
    assert dec.source(D.format("DDATA")) == PUMP
    assert dec.source("elsewhere/x") == "elsewhere/x"
    assert parse_topic("spBv1.0/STATE/scada").group == "scada"


def outbound(device_id, params):
    return Outbound(command_id=uuid.uuid4(), device_id=device_id, name="write", params=params,
                    expires_at=NOW + timedelta(hours=1))


def test_a_command_to_a_device_is_a_dcmd_with_the_birth_datatypes(dec, node):
    born(dec, node)
    topic, payload, qos = dec.command(outbound(PUMP, {"Outputs.Run": True, "Setpoint": -7, "New/Thing": 1.5}),
                                      at=NOW)
    assert topic == "spBv1.0/Plant1/DCMD/Edge1/Pump 7" and qos == 0
    sent = Payload.FromString(payload)
    assert sent.timestamp == NOW_MS
    assert [(m.name, m.datatype) for m in sent.metrics] == [
        ("Outputs/Run", DataType.Boolean), ("Setpoint", DataType.Int16), ("New/Thing", DataType.Double)]
    assert sent.metrics[1].int_value == 2**16 - 7  # width-wrapped two's complement, as Tahu writes it


def test_a_command_to_the_node_is_an_ncmd(dec, node):
    born(dec, node)
    topic, payload, _ = dec.command(outbound(NODE, {"Node Control/Rebirth": True}), at=NOW)
    assert topic == "spBv1.0/Plant1/NCMD/Edge1"
    assert Payload.FromString(payload).metrics[0].boolean_value is True


def test_a_write_succeeds_when_data_reports_the_new_values(dec, node):
    born(dec, node)
    command = outbound(PUMP, {"Outputs.Run": True, "Inputs/Temperature": 0.1})
    dec.command(command, at=NOW)
    said = decode(dec, D.format("DDATA"), node.next([{"alias": 11, "value": True, "datatype": DataType.Boolean}]))
    assert [s.response for s in said if s.response] == []
    said = decode(dec, D.format("DDATA"), node.next([{"alias": 10, "value": 0.1, "datatype": DataType.Float}]))
    (response,) = [s.response for s in said if s.response]
    assert response.command_id == command.command_id and response.ok
    assert response.result["confirmed"]["Outputs.Run"] is True
    assert decode(dec, D.format("DDATA"), node.next([{"alias": 11, "value": True}]))[1:] == []


def test_a_write_is_not_confirmed_by_another_value(dec, node):
    born(dec, node)
    dec.command(outbound(PUMP, {"Setpoint": 1}), at=NOW)
    said = decode(dec, D.format("DDATA"), node.next([{"alias": 12, "value": 2, "datatype": DataType.Int16}]))
    assert [s for s in said if s.response] == []


@pytest.mark.parametrize(("params", "match"), [({}, "at least one"), ({"Outputs.Run": 1}, "true or false"),
                                                ({"Setpoint": 40000}, "integer in"), ({"x": [1]}, "list"),
                                                ({"Inputs.Temperature": 1e39}, "Float")])
def test_a_command_that_does_not_fit_is_refused(dec, node, params, match):
    born(dec, node)
    with pytest.raises(PayloadInvalid, match=match) as exc:
        dec.command(outbound(PUMP, params), at=NOW)
    assert exc.value.reason == "bad_command"


def test_a_command_that_does_not_fit_fails_with_the_devices_next_message(dec, node):
    born(dec, node)
    command = outbound(PUMP, {"Setpoint": "high"})
    for _ in range(2):  # the dispatcher tries it again at each sweep until the device speaks
        with pytest.raises(PayloadInvalid):
            dec.command(command, at=NOW)
    said = decode(dec, D.format("DDATA"), node.next([{"alias": 12, "value": 2, "datatype": DataType.Int16}]))
    (response,) = [s.response for s in said if s.response]
    assert response.command_id == command.command_id and not response.ok and "integer" in response.error
    assert [s for s in decode(dec, D.format("DDATA"), node.next([{"alias": 12, "value": 2}])) if s.response] == []


def test_a_command_to_a_device_never_born_is_refused(dec, node):
    with pytest.raises(PayloadInvalid) as exc:
        dec.command(outbound(PUMP, {"x": 1}), at=NOW)
    assert exc.value.reason == "no_birth"


def test_the_host_state_payload_is_sparkplug_3_json():
    assert orjson.loads(state_payload(online=True, at=NOW)) == {"online": True, "timestamp": NOW_MS}


def test_the_primary_host_birth_carries_the_timestamp_of_its_connections_will():
    host = PrimaryHost("scada-1")
    assert host.topic == "spBv1.0/STATE/scada-1"
    will = orjson.loads(host.death(NOW))
    assert will == {"online": False, "timestamp": NOW_MS}
    assert orjson.loads(host.birth()) == {"online": True, "timestamp": NOW_MS}
    assert orjson.loads(host.last_death()) == will
    for bad in ("", "a/b", "a+", "#", "x" * 257):
        with pytest.raises(ConfigMissing, match="IOTGW_SPARKPLUG_HOST_ID"):
            PrimaryHost(bad)
