"""A Confirmable POST's ACK is its 2.04, sent after the commit, even when the commit outlasts EMPTY_ACK_DELAY."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aiocoap import CON, Code, Message
from aiocoap.numbers.constants import TransportTuning
from aiocoap.numbers.types import Type
from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer

from coap.server import CoapServer
from devices.services.devices import device_register
from devices.services.telemetry import IngestOutcome, telemetry_ingest
from testing.coap import free_udp_port

pytestmark = pytest.mark.django_db(transaction=True)

# aiocoap 0.4.17's own default: an empty ACK this long after a request it has not answered yet.
LIBRARY_EMPTY_ACK_DELAY = 0.1


@pytest.fixture
def restore_tuning():
    before = TransportTuning.EMPTY_ACK_DELAY
    yield
    TransportTuning.EMPTY_ACK_DELAY = before


def confirmable_post(path: str, payload: bytes, *, mid: int) -> bytes:
    message = Message(code=Code.POST, uri=f"coap://127.0.0.1{path}", payload=payload)
    message.mtype, message.mid, message.token = CON, mid, b"\x07\x01"
    return message.encode()


async def test_ack_waits_for_a_commit_held_past_the_empty_ack_delay(restore_tuning):
    assert TransportTuning.EMPTY_ACK_DELAY == LIBRARY_EMPTY_ACK_DELAY  # what ack_after_commit must outlast
    device, secret = await sync_to_async(device_register)(device_id="held-ack")
    release, started = asyncio.Event(), asyncio.Event()
    real_store = sync_to_async(telemetry_ingest, thread_sensitive=True)

    async def held_store(**kwargs) -> IngestOutcome:
        started.set()
        await release.wait()
        return await real_store(**kwargs)

    port = free_udp_port()
    server = CoapServer(layer=InMemoryChannelLayer(), client_id="test-coap-ack", host="127.0.0.1", port=port,
                        plain=True, store=held_store, commit_wait=5.0)
    await server.start()
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, confirmable_post(f"/devices/{device.id}/telemetry?secret={secret}",
                                                      b'{"ts": 1767225600000, "t": 1}', mid=0x1234))
        await asyncio.wait_for(started.wait(), 5)
        # Held for 5x the library's delay: nothing may come back, not even an empty ACK.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(loop.sock_recv(sock, 2048), LIBRARY_EMPTY_ACK_DELAY * 5)
        released_at = time.monotonic()
        release.set()
        first = Message.decode(await asyncio.wait_for(loop.sock_recv(sock, 2048), 5))
        assert first.mtype == Type.ACK and first.mid == 0x1234
        assert first.code == Code.CHANGED  # the ACK is the answer, and it came after the commit
        assert time.monotonic() - released_at < 2
    finally:
        sock.close()
        await server.stop()
