"""MQTT, the first transport behind the seam (core/transport.py): inbound messages in, commands out as publishes.

It owns the bridge's MQTT client: what a socket read brings is offered to the sink as one
list of Raws (each an Envelope: a topic and a payload), read with its dialect (the iotgw one)
when the pipeline takes the batch, and acknowledged (PUBACK) only when the pipeline says the batch has committed. A
command is delivered as a QoS 1 publish and counts as handed over at the broker's PUBACK.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from bridge.mqtt.client import PACKET_HEADROOM, MqttClient
from bridge.mqtt.codec import Raw, Will
from core.broker import BrokerConfig
from core.dialect import CommandMessage, command_message
from core.errors import DeliveryFailed
from core.sparkplug.host import PrimaryHost
from core.transport import Decoder, Outbound, Sink
from devices.stats import IngestStats

logger = logging.getLogger("iotgw.bridge")

# QoS 0 has no flow control from the broker; past this many waiting, drop and count.
QOS0_BACKLOG = 50_000


def shed_qos0(raws: list[Raw], *, waiting: int, backlog: int) -> list[Raw]:
    """The messages to keep: all of them, unless more than `backlog` wait already; then QoS 1 and 2 only.

    The broker holds QoS 1 back once Receive Maximum are unacknowledged; QoS 0 it never holds back.
    """
    return raws if waiting <= backlog else [raw for raw in raws if raw.qos]


class MqttTransport:
    """The MQTT edge's Inlet and Outlet over one MqttClient (one connection, kept up forever)."""

    name = "mqtt"

    def __init__(self, broker: BrokerConfig, *, sink: Sink, decoder: Decoder, stats: IngestStats, client_id: str,
                 subscriptions: list[tuple[str, int]], session_expiry: int = 0, receive_maximum: int = 0,
                 keepalive: int = 30, max_packet_size: int = 64 * 1024 + PACKET_HEADROOM,
                 qos0_backlog: int = QOS0_BACKLOG,
                 encode: Callable[[Outbound], CommandMessage] = command_message,
                 host: PrimaryHost | None = None) -> None:
        self.broker = broker
        self._host = host  # the Sparkplug primary host's STATE, when IOTGW_SPARKPLUG_HOST_ID is set
        self._encode = encode  # the device's dialect for commands (core/router.py: its profile's)
        self._replying: set[asyncio.Task[None]] = set()
        self._sink = sink
        self.decoder = decoder  # the dialect the pipeline reads these messages with, inside its batches
        self._stats = stats
        self._qos0_backlog = qos0_backlog
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()
        # v5: clean_start=0 and the session expiry keep the session across restarts (v3.1.1: clean_session=0).
        self._client = MqttClient(broker, client_id=client_id, on_messages=self._received, subscriptions=subscriptions,
                                  keepalive=keepalive, session_expiry=session_expiry, receive_maximum=receive_maximum,
                                  max_packet_size=max_packet_size, will=self._will if host else None)
        # The client takes its connection callbacks as attributes, not keywords (bridge/mqtt/client.py is kept
        # as it is here); this is the one place they are set.
        self._client.on_connect = self._connected
        self._client.on_disconnect = self._disconnected

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers), and reconnect whenever it is lost."""
        self._client.start()

    async def stop(self) -> None:
        """Disconnect cleanly (the Sparkplug host says offline first: a DISCONNECT discards the will)."""
        if self._host is not None and self.connected:
            try:
                async with asyncio.timeout(2):
                    await self._client.publish(self._host.topic, self._host.last_death(), qos=1, retain=True)
            except (ConnectionError, TimeoutError) as exc:
                logger.warning("Sparkplug STATE death not published before disconnecting: %s", exc)
        await self._client.stop()
        self._up.clear()
        self._down.set()

    @property
    def max_packet_size(self) -> int:
        """The largest packet the client accepts (advertised to v5 brokers)."""
        return self._client.max_packet_size

    @property
    def peak_buffered(self) -> int:
        """The most bytes of one incomplete packet the client has held."""
        return self._client.peak_buffered

    @property
    def connected(self) -> bool:
        """Whether a broker connection is up."""
        return self._up.is_set()

    async def until_connected(self) -> None:
        """Return once a broker connection is up."""
        await self._up.wait()

    async def until_disconnected(self) -> None:
        """Return once the broker connection is lost."""
        await self._down.wait()

    def _connected(self, session_present: bool) -> None:
        self._down.clear()
        self._up.set()
        logger.info("bridge connected (session present: %s)", session_present)
        if self._host is not None:
            self._spawn(self._publish_birth())

    def _will(self) -> Will:
        """Before each CONNECT: the Sparkplug host's death, with this connection's timestamp."""
        assert self._host is not None
        return Will(self._host.topic, self._host.death(datetime.now(UTC)), qos=1, retain=True)

    async def _publish_birth(self) -> None:
        assert self._host is not None
        try:
            await self._client.publish(self._host.topic, self._host.birth(), qos=1, retain=True)
        except ConnectionError as exc:  # the next connection publishes its own
            logger.warning("Sparkplug STATE birth not published: %s", exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._replying.add(task)
        task.add_done_callback(self._replying.discard)

    def _disconnected(self, why: str) -> None:
        self._up.clear()
        self._down.set()
        logger.warning("bridge disconnected from broker (%s); reconnecting with backoff", why)

    # --- device → domain (Inlet) -----------------------------------------------------------

    def _received(self, raws: list[Raw]) -> None:
        """What one socket read brought, offered as one list; QoS 0 is shed past the backlog."""
        kept = shed_qos0(raws, waiting=len(self._sink), backlog=self._qos0_backlog)
        self._stats.counts["dropped_qos0"] += len(raws) - len(kept)
        self._sink.offer(self, kept)

    def ack(self, batch: Sequence[Raw]) -> None:
        """PUBACK after the commit; a message of an older connection is left for the broker to resend.

        Then what a stateful decoder wants said back (a Sparkplug rebirth request) is published.
        """
        self._client.ack(list(batch))
        drain = getattr(self.decoder, "replies", None)
        if drain is not None:
            for topic, payload, qos in drain():
                self._spawn(self._reply(topic, payload, qos))

    async def _reply(self, topic: str, payload: bytes, qos: int) -> None:
        try:
            await self._client.publish(topic, payload, qos=qos)
        except (ConnectionError, ValueError) as exc:
            logger.warning("a decoder's reply on %s was not published: %s", topic[:200], exc)

    # --- domain → device (Outlet) ----------------------------------------------------------

    async def deliver(self, command: Outbound) -> None:
        """Publish at QoS 1 and return at the PUBACK; Response Topic and Correlation Data go out on v5 only."""
        try:
            message = self._encode(command)
        except ValueError as exc:  # its profile cannot write it (a parameter that cannot be a topic level)
            raise DeliveryFailed(f"command not encodable for its profile: {exc}") from exc
        try:
            await self._client.publish(message.topic, message.payload, qos=1, response_topic=message.response_topic,
                                       correlation_data=message.correlation_data)
        except ConnectionError as exc:
            raise DeliveryFailed(str(exc)) from exc

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Publish anything else (a drain's marker) and wait for the broker's ack; ConnectionError if it cannot."""
        await self._client.publish(topic, payload, qos=qos)

    @property
    def subscriptions(self) -> list[tuple[str, int]]:
        """What the client subscribes to at each connection."""
        return self._client.subscriptions

    @subscriptions.setter
    def subscriptions(self, value: list[tuple[str, int]]) -> None:
        self._client.subscriptions = list(value)

    async def resubscribe(self, subscriptions: list[tuple[str, int]]) -> None:
        """Follow the profiles in use: subscribe to new topic filters, unsubscribe from those no longer needed."""
        await self._client.resubscribe(subscriptions)

    async def unsubscribe(self, topics: list[str]) -> None:
        """Unsubscribe on the current connection and wait for the UNSUBACK."""
        await self._client.unsubscribe(topics)
