"""Properties of the Sparkplug B decoder: any input is decoded or PayloadInvalid; aliases round-trip; seq wraps."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.errors import PayloadInvalid
from core.payloads import parse_sample
from core.sparkplug.decoder import SparkplugDecoder
from core.sparkplug.metrics import Skipped, metric_name
from core.sparkplug.sparkplug_b_pb2 import DataType, Payload
from core.times import EPOCH
from testing.sparkplug import EdgeNode, metric

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NOW_MS = int((NOW - EPOCH).total_seconds() * 1000)
TYPES = ("NBIRTH", "NDATA", "NDEATH", "DBIRTH", "DDATA", "DDEATH", "NCMD", "DCMD")
topics = st.sampled_from(TYPES).flatmap(
    lambda kind: st.sampled_from([f"spBv1.0/G/{kind}/E", f"spBv1.0/G/{kind}/E/D"]))

any_metric = st.fixed_dictionaries({}, optional={
    "name": st.text(max_size=70), "alias": st.integers(0, 2**64 - 1), "timestamp": st.integers(0, 2**64 - 1),
    "datatype": st.integers(0, 40), "is_null": st.booleans(), "is_historical": st.booleans(),
    "int_value": st.integers(0, 2**32 - 1), "long_value": st.integers(0, 2**64 - 1), "float_value": st.floats(width=32),
    "double_value": st.floats(), "boolean_value": st.booleans(), "string_value": st.text(max_size=300),
    "bytes_value": st.binary(max_size=20)})


def well_formed(metrics: list[dict], seq: int | None, ts: int | None) -> bytes:
    payload = Payload()
    if seq is not None:
        payload.seq = seq
    if ts is not None:
        payload.timestamp = ts
    for fields in metrics:
        m = payload.metrics.add()
        for name, value in fields.items():
            try:
                setattr(m, name, value)
            except ValueError:  # e.g. a lone surrogate in a string: not what a sender can encode
                pass
    return payload.SerializeToString()


payloads = (st.binary(max_size=300)
            | st.builds(well_formed, st.lists(any_metric, max_size=6), st.none() | st.integers(0, 300),
                        st.none() | st.integers(0, 2**64 - 1)))


def _mapped(name: str) -> str:
    try:
        return metric_name(name)
    except Skipped:
        return name


def assert_storable(said) -> None:
    for s in said:
        for sample in s.samples:
            assert EPOCH <= sample.ts
            parse_sample(dict(sample.data), default_ts=sample.ts)  # passes the iotgw sample rules too


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(topics, payloads), min_size=1, max_size=8))
@example([("spBv1.0/G/NBIRTH/E", b"\x12\x03\x0a\x01\xff")])  # a metric name of invalid UTF-8
@example([("spBv1.0/G/NBIRTH/E", b"\x12\x08\x0a\x01a\x20\x0c\x7a\x01\xff")])  # a String value of it
@example([("spBv1.0/G/NBIRTH/E", b"\x12\x07\x0a\x01a\x10\x01\x20\x0c"),  # alias 1 declared…
          ("spBv1.0/G/NDATA/E", b"\x18\x01\x12\x04\x10\x01\x7a\x00")])  # …then used, with an empty string
def test_any_message_sequence_decodes_into_storable_samples_or_is_payload_invalid(messages):
    dec = SparkplugDecoder(max_payload=4096)
    for topic, payload in messages:
        try:
            said = dec(topic, payload, received_at=NOW)
        except PayloadInvalid:
            continue
        assert_storable(said)
    for topic, payload, qos in dec.replies():
        assert topic == "spBv1.0/G/NCMD/E" and qos == 0
        Payload.FromString(payload)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=20),
                          st.floats(allow_nan=False, allow_infinity=False)), min_size=1, max_size=10,
                unique_by=lambda t: _mapped(t[0])),
       st.randoms())
def test_values_sent_by_alias_come_back_under_their_birth_names(named, rnd):
    node, dec = EdgeNode(now_ms=NOW_MS), SparkplugDecoder(max_payload=65536)
    births = [{"name": n, "alias": 100 + i, "datatype": DataType.Double, "value": 0.0}
              for i, (n, _) in enumerate(named)]
    dec("spBv1.0/G/NBIRTH/E", node.nbirth(births), received_at=NOW)
    order = list(range(len(named)))
    rnd.shuffle(order)
    said = dec("spBv1.0/G/NDATA/E", node.next([{"alias": 100 + i, "value": named[i][1]} for i in order]),
               received_at=NOW)
    got = said[0].samples[0].data if said[0].samples else {}
    birth = dec("spBv1.0/G/NBIRTH/E", node.nbirth([{"name": n, "datatype": DataType.Double, "value": v}
                                                   for n, v in named]), received_at=NOW)
    by_name = birth[0].samples[0].data if birth[0].samples else {}
    assert got == by_name  # by alias or by name, the same metrics with the same values
    assert all(math.isfinite(v) for v in got.values())


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.integers(1, 700), st.integers(0, 254))
def test_seq_wraps_at_256_and_only_a_real_gap_asks_for_a_rebirth(start, count, lost):
    node, dec = EdgeNode(now_ms=NOW_MS), SparkplugDecoder(max_payload=65536)
    payload = Payload(seq=start)
    metric(payload, name="x", datatype=DataType.Boolean, value=True)
    dec("spBv1.0/G/NBIRTH/E", payload.SerializeToString(), received_at=NOW)
    node.seq = start
    for _ in range(count):
        dec("spBv1.0/G/NDATA/E", node.next([{"name": "x", "value": True}]), received_at=NOW)
    assert dec.counts["seq_gap"] == 0 and dec.replies() == []
    node.skip(lost + 1)  # lose 1 to 255 messages: never a multiple of 256
    dec("spBv1.0/G/NDATA/E", node.next([{"name": "x", "value": True}]), received_at=NOW)
    assert dec.counts["seq_gap"] == 1 and len(dec.replies()) == 1
