"""The amqtt workarounds: what they override still exists, and the CONNECT sniffer takes any bytes."""

from __future__ import annotations

import asyncio
import inspect
import random

import pytest
from amqtt.broker import Broker

from bridge.broker_amqtt import _connect_head, _Reader

# amqtt is pinned (pyproject.toml): an upgrade that renames what bridge/broker_amqtt.py overrides or calls
# must fail here, not silently bring the bugs back.
OVERRIDDEN = {
    "stream_connected": ["self", "reader", "writer", "listener_name"],
    "_publish_retained_messages_for_subscription": ["self", "subscription", "session"],
    "_handle_client_session": ["self", "reader", "writer", "client_session", "handler", "server", "listener_name"],
}
CALLED = ("external_connected", "_handle_message_delivery", "_get_handler", "_matches", "_topic_filtering")


def test_what_the_workarounds_override_and_call_is_still_there():
    for name, params in OVERRIDDEN.items():
        assert list(inspect.signature(getattr(Broker, name)).parameters) == params, name
    for name in CALLED:
        assert callable(getattr(Broker, name)), name


def connect(level: int, name: bytes = b"MQTT") -> bytes:
    body = len(name).to_bytes(2, "big") + name + bytes([level, 0x02, 0, 60, 0, 1]) + b"c"
    return bytes([0x10, len(body)]) + body


async def head_of(data: bytes) -> tuple[bytes, int | None]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await _connect_head(reader)


@pytest.mark.parametrize(("level", "name"), [(4, b"MQTT"), (5, b"MQTT"), (3, b"MQIsdp")])
async def test_the_sniffer_reads_the_protocol_level_and_the_reader_replays_every_byte(level, name):
    packet = connect(level, name)
    reader = asyncio.StreamReader()
    reader.feed_data(packet)
    reader.feed_eof()
    head, found = await _connect_head(reader)
    assert found == level and packet.startswith(head)
    replay = _Reader(reader, head)
    assert await replay.read(1) + await replay.read(len(packet) - 1) == packet


async def test_the_sniffer_takes_any_bytes_without_failing_otherwise_than_at_their_end():
    rng = random.Random(20261201)
    for _ in range(2000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 24)))
        if rng.random() < 0.5:
            data = b"\x10" + data
        try:
            head, level = await head_of(data)
        except asyncio.IncompleteReadError:
            continue
        assert data.startswith(head) and (level is None or level == head[-1])
