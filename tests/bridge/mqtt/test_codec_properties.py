"""Property tests of the bridge's packet reader (bridge/mqtt/codec.py): whatever a broker sends and however
the reads cut it, the same packets come out, nothing over the limit is held, and the only error is ProtocolError."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bridge.mqtt.codec import (
    CORRELATION_DATA,
    PacketReader,
    ProtocolError,
    encode_properties,
    encode_pubacks,
    encode_publish,
)

LIMIT = 2048
TOPICS = st.text(min_size=1, max_size=30)
PAYLOADS = st.binary(max_size=3000)  # some over LIMIT


@st.composite
def streams(draw, v5: bool) -> tuple[bytes, list[tuple[str, bytes, int, int]]]:
    """Valid broker output: PUBLISHes (some over the limit), PUBACKs and PINGRESPs; and the PUBLISHes in it."""
    out, publishes = b"", []
    for mid in range(1, draw(st.integers(1, 8)) + 1):
        kind = draw(st.sampled_from(["publish", "puback", "pingresp"]))
        if kind == "publish":
            topic, payload, qos = draw(TOPICS), draw(PAYLOADS), draw(st.integers(0, 1))
            props = encode_properties([(CORRELATION_DATA, draw(st.binary(max_size=10)))]) if draw(st.booleans()) \
                else b"\x00"
            out += encode_publish(topic, payload, qos=qos, mid=mid if qos else 0, v5=v5, properties=props)
            publishes.append((topic, payload, qos, mid if qos else 0))
        else:
            out += encode_pubacks([mid]) if kind == "puback" else b"\xd0\x00"
    return out, publishes


def _feed(reader: PacketReader, stream: bytes, cuts: list[int]) -> list:
    raws = []
    bounds = [0, *sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]
    for start, stop in zip(bounds, bounds[1:], strict=False):
        raws += reader.feed(stream[start:stop])[0]
        assert reader.buffered <= LIMIT + 5
    return raws


@settings(max_examples=300, deadline=None)
@given(streams(v5=False), st.lists(st.integers(0, 30_000), max_size=12))
def test_v311_reads_cut_anywhere_give_every_packet_and_skip_what_is_over_the_limit(stream, cuts):
    data, publishes = stream
    raws = _feed(PacketReader(v5=False, max_packet=LIMIT), data, cuts)
    expected = []
    for topic, payload, qos, mid in publishes:
        header = 2 + len(topic.encode()) + (2 if qos else 0)
        over = header + len(payload) > LIMIT
        expected.append((topic, b"" if over else payload, qos, mid, len(payload) if over else 0))
    assert [(r.topic, r.payload, r.qos, r.mid, r.oversize) for r in raws] == expected


@settings(max_examples=300, deadline=None)
@given(streams(v5=True), st.lists(st.integers(0, 30_000), max_size=12))
def test_v5_reads_cut_anywhere_give_every_packet_until_one_over_the_limit(stream, cuts):
    data, publishes = stream
    reader = PacketReader(v5=True, max_packet=LIMIT)
    try:
        raws = _feed(reader, data, cuts)
    except ProtocolError as exc:
        assert exc.reason == 0x95
        return
    assert [(r.topic, r.payload, r.qos, r.mid) for r in raws] == publishes


@settings(max_examples=500, deadline=None)
@given(st.booleans(), st.lists(st.binary(min_size=1, max_size=300), max_size=10))
@example(False, [b"\x30\xff\xff\x7f" + b"a" * 296, b"b" * 300])  # a 2 MB PUBLISH with a 24 KB topic
@example(True, [b"\x90\xff\xff\x7f", b"b" * 300, b"c" * 300])  # a 2 MB SUBACK
def test_any_bytes_give_packets_or_protocol_error_and_never_hold_more_than_the_limit(v5, reads):
    reader = PacketReader(v5=v5, max_packet=256)
    try:
        for data in reads:
            reader.feed(data)
            assert reader.buffered <= 256 + 5
    except ProtocolError:
        pass
