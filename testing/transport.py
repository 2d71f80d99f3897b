"""An in-memory transport behind the seam (core/transport.py): what tests send, it offers, acks and delivers.

It is the smallest complete transport, so it shows what a new one (CoAP, WebSocket devices)
implements: offer its envelopes with their dialect, ack them when told, deliver commands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from core.dialect import IotgwDecoder
from core.errors import DeliveryFailed
from core.transport import Decoder, Outbound, Sink


@dataclass(frozen=True, slots=True)
class Message:
    """One envelope: a topic and a payload, as an MQTT message carries them."""

    topic: str
    payload: bytes


class MemoryTransport:
    """Inlet and Outlet in memory: `send()` offers messages, `acked` and `delivered` record what came back."""

    name = "memory"

    def __init__(self, sink: Sink, *, decoder: Decoder | None = None) -> None:
        self._sink = sink
        self.decoder = decoder or IotgwDecoder(max_payload=65536)
        self.acked: list[Message] = []
        self.delivered: list[Outbound] = []
        self.refuse = False  # deliveries fail while set, as with the broker away
        self._up = asyncio.Event()
        self._up.set()
        self._down = asyncio.Event()
        self._acked = asyncio.Event()

    def send(self, *messages: tuple[str, bytes]) -> list[Message]:
        """Offer messages as one read would bring them."""
        envelopes = [Message(topic, payload) for topic, payload in messages]
        self._sink.offer(self, envelopes)
        return envelopes

    def ack(self, batch: Sequence[Message]) -> None:
        self.acked.extend(batch)
        self._acked.set()

    async def until_acked(self, count: int, *, timeout: float = 30.0) -> list[Message]:
        """Wait until at least `count` envelopes were acknowledged; returns them all."""
        async with asyncio.timeout(timeout):
            while len(self.acked) < count:
                self._acked.clear()
                await self._acked.wait()
        return self.acked

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    async def until_connected(self) -> None:
        await self._up.wait()

    async def until_disconnected(self) -> None:
        await self._down.wait()

    async def deliver(self, command: Outbound) -> None:
        if self.refuse:
            raise DeliveryFailed("refused, as told")
        self.delivered.append(command)
