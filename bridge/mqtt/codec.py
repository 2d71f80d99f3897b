"""MQTT 5.0 and 3.1.1 packets as bytes, without I/O: what bridge.mqtt's client writes and reads.

Only what the bridge needs (docs/mqtt-client.md): CONNECT, SUBSCRIBE, UNSUBSCRIBE, PUBLISH
at QoS 0 and 1, PUBACK, PINGREQ and DISCONNECT out; every packet a broker may send in.
Inbound PUBLISHes are the hot path: `PacketReader.feed` turns a whole socket read into Raws
in one loop, and skips their v5 properties unread. It never holds more than one packet of
its `max_packet` bytes: a larger one is refused from its length alone, before its body.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

# Packet types (the high nibble of the first byte).
CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 2, 3, 4, 5, 6, 7
SUBACK, UNSUBACK, PINGRESP, DISCONNECT, AUTH = 9, 11, 13, 14, 15

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"  # v5: reason 0 (normal), no properties; v3.1.1: the whole packet

# v5 property identifiers the bridge reads or writes.
RESPONSE_TOPIC, CORRELATION_DATA, SESSION_EXPIRY, SERVER_KEEP_ALIVE = 0x08, 0x09, 0x11, 0x13
AUTHENTICATION_METHOD, REASON_STRING, RECEIVE_MAXIMUM, TOPIC_ALIAS = 0x15, 0x1F, 0x21, 0x23
MAXIMUM_QOS, MAXIMUM_PACKET_SIZE = 0x24, 0x27

# v5 reason codes the client sends in DISCONNECT.
MALFORMED, PROTOCOL_ERROR, TOPIC_ALIAS_INVALID, PACKET_TOO_LARGE = 0x81, 0x82, 0x94, 0x95
# The largest remaining length a packet may announce (4-byte variable byte integer).
MAX_REMAINING = 268_435_455

_BYTE, _TWO, _FOUR, _VARINT, _BINARY, _STRING, _PAIR = range(7)
_PROPERTY_TYPES = {
    0x01: _BYTE, 0x02: _FOUR, 0x03: _STRING, 0x08: _STRING, 0x09: _BINARY, 0x0B: _VARINT, 0x11: _FOUR,
    0x12: _STRING, 0x13: _TWO, 0x15: _STRING, 0x16: _BINARY, 0x17: _BYTE, 0x18: _FOUR, 0x19: _BYTE,
    0x1A: _STRING, 0x1C: _STRING, 0x1F: _STRING, 0x21: _TWO, 0x22: _TWO, 0x23: _TWO, 0x24: _BYTE,
    0x25: _BYTE, 0x26: _PAIR, 0x27: _FOUR, 0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}

REASONS = {
    0x00: "success", 0x04: "disconnect with will message", 0x10: "no matching subscribers",
    0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
    0x83: "implementation specific error", 0x84: "unsupported protocol version", 0x85: "client identifier not valid",
    0x86: "bad user name or password", 0x87: "not authorized", 0x88: "server unavailable", 0x89: "server busy",
    0x8A: "banned", 0x8B: "server shutting down", 0x8C: "bad authentication method", 0x8D: "keep alive timeout",
    0x8E: "session taken over", 0x8F: "topic filter invalid", 0x90: "topic name invalid",
    0x91: "packet identifier in use", 0x92: "packet identifier not found", 0x93: "receive maximum exceeded",
    0x94: "topic alias invalid", 0x95: "packet too large", 0x96: "message rate too high", 0x97: "quota exceeded",
    0x98: "administrative action", 0x99: "payload format invalid", 0x9A: "retain not supported",
    0x9B: "QoS not supported", 0x9C: "use another server", 0x9D: "server moved",
    0x9E: "shared subscriptions not supported", 0x9F: "connection rate exceeded", 0xA0: "maximum connect time",
    0xA1: "subscription identifiers not supported", 0xA2: "wildcard subscriptions not supported",
}
# v3.1.1 CONNACK return codes.
V3_CONNACK = {1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
              4: "bad user name or password", 5: "not authorized"}


class ProtocolError(Exception):
    """The broker sent what MQTT forbids: the connection must be dropped (v5: DISCONNECT with `reason`)."""

    def __init__(self, message: str, reason: int = MALFORMED) -> None:
        super().__init__(message)
        self.reason = reason


class PacketTooLarge(ProtocolError):
    """A packet announced more bytes than the reader's `max_packet`: refused before its body is read."""

    def __init__(self, message: str) -> None:
        super().__init__(message, PACKET_TOO_LARGE)


@dataclass(slots=True)
class Raw:
    """An inbound PUBLISH, tagged with the connection (generation) it came on.

    `oversize` > 0: a 3.1.1 message too large to hold, skipped unread (its payload is empty): the
    ingest rejects it as `too_large` and acks it, where closing would only have it sent again.
    """

    topic: str
    payload: bytes
    qos: int
    mid: int
    generation: int
    oversize: int = 0


def reason_name(code: int) -> str:
    """`0x87 not authorized`: a v5 reason code for a log line."""
    return f"0x{code:02X} {REASONS.get(code, 'unknown reason')}"


# --- encoding ---------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """The Variable Byte Integer of `value` (0 .. 268,435,455) in 1 to 4 bytes."""
    if not 0 <= value <= 268_435_455:
        raise ValueError(f"{value} does not fit a variable byte integer")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return len(data).to_bytes(2, "big") + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


def encode_properties(properties: list[tuple[int, Any]]) -> bytes:
    """A v5 property block, length first; values by the identifier's type."""
    out = bytearray()
    for ident, value in properties:
        kind = _PROPERTY_TYPES[ident]
        out.append(ident)
        if kind == _BYTE:
            out.append(value)
        elif kind == _TWO:
            out += value.to_bytes(2, "big")
        elif kind == _FOUR:
            out += value.to_bytes(4, "big")
        elif kind == _VARINT:
            out += encode_varint(value)
        elif kind == _PAIR:
            out += _string(value[0]) + _string(value[1])
        else:
            out += _string(value)
    return encode_varint(len(out)) + bytes(out)


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes for us when our connection ends without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


def encode_connect(*, client_id: str, v5: bool, keepalive: int, clean: bool = False, username: str | None = None,
                   password: str | None = None, session_expiry: int = 0, receive_maximum: int = 0,
                   max_packet_size: int = 0, will: Will | None = None) -> bytes:
    """CONNECT; a v5 one carries Session Expiry Interval, Receive Maximum and Maximum Packet Size when given."""
    flags = (0x80 if username is not None else 0) | (0x40 if password is not None else 0) | (0x02 if clean else 0)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    body = _string("MQTT") + bytes((5 if v5 else 4, flags)) + keepalive.to_bytes(2, "big")
    if v5:
        props = [(SESSION_EXPIRY, session_expiry)] if session_expiry else []
        props += [(RECEIVE_MAXIMUM, receive_maximum)] if receive_maximum else []
        props += [(MAXIMUM_PACKET_SIZE, max_packet_size)] if max_packet_size else []
        body += encode_properties(props)
    body += _string(client_id)
    if will is not None:
        body += (b"\x00" if v5 else b"") + _string(will.topic) + _string(will.payload)  # no v5 will properties
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password)
    return _packet(0x10, body)


def encode_subscribe(mid: int, topics: list[tuple[str, int]], *, v5: bool) -> bytes:
    """SUBSCRIBE to (filter, options) pairs: the maximum QoS, plus v5 option bits (No Local …) on v5."""
    body = mid.to_bytes(2, "big") + (b"\x00" if v5 else b"")
    for topic, options in topics:
        body += _string(topic) + bytes((options if v5 else options & 0x03,))
    return _packet(0x82, body)


def encode_unsubscribe(mid: int, topics: list[str], *, v5: bool) -> bytes:
    """UNSUBSCRIBE from topic filters."""
    body = mid.to_bytes(2, "big") + (b"\x00" if v5 else b"")
    for topic in topics:
        body += _string(topic)
    return _packet(0xA2, body)


def encode_publish(topic: str, payload: bytes, *, qos: int, mid: int = 0, v5: bool, retain: bool = False,
                   dup: bool = False, properties: bytes = b"\x00") -> bytes:
    """PUBLISH; `properties` is an encoded v5 property block (ignored for 3.1.1)."""
    head = _string(topic) + (mid.to_bytes(2, "big") if qos else b"") + (properties if v5 else b"")
    first = 0x30 | (dup << 3) | (qos << 1) | retain
    return bytes((first,)) + encode_varint(len(head) + len(payload)) + head + payload


def encode_pubacks(mids: list[int]) -> bytes:
    """PUBACKs for many packet ids in one write: each is `40 02 <id>`, a v5 success without a reason byte."""
    return struct.pack(f">{len(mids)}I", *[0x40020000 | mid for mid in mids])


def encode_disconnect(reason: int = 0, *, v5: bool = True) -> bytes:
    """DISCONNECT; a v5 one with its reason code (0: normal), no properties."""
    return bytes((0xE0, 1, reason)) if v5 and reason else DISCONNECT_PACKET


# --- decoding ---------------------------------------------------------------------------------


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it); (-1, pos) when `data` ends inside it; ProtocolError past 4 bytes."""
    value = shift = 0
    for index in range(pos, pos + 4):
        if index >= len(data):
            return -1, pos
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, index + 1
        shift += 7
    raise ProtocolError("malformed variable byte integer: more than 4 bytes")


def decode_properties(data: bytes, pos: int = 0) -> tuple[dict[int, Any], int]:
    """A v5 property block at `pos`: ({identifier: value}, position after it). User properties are a list."""
    length, pos = decode_varint(data, pos)
    end = pos + length
    if length < 0 or end > len(data):
        raise ProtocolError("property block longer than its packet")
    props: dict[int, Any] = {}
    while pos < end:
        ident = data[pos]
        kind = _PROPERTY_TYPES.get(ident)
        pos += 1
        if kind is None:
            raise ProtocolError(f"unknown property 0x{ident:02X}")
        if kind == _BYTE:
            value, pos = data[pos], pos + 1
        elif kind == _TWO:
            value, pos = int.from_bytes(data[pos:pos + 2], "big"), pos + 2
        elif kind == _FOUR:
            value, pos = int.from_bytes(data[pos:pos + 4], "big"), pos + 4
        elif kind == _VARINT:
            value, pos = decode_varint(data, pos)
        elif kind == _PAIR:
            key, pos = _read_string(data, pos)
            value, pos = _read_string(data, pos)
            props.setdefault(ident, []).append((key, value))
            continue
        else:
            value, pos = _read_string(data, pos, binary=kind == _BINARY)
        props[ident] = value
    if pos != end:
        raise ProtocolError("property overruns its block")
    return props, end


def _read_string(data: bytes, pos: int, *, binary: bool = False) -> tuple[Any, int]:
    end = pos + 2 + int.from_bytes(data[pos:pos + 2], "big")
    if end > len(data):
        raise ProtocolError("string longer than its packet")
    raw = bytes(data[pos + 2:end])
    return (raw if binary else raw.decode("utf-8", "replace")), end


def decode_connack(body: bytes, *, v5: bool) -> tuple[bool, int, dict[int, Any]]:
    """(session present, reason code or v3 return code, v5 properties)."""
    if len(body) < 2:
        raise ProtocolError("CONNACK too short")
    props = decode_properties(body, 2)[0] if v5 and len(body) > 2 else {}
    return bool(body[0] & 1), body[1], props


def decode_ack(body: bytes) -> tuple[int, int]:
    """(packet id, reason code) of a PUBACK; a short one is a success."""
    if len(body) < 2:
        raise ProtocolError("acknowledgement too short")
    return (body[0] << 8) | body[1], body[2] if len(body) > 2 else 0


def decode_suback(body: bytes, *, v5: bool) -> tuple[int, list[int]]:
    """(packet id, one granted QoS or reason code per filter)."""
    if len(body) < 3:
        raise ProtocolError("SUBACK too short")
    pos = decode_properties(body, 2)[1] if v5 else 2
    return (body[0] << 8) | body[1], list(body[pos:])


def decode_disconnect(body: bytes) -> tuple[int, str | None]:
    """(reason code, reason string) of a v5 DISCONNECT from the broker."""
    if not body:
        return 0, None
    props = decode_properties(body, 1)[0] if len(body) > 1 else {}
    return body[0], props.get(REASON_STRING)


def decode_auth(body: bytes) -> tuple[int, str | None]:
    """(reason code, authentication method) of a v5 AUTH from the broker."""
    if not body:
        return 0, None
    props = decode_properties(body, 1)[0] if len(body) > 1 else {}
    return body[0], props.get(AUTHENTICATION_METHOD)


class PacketReader:
    """Splits a byte stream into packets: PUBLISHes become Raws, every other packet a (first byte, body).

    A packet cut by the end of a read stays buffered until the rest has arrived; the
    pieces are joined once, when they are complete, so a large packet costs no re-copying.
    A packet whose remaining length is over `max_packet` raises PacketTooLarge before any
    of it is kept (the fixed header is slack: Mosquitto 2.0.11 counts only part of it when
    it applies a client's Maximum Packet Size), except a 3.1.1 PUBLISH: its body is skipped as it streams past and it
    comes out as an empty Raw marked `oversize` (3.1.1 has no way to tell the broker the
    limit, and a broker resends an unacknowledged message on every reconnect).
    """

    def __init__(self, *, v5: bool, generation: int = 0, max_packet: int = MAX_REMAINING) -> None:
        if max_packet < 128:
            raise ValueError("max_packet must be at least 128 bytes")
        self.v5 = v5
        self.generation = generation
        self.max_packet = max_packet
        self.peak = 0  # the most bytes of an incomplete packet held at once
        self._parts: list[bytes] = []
        self._have = 0
        self._need = 0
        self._skip = 0  # bytes of an oversize 3.1.1 PUBLISH still to pass unread

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete packet waiting for the rest."""
        return self._have

    def feed(self, data: bytes) -> tuple[list[Raw], list[tuple[int, bytes]]]:
        """Every complete packet in what has arrived so far, in two lists."""
        raws: list[Raw] = []
        others: list[tuple[int, bytes]] = []
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return raws, others
            data, self._skip = data[self._skip:], 0
        if self._parts:
            self._parts.append(data)
            self._have += len(data)
            self.peak = max(self.peak, self._have)
            if self._have < self._need:
                return raws, others
            data = b"".join(self._parts)
            self._parts = []
        pos = 0
        try:
            while True:
                pos, need = _split(data, pos, self.v5, self.generation, self.max_packet, raws, others)
                if need != _OVERSIZE:
                    break
                pos, need = self._oversize(data, pos, raws)
                if need:
                    break
        except IndexError:
            raise ProtocolError("packet shorter than its contents") from None
        if pos < len(data):
            rest = data[pos:]
            self._parts = [rest]
            self._have = len(rest)
            self._need = need
            self.peak = max(self.peak, self._have)
        else:
            self._have = 0
        return raws, others

    def _oversize(self, data: bytes, pos: int, raws: list[Raw]) -> tuple[int, int]:
        """A packet over the limit at `pos`: raise, or (3.1.1 PUBLISH) emit it empty and skip its body.

        Returns (position after it, 0), or (pos, bytes needed from pos) while its header is incomplete.
        """
        first = data[pos]
        length, head = decode_varint(data, pos + 1)
        what = f"a packet of {length} bytes (type {first >> 4}) is over the {self.max_packet}-byte limit"
        if self.v5 or first >> 4 != PUBLISH:
            raise PacketTooLarge(what)
        qos = (first >> 1) & 3
        if qos > 1:
            raise ProtocolError("PUBLISH at QoS 2 or 3: the bridge subscribes at QoS 1 at most", PROTOCOL_ERROR)
        if head + 2 > len(data):
            return pos, head + 2 - pos
        start = head + 2 + ((data[head] << 8) | data[head + 1]) + (2 if qos else 0)
        if start > head + length:
            raise ProtocolError("PUBLISH header longer than the packet")
        if start - pos > self.max_packet:
            raise PacketTooLarge(what + ", and so is its topic")
        if start > len(data):
            return pos, start - pos
        topic = data[head + 2:start - (2 if qos else 0)].decode("utf-8", "replace")
        mid = (data[start - 2] << 8) | data[start - 1] if qos else 0
        raws.append(Raw(topic, b"", qos, mid, self.generation, head + length - start))
        stop = head + length
        if stop > len(data):
            self._skip = stop - len(data)
            return len(data), 0
        return stop, 0


_OVERSIZE = -1  # _split's "need" when the next packet is over the limit


def _split(data: bytes, pos: int, v5: bool, generation: int, limit: int, raws: list[Raw],
           others: list[tuple[int, bytes]]) -> tuple[int, int]:
    """The hot loop: (position after the last complete packet, bytes the next one needs from there).

    The next one's need is _OVERSIZE when its remaining length is over `limit` (at least 128,
    so a one-byte length never is).
    """
    end = len(data)
    append = raws.append
    while end - pos >= 2:
        first = data[pos]
        length = data[pos + 1]
        head = pos + 2
        if length > 127:
            length, head = decode_varint(data, pos + 1)
            if length < 0:
                return pos, end - pos + 1  # the length itself is incomplete
            if length > limit:
                return pos, _OVERSIZE
        stop = head + length
        if stop > end:
            return pos, stop - pos
        if first >> 4 == PUBLISH:
            start = head + 2 + ((data[head] << 8) | data[head + 1])
            topic = data[head + 2:start].decode("utf-8", "replace")
            qos = (first >> 1) & 3
            mid = 0
            if qos:
                if qos > 1:  # the broker must not send above the subscription's maximum QoS (1)
                    raise ProtocolError("PUBLISH at QoS 2 or 3: the bridge subscribes at QoS 1 at most",
                                        PROTOCOL_ERROR)
                mid = (data[start] << 8) | data[start + 1]
                start += 2
            if v5:
                if data[start] or not topic:  # properties present (rare): read them for a Topic Alias
                    start = _publish_properties(data, start, topic)
                else:
                    start += 1
            if start > stop:
                raise ProtocolError("PUBLISH header longer than the packet")
            append(Raw(topic, data[start:stop], qos, mid, generation))
        else:
            others.append((first, data[head:stop]))
        pos = stop
    return pos, 2


def _publish_properties(data: bytes, pos: int, topic: str) -> int:
    """Skip a PUBLISH's properties; a Topic Alias is refused: the bridge allows none (Topic Alias Maximum 0)."""
    props, pos = decode_properties(data, pos)
    if TOPIC_ALIAS in props:
        raise ProtocolError(f"Topic Alias {props[TOPIC_ALIAS]} although the bridge allows none", TOPIC_ALIAS_INVALID)
    if not topic:
        raise ProtocolError("PUBLISH without a topic", PROTOCOL_ERROR)
    return pos
