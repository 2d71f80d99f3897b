"""What the bridge's MQTT client refuses, and how: a fake raw-socket broker sends it what no real one here would."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from bridge.mqtt.client import MqttClient
from bridge.mqtt.codec import (
    AUTHENTICATION_METHOD,
    MAXIMUM_PACKET_SIZE,
    TOPIC_ALIAS,
    decode_properties,
    decode_varint,
    encode_properties,
    encode_publish,
    encode_varint,
)
from core.broker import BrokerConfig
from tests.bridge.mqtt.test_client import Probe

V5_CONNACK = b"\x20\x03\x00\x00\x00"
V3_CONNACK = b"\x20\x02\x00\x00"
SUBSCRIBE, PUBACK, DISCONNECT = 8, 4, 14


@dataclass
class Link:
    """One connection to the fake broker, from its side."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    accepted_at: float
    received: list[tuple[int, bytes]] = field(default_factory=list)
    connect_props: dict = field(default_factory=dict)
    closed: bool = False

    async def read(self) -> tuple[int, bytes] | None:
        """The client's next packet (type, body), or None once it has closed."""
        try:
            head = await self.reader.readexactly(2)
            length, size = head[1], 2
            while head[-1] & 0x80:
                head += await self.reader.readexactly(1)
                size += 1
            if size > 2:
                length = decode_varint(head, 1)[0]
            packet = (head[0] >> 4, await self.reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        self.received.append(packet)
        return packet

    async def expect(self, kind: int) -> bytes:
        """The body of the client's next packet, which must be of this type."""
        packet = await self.read()
        assert packet is not None and packet[0] == kind, f"expected packet type {kind}, got {packet}"
        return packet[1]

    async def handshake(self, connack: bytes = V5_CONNACK) -> bytes:
        """CONNECT in, CONNACK out, SUBSCRIBE in, SUBACK out; returns the CONNECT's body."""
        connect = await self.expect(1)
        self.writer.write(connack)
        subscribe = await self.expect(SUBSCRIBE)
        self.writer.write(b"\x90\x04" + subscribe[:2] + b"\x00\x01" if connack == V5_CONNACK
                          else b"\x90\x03" + subscribe[:2] + b"\x01")
        return connect

    async def until_closed(self) -> None:
        while await self.read() is not None:
            pass


class FakeBroker:
    """A TCP server of the test's own: each connection runs `script(link, n)` (n counts from 0)."""

    def __init__(self, script: Callable[[Link, int], Awaitable[None]]) -> None:
        self.script = script
        self.links: list[Link] = []

    async def __aenter__(self) -> FakeBroker:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for link in self.links:
            link.writer.close()

    def url(self, protocol: str = "5") -> str:
        return f"mqtt://127.0.0.1:{self.port}" + ("?protocol=3.1.1" if protocol == "3.1.1" else "")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link(reader, writer, asyncio.get_running_loop().time())
        self.links.append(link)
        try:
            await self.script(link, len(self.links) - 1)
            await link.until_closed()
        except ConnectionError:
            pass
        finally:
            link.closed = True
            writer.close()


async def until(predicate: Callable[[], object], *, timeout: float = 10.0, what: str = "") -> None:
    """Poll `predicate` on the loop until it holds, or fail after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}") from None


def started(url: str, probe: Probe, **kwargs) -> MqttClient:
    kwargs = {"min_delay": 0.05, **kwargs}
    client = MqttClient(BrokerConfig.from_url(url), client_id="fake-test", on_messages=probe.on_messages,
                        subscriptions=[("devices/#", 1)], session_expiry=300, **kwargs)
    client.on_connect = probe.on_connect
    client.on_disconnect = probe.on_disconnect
    client.start()
    return client


def disconnect_reason(link: Link) -> int | None:
    """The reason code of the client's DISCONNECT on this link, if it sent one."""
    bodies = [body for kind, body in link.received if kind == DISCONNECT]
    return bodies[0][0] if bodies and bodies[0] else None


# --- Maximum Packet Size ----------------------------------------------------------------------


async def test_v5_packet_announced_over_the_limit_is_refused_unbuffered_and_the_client_reconnects():
    async def script(link: Link, n: int) -> None:
        connect = await link.handshake()
        link.connect_props = decode_properties(connect, 10)[0]
        if n == 0:  # 200 MB announced, 1 MB of it sent: the client must not keep any of it
            link.writer.write(b"\x32" + encode_varint(200_000_000) + b"\x00\x14devices/d1/telemetry\x00\x01\x00"
                              + b"x" * 1_000_000)

    probe = Probe()
    async with FakeBroker(script) as broker:
        client = started(broker.url(), probe, max_packet_size=8192)
        try:
            await until(lambda: len(probe.connects) == 2, what="the reconnect after the refusal")
            first = broker.links[0]
            await until(lambda: first.closed, what="the first connection to end")
            assert disconnect_reason(first) == 0x95, first.received
            assert first.connect_props[MAXIMUM_PACKET_SIZE] == 8192
            assert client.peak_buffered < 16, f"held {client.peak_buffered} bytes of a refused packet"
            assert probe.raws == []
        finally:
            await client.stop()


async def test_v311_publish_over_the_limit_is_skipped_unread_acked_when_told_and_the_stream_goes_on():
    big = 3_000_000

    async def script(link: Link, n: int) -> None:
        await link.handshake(V3_CONNACK)
        header = b"\x32" + encode_varint(2 + 20 + 2 + big) + b"\x00\x14devices/d1/telemetry\x00\x01"
        link.writer.write(header)
        for _ in range(big // 100_000):
            link.writer.write(b"y" * 100_000)
            await link.writer.drain()
        link.writer.write(encode_publish("devices/d2/telemetry", b"{}", qos=1, mid=2, v5=False))

    probe = Probe()
    async with FakeBroker(script) as broker:
        client = started(broker.url("3.1.1"), probe, max_packet_size=8192)
        try:
            await until(lambda: len(probe.raws) == 2, what="both messages")
            assert [(r.topic, r.payload, r.mid, r.oversize) for r in probe.raws] == [
                ("devices/d1/telemetry", b"", 1, big), ("devices/d2/telemetry", b"{}", 2, 0)]
            assert client.peak_buffered < 64, f"held {client.peak_buffered} bytes of a skipped packet"
            client.ack(probe.raws)
            link = broker.links[0]
            await until(lambda: len(link.received) >= 4, what="the PUBACKs")
            assert link.received[2:] == [(PUBACK, b"\x00\x01"), (PUBACK, b"\x00\x02")]
            assert len(broker.links) == 1 and client.connected
        finally:
            await client.stop()


async def test_v311_packet_over_the_limit_other_than_publish_closes_the_connection():
    async def script(link: Link, n: int) -> None:
        await link.handshake(V3_CONNACK)
        if n == 0:
            link.writer.write(b"\xb0" + encode_varint(50_000_000) + b"\x00\x01" + b"u" * 100_000)  # an UNSUBACK

    probe = Probe()
    async with FakeBroker(script) as broker:
        client = started(broker.url("3.1.1"), probe, max_packet_size=8192)
        try:
            await until(lambda: len(probe.connects) == 2, what="the reconnect")
            assert client.peak_buffered < 16
        finally:
            await client.stop()


# --- AUTH: enhanced authentication --------------------------------------------------------------

AUTH_PACKET = b"\xf0" + encode_varint(1 + 15) + b"\x18" + encode_properties([(AUTHENTICATION_METHOD, "SCRAM-SHA-1")])


async def _auth_before_connack(link: Link, n: int) -> None:
    await link.expect(1)
    link.writer.write(AUTH_PACKET if n < 2 else V5_CONNACK)


async def _auth_after_connack(link: Link, n: int) -> None:
    await link.handshake()
    if n < 2:
        link.writer.write(AUTH_PACKET)


async def _connack_bad_authentication_method(link: Link, n: int) -> None:
    await link.expect(1)
    link.writer.write(b"\x20\x03\x00\x8c\x00" if n < 2 else V5_CONNACK)


@pytest.mark.parametrize("script", [_auth_before_connack, _auth_after_connack, _connack_bad_authentication_method])
async def test_a_broker_asking_for_enhanced_auth_is_one_clear_error_then_slow_retries(script, caplog):
    caplog.set_level(logging.DEBUG, logger="iotgw.bridge")
    probe = Probe()
    async with FakeBroker(script) as broker:
        client = started(broker.url(), probe, min_delay=0.01, refused_delay=0.5)
        try:
            await until(lambda: len(broker.links) == 3 and client.connected, what="three attempts, the third accepted")
            gaps = [b.accepted_at - a.accepted_at for a, b in zip(broker.links, broker.links[1:], strict=False)]
            assert min(gaps) >= 0.45, f"retried after {gaps}s, not the refused delay"
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1, errors
            assert "enhanced authentication" in errors[0] and "does not support" in errors[0]
            assert "MQTT_URL" in errors[0]
            if script is _auth_before_connack:
                assert "SCRAM-SHA-1" in errors[0]
            if script is _auth_after_connack:
                assert disconnect_reason(broker.links[0]) == 0x82  # protocol error: we asked for no AUTH
        finally:
            await client.stop()


# --- QoS 2 and Topic Alias: not implemented, refused ---------------------------------------------


async def _sends(link: Link, n: int, packet: bytes) -> None:
    await link.handshake()
    if n == 0:
        link.writer.write(packet)


@pytest.mark.parametrize(("packet", "reason"), [
    (encode_publish("devices/d1/telemetry", b"{}", qos=2, mid=3, v5=True), 0x82),
    (encode_publish("devices/d1/telemetry", b"{}", qos=1, mid=3, v5=True,
                    properties=encode_properties([(TOPIC_ALIAS, 1)])), 0x94),
    (b"\x50\x02\x00\x09", 0x82),  # a PUBREC: the bridge never publishes at QoS 2
], ids=["qos2-publish", "topic-alias", "pubrec"])
async def test_what_the_bridge_never_asked_for_is_a_v5_disconnect_with_its_reason(packet, reason):
    probe = Probe()

    async def script(link: Link, n: int) -> None:
        await _sends(link, n, packet)

    async with FakeBroker(script) as broker:
        client = started(broker.url(), probe)
        try:
            await until(lambda: len(probe.connects) == 2, what="the reconnect")
            await until(lambda: broker.links[0].closed)
            assert disconnect_reason(broker.links[0]) == reason
            assert probe.raws == []
        finally:
            await client.stop()


async def test_publish_at_qos2_is_refused_before_anything_is_sent():
    probe = Probe()

    async def script(link: Link, n: int) -> None:
        await link.handshake()

    async with FakeBroker(script) as broker:
        client = started(broker.url(), probe)
        try:
            await until(lambda: client.connected)
            with pytest.raises(ValueError, match="QoS 0 or 1"):
                await client.publish("devices/d1/commands", b"x", qos=2)
        finally:
            await client.stop()
        assert [kind for kind, _ in broker.links[0].received] == [1, SUBSCRIBE, DISCONNECT]

