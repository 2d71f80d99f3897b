"""The bridge's MQTT codec on bytes alone: variable-length integers, PUBLISH both ways, stream splitting, limits."""

from __future__ import annotations

import pytest

from bridge.mqtt.codec import (
    CORRELATION_DATA,
    MAXIMUM_PACKET_SIZE,
    PUBACK,
    RESPONSE_TOPIC,
    SESSION_EXPIRY,
    TOPIC_ALIAS,
    PacketReader,
    PacketTooLarge,
    ProtocolError,
    Raw,
    Will,
    decode_ack,
    decode_connack,
    decode_properties,
    decode_suback,
    decode_varint,
    encode_connect,
    encode_disconnect,
    encode_properties,
    encode_pubacks,
    encode_publish,
    encode_subscribe,
    encode_varint,
)


@pytest.mark.parametrize(("value", "encoded"), [
    (0, b"\x00"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (16_383, b"\xff\x7f"),
    (16_384, b"\x80\x80\x01"),
    (2_097_151, b"\xff\xff\x7f"),
    (2_097_152, b"\x80\x80\x80\x01"),
    (268_435_455, b"\xff\xff\xff\x7f"),
])
def test_variable_length_integers_round_trip_at_every_size_boundary(value, encoded):
    assert encode_varint(value) == encoded
    assert decode_varint(b"\xaa" + encoded + b"\xbb", 1) == (value, 1 + len(encoded))


def test_variable_length_integer_out_of_range_is_refused():
    with pytest.raises(ValueError):
        encode_varint(268_435_456)


def test_truncated_variable_length_integer_is_incomplete_not_an_error():
    assert decode_varint(b"\x80\x80", 0) == (-1, 0)


def test_variable_length_integer_of_five_bytes_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        decode_varint(b"\x80\x80\x80\x80\x01", 0)


def _one(data: bytes, *, v5: bool):
    raws, others = PacketReader(v5=v5, generation=7).feed(data)
    assert others == []
    [raw] = raws
    return raw


@pytest.mark.parametrize("v5", [True, False])
@pytest.mark.parametrize("qos", [0, 1])
def test_publish_without_properties_round_trips(v5, qos):
    packet = encode_publish("devices/d1/telemetry", b'{"t": 1}', qos=qos, mid=513 if qos else 0, v5=v5)
    raw = _one(packet, v5=v5)
    assert (raw.topic, raw.payload, raw.qos, raw.mid, raw.generation) == (
        "devices/d1/telemetry", b'{"t": 1}', qos, 513 if qos else 0, 7)


def test_v5_publish_properties_are_skipped_and_the_payload_is_intact():
    props = encode_properties([(RESPONSE_TOPIC, "devices/d1/commands/response"), (CORRELATION_DATA, b"\x00id\xff"),
                               (0x26, ("k", "v"))])
    packet = encode_publish("devices/d1/commands", b"payload", qos=1, mid=9, v5=True, properties=props)
    raw = _one(packet, v5=True)
    assert (raw.topic, raw.payload, raw.mid) == ("devices/d1/commands", b"payload", 9)
    # The encoded block decodes to what went in.
    decoded, end = decode_properties(props)
    assert end == len(props)
    assert decoded == {RESPONSE_TOPIC: "devices/d1/commands/response", CORRELATION_DATA: b"\x00id\xff",
                       0x26: [("k", "v")]}


def test_v3_publish_ignores_properties_argument():
    packet = encode_publish("a/b", b"x", qos=1, mid=1, v5=False, properties=encode_properties([(RESPONSE_TOPIC, "r")]))
    assert _one(packet, v5=False).payload == b"x"


def test_large_payload_uses_a_multi_byte_remaining_length():
    payload = bytes(range(256)) * 300  # 76,800 bytes: a 3-byte remaining length
    packet = encode_publish("big", payload, qos=1, mid=2, v5=True)
    assert packet[1] & 0x80 and packet[2] & 0x80 and not packet[3] & 0x80
    [raw], _ = PacketReader(v5=True, max_packet=len(packet)).feed(packet)
    assert raw.payload == payload


def _announcing(length: int, *, first: int = 0x32, topic: bytes = b"devices/d1/telemetry", mid: int = 7) -> bytes:
    """The start of a packet that announces `length` bytes: fixed header, then a PUBLISH's topic and id."""
    return bytes((first,)) + encode_varint(length) + len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big")


@pytest.mark.parametrize("first", [0x32, 0x90])  # a QoS 1 PUBLISH, a SUBACK
def test_a_v5_packet_announced_over_the_limit_is_refused_before_its_body(first):
    reader = PacketReader(v5=True, max_packet=1024)
    with pytest.raises(PacketTooLarge) as refused:
        reader.feed(_announcing(200_000_000, first=first) + b"x" * 100_000)
    assert refused.value.reason == 0x95
    assert reader.buffered == 0 and reader.peak == 0


def test_the_limit_is_on_the_remaining_length_a_packet_at_it_passes():
    """The fixed header is slack: Mosquitto 2.0.11 leaves its first byte out when it checks a client's limit."""
    packet = encode_publish("t", b"x" * 1000, qos=1, mid=1, v5=True)
    remaining = len(packet) - 3  # a two-byte remaining length
    [raw], _ = PacketReader(v5=True, max_packet=remaining).feed(packet)
    assert len(raw.payload) == 1000
    with pytest.raises(PacketTooLarge):
        PacketReader(v5=True, max_packet=remaining - 1).feed(packet)


def test_a_v311_publish_over_the_limit_is_skipped_as_it_streams_and_comes_out_empty():
    body = 3_000_000
    header = _announcing(2 + 20 + 2 + body)
    after = encode_publish("devices/d2/telemetry", b"{}", qos=1, mid=8, v5=False)
    stream = header + b"y" * body + after
    reader = PacketReader(v5=False, generation=3, max_packet=1024)
    raws = []
    for i in range(0, len(stream), 65_536):
        got, others = reader.feed(stream[i:i + 65_536])
        raws += got
        assert others == [] and reader.buffered <= 1024
    assert raws == [Raw("devices/d1/telemetry", b"", 1, 7, 3, body), Raw("devices/d2/telemetry", b"{}", 1, 8, 3)]
    assert reader.peak <= len(after)


def test_a_v311_oversize_publish_whose_header_is_cut_waits_for_the_header_only():
    reader = PacketReader(v5=False, max_packet=256)
    header = _announcing(2 + 20 + 2 + 10_000)
    assert reader.feed(header[:4]) == ([], [])
    assert reader.feed(header[4:-1]) == ([], [])
    [raw], _ = reader.feed(header[-1:] + b"z" * 10_000)
    assert (raw.topic, raw.mid, raw.oversize, reader.buffered) == ("devices/d1/telemetry", 7, 10_000, 0)


def test_a_v311_packet_over_the_limit_other_than_publish_is_refused():
    with pytest.raises(PacketTooLarge):
        PacketReader(v5=False, max_packet=256).feed(_announcing(100_000, first=0x90))


def test_a_topic_alias_from_the_broker_is_refused_as_topic_alias_invalid():
    """The bridge's CONNECT sets no Topic Alias Maximum (0): a broker must not send one."""
    alias = encode_properties([(TOPIC_ALIAS, 3)])
    for packet in (encode_publish("devices/d1/telemetry", b"1", qos=0, v5=True, properties=alias),
                   encode_publish("", b"2", qos=0, v5=True, properties=alias)):
        with pytest.raises(ProtocolError) as refused:
            PacketReader(v5=True).feed(packet)
        assert refused.value.reason == 0x94


def test_a_v5_publish_without_topic_or_alias_is_a_protocol_error():
    with pytest.raises(ProtocolError) as refused:
        PacketReader(v5=True).feed(encode_publish("", b"2", qos=0, v5=True))
    assert refused.value.reason == 0x82


@pytest.mark.parametrize("v5", [True, False])
def test_a_qos2_publish_is_a_protocol_error_the_bridge_subscribes_at_qos1(v5):
    with pytest.raises(ProtocolError) as refused:
        PacketReader(v5=v5).feed(encode_publish("devices/d1/telemetry", b"{}", qos=2, mid=4, v5=v5))
    assert refused.value.reason == 0x82


def test_several_packets_and_a_partial_one_leave_the_partial_buffered():
    packets = [encode_publish(f"devices/d{i}/telemetry", b"x" * i, qos=1, mid=i, v5=True) for i in range(1, 4)]
    pingresp = b"\xd0\x00"
    partial = encode_publish("devices/d9/telemetry", b"tail", qos=1, mid=9, v5=True)
    reader = PacketReader(v5=True)
    raws, others = reader.feed(packets[0] + pingresp + packets[1] + packets[2] + partial[:5])
    assert [r.mid for r in raws] == [1, 2, 3]
    assert others == [(0xD0, b"")]
    assert reader.buffered == 5
    raws, others = reader.feed(partial[5:])
    assert [(r.topic, r.payload, r.mid) for r in raws] == [("devices/d9/telemetry", b"tail", 9)]
    assert reader.buffered == 0


@pytest.mark.parametrize("v5", [True, False])
def test_a_packet_fed_one_byte_at_a_time_comes_out_once_and_whole(v5):
    props = encode_properties([(CORRELATION_DATA, b"c")])
    stream = (encode_publish("devices/d1/telemetry", b"y" * 200, qos=1, mid=300, v5=v5, properties=props)
              + encode_pubacks([5]))
    reader = PacketReader(v5=v5)
    raws, others = [], []
    for i in range(len(stream)):
        got, other = reader.feed(stream[i:i + 1])
        raws += got
        others += other
        if i < len(stream) - 5:
            assert not got, f"a PUBLISH came out after {i + 1} bytes"
    assert [(r.topic, r.payload, r.mid) for r in raws] == [("devices/d1/telemetry", b"y" * 200, 300)]
    assert others == [(PUBACK << 4, b"\x00\x05")]
    assert reader.buffered == 0


def test_malformed_remaining_length_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        PacketReader(v5=True).feed(b"\x30\xff\xff\xff\xff\x01")


def test_publish_whose_topic_overruns_the_packet_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        PacketReader(v5=False).feed(b"\x30\x03\x00\x09ab" + b"\xd0\x00")


def test_pubacks_of_a_batch_are_one_write_of_four_bytes_each():
    assert encode_pubacks([1, 258, 65535]) == b"\x40\x02\x00\x01\x40\x02\x01\x02\x40\x02\xff\xff"
    assert decode_ack(b"\x01\x02") == (258, 0)
    assert decode_ack(b"\x01\x02\x87\x00") == (258, 0x87)


def test_v5_connect_asks_for_a_persistent_session_with_expiry_and_receive_maximum():
    packet = encode_connect(client_id="br", v5=True, keepalive=30, username="u", password="p",
                            session_expiry=300, receive_maximum=2000)
    assert packet[0] == 0x10 and packet[1] == len(packet) - 2
    body = packet[2:]
    assert body[:7] == b"\x00\x04MQTT\x05"
    assert body[7] == 0xC0  # username + password, clean start 0
    assert body[8:10] == (30).to_bytes(2, "big")
    props, end = decode_properties(body, 10)
    assert props == {SESSION_EXPIRY: 300, 0x21: 2000}
    assert body[end:] == b"\x00\x02br\x00\x01u\x00\x01p"


def test_v5_connect_advertises_the_maximum_packet_size():
    body = encode_connect(client_id="br", v5=True, keepalive=30, max_packet_size=69_632)[2:]
    assert decode_properties(body, 10)[0] == {MAXIMUM_PACKET_SIZE: 69_632}


def test_disconnect_carries_its_v5_reason_and_is_two_bytes_on_v311():
    assert encode_disconnect(0x95) == b"\xe0\x01\x95"
    assert encode_disconnect(0x95, v5=False) == encode_disconnect() == b"\xe0\x00"


def test_v311_connect_has_clean_session_0_and_no_properties():
    body = encode_connect(client_id="br", v5=False, keepalive=30)[2:]
    assert body == b"\x00\x04MQTT\x04\x00\x00\x1e\x00\x02br"


def test_subscribe_and_its_suback():
    assert encode_subscribe(1, [("$share/g/devices/#", 1)], v5=True) == (
        b"\x82\x18\x00\x01\x00\x00\x12$share/g/devices/#\x01")
    assert decode_suback(b"\x00\x01\x00\x01", v5=True) == (1, [1])
    assert decode_suback(b"\x00\x01\x80", v5=False) == (1, [0x80])


def test_connack_with_properties():
    session, code, props = decode_connack(b"\x01\x00" + encode_properties([(0x21, 20), (0x13, 5)]), v5=True)
    assert (session, code, props) == (True, 0, {0x21: 20, 0x13: 5})


@pytest.mark.parametrize("v5", [True, False])
def test_connect_carries_a_will_after_the_client_id(v5):
    body = encode_connect(client_id="br", v5=v5, keepalive=30, username="u",
                          will=Will("s/h", b"off", qos=1, retain=True))[2:]
    assert body[7] == 0x80 | 0x20 | 0x08 | 0x04  # username, will retain, will QoS 1, will flag
    tail = b"\x00\x02br" + (b"\x00" if v5 else b"") + b"\x00\x03s/h\x00\x03off\x00\x01u"
    assert body.endswith(tail)
