"""The bridge's own asyncio MQTT client: one connection kept up forever, persistent session, manual acks.

Everything runs on the bridge's event loop: no network thread, no per-message callback.
A socket read is split into packets in one loop (bridge.mqtt.codec) and its PUBLISHes
are handed on as one list. Inbound QoS 1 messages are acked only when `ack()` is told
to, after the commit; a message that came on an earlier connection is never acked on
a later one (its packet id may mean another message by then): the broker resends it.
What of MQTT 3.1.1 and 5 it implements, and what it refuses: docs/mqtt-client.md.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable, Sequence

from bridge.mqtt.codec import (
    AUTH,
    CONNACK,
    CORRELATION_DATA,
    DISCONNECT,
    DISCONNECT_PACKET,
    MALFORMED,
    MAX_REMAINING,
    MAXIMUM_PACKET_SIZE,
    MAXIMUM_QOS,
    PACKET_TOO_LARGE,
    PINGREQ_PACKET,
    PINGRESP,
    PROTOCOL_ERROR,
    PUBACK,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    RESPONSE_TOPIC,
    SERVER_KEEP_ALIVE,
    SUBACK,
    UNSUBACK,
    V3_CONNACK,
    PacketReader,
    ProtocolError,
    Raw,
    Will,
    decode_ack,
    decode_auth,
    decode_connack,
    decode_disconnect,
    decode_suback,
    encode_connect,
    encode_disconnect,
    encode_properties,
    encode_pubacks,
    encode_publish,
    encode_subscribe,
    encode_unsubscribe,
    reason_name,
)
from core.broker import BrokerConfig

logger = logging.getLogger("iotgw.bridge")

NO_PROPERTIES = b"\x00"
MAX_IN_FLIGHT = 65_000  # packet ids are 16 bits; a few stay free for SUBSCRIBE
# Room for a PUBLISH's fixed header, topic (a device topic is under 100 bytes), packet id and v5
# properties on top of the largest payload the bridge accepts (IOTGW_MAX_PAYLOAD).
PACKET_HEADROOM = 4096
BAD_AUTHENTICATION_METHOD, QOS_NOT_SUPPORTED = 0x8C, 0x9B
# Seconds between attempts while the broker asks for enhanced authentication: only its operator can
# change that, and when they have, the bridge comes back by itself (as after any broker outage).
REFUSED_DELAY = 300.0


class PublishRefused(ConnectionError):
    """The broker answered a publish with a v5 failure reason code (e.g. 0x87 not authorized)."""

    def __init__(self, reason: int) -> None:
        super().__init__(f"broker refused the publish: {reason_name(reason)}")
        self.reason = reason


class ConnectRefused(ConnectionError):
    """The broker answered CONNECT with a failure."""


class AuthUnsupported(ConnectRefused):
    """The broker asked for MQTT 5 enhanced authentication (AUTH, or CONNACK 0x8C), which iotgw does not do."""


class MqttClient:
    """Connects, reconnects with backoff (1 s .. 30 s) forever, resubscribes; publishes await the broker's ack."""

    def __init__(
        self,
        config: BrokerConfig,
        *,
        client_id: str,
        on_messages: Callable[[list[Raw]], None],
        subscriptions: Sequence[tuple[str, int]] = (),
        keepalive: int = 30,
        session_expiry: int = 0,
        receive_maximum: int = 0,
        max_packet_size: int = 64 * 1024 + PACKET_HEADROOM,
        connect_timeout: float = 10.0,
        min_delay: float = 1.0,
        max_delay: float = 30.0,
        refused_delay: float = REFUSED_DELAY,
        will: Callable[[], Will | None] | None = None,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.v5 = config.protocol == 5
        self.on_messages = on_messages
        # on_connect(session_present) after a successful CONNACK; on_disconnect(why) when it is lost.
        self.on_connect: Callable[[bool], None] | None = None
        self.on_disconnect: Callable[[str], None] | None = None
        self.subscriptions = list(subscriptions)
        self.keepalive = keepalive
        self.session_expiry = session_expiry
        self.receive_maximum = receive_maximum
        # Advertised in a v5 CONNECT, and enforced on reads with either version.
        self.max_packet_size = max_packet_size
        self.connect_timeout = connect_timeout
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.refused_delay = refused_delay
        # Asked before each CONNECT: a will may differ per connection (a Sparkplug STATE carries its time).
        self.will = will
        self.generation = 0  # +1 per connection; Raws carry the one they came on
        self._ssl = config.ssl_context()  # CERT_REQUIRED, hostname checked
        self._conn: _Connection | None = None  # the connection with a successful CONNACK, if any
        self._broker_max_packet = MAX_REMAINING + 5  # the broker's v5 Maximum Packet Size, from CONNACK
        self._broker_max_qos = 1
        self._auth_said = False  # the enhanced-authentication error is logged once, until a connection lasts
        self._peak = 0
        self._inflight: dict[int, asyncio.Future] = {}  # our QoS 1 publishes awaiting their PUBACK
        self._subscribing: dict[int, list[str]] = {}
        self._unsubscribing: dict[int, asyncio.Future] = {}
        self._quota = MAX_IN_FLIGHT
        self._waiters: deque[asyncio.Future] = deque()
        self._next_mid = 0
        self._task: asyncio.Task | None = None
        self._stopping = False

    @property
    def connected(self) -> bool:
        """Whether a connection is up (CONNACK received, not lost since)."""
        return self._conn is not None

    @property
    def peak_buffered(self) -> int:
        """The most bytes of one incomplete packet this client has held (at most `max_packet_size` + 5)."""
        return self._peak

    def start(self) -> None:
        """Connect in the background, and reconnect whenever the connection is lost."""
        self._stopping = False
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Send DISCONNECT (the session stays: its expiry was set at connect) and stop reconnecting."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.transport.write(DISCONNECT_PACKET)
        conn.transport.close()  # after the buffered writes are flushed
        try:
            async with asyncio.timeout(2):
                await asyncio.shield(conn.closed)
        except TimeoutError:
            conn.transport.abort()
            self._connection_ended(conn, "client stopped")

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                      response_topic: str | None = None, correlation_data: bytes | None = None) -> None:
        """Publish at QoS 0, or at QoS 1 and wait for the broker's PUBACK.

        No queue while the broker is away: ConnectionError at once, or when the connection
        is lost before the ack (the message may or may not have reached the broker).
        PublishRefused, without sending, for what the broker said it would refuse (0x95, 0x9B).
        """
        if qos not in (0, 1):
            raise ValueError("the bridge publishes at QoS 0 or 1 (QoS 2 is not implemented)")
        properties = NO_PROPERTIES
        if self.v5 and (response_topic or correlation_data):
            props: list[tuple[int, str | bytes]] = [(RESPONSE_TOPIC, response_topic)] if response_topic else []
            props += [(CORRELATION_DATA, correlation_data)] if correlation_data else []
            properties = encode_properties(props)
        if self._conn is None:
            raise ConnectionError("not connected to the broker")
        if qos > self._broker_max_qos:
            raise PublishRefused(QOS_NOT_SUPPORTED)
        if not qos:
            packet = encode_publish(topic, payload, qos=0, v5=self.v5, retain=retain, properties=properties)
            self._conn.transport.write(self._fitting(packet))
            return
        while len(self._inflight) >= self._quota:  # the broker's Receive Maximum
            await self._slot()
        conn = self._conn
        if conn is None:
            raise ConnectionError("connection to the broker lost")
        mid = self._allocate()
        future = asyncio.get_running_loop().create_future()
        packet = encode_publish(topic, payload, qos=1, mid=mid, v5=self.v5, retain=retain, properties=properties)
        self._inflight[mid] = future
        try:
            conn.transport.write(self._fitting(packet))
            await future
        finally:
            if self._inflight.get(mid) is future:
                del self._inflight[mid]
            self._release()

    def _fitting(self, packet: bytes) -> bytes:
        """The packet, if it is within the broker's Maximum Packet Size (it would disconnect us otherwise)."""
        if len(packet) > self._broker_max_packet:
            raise PublishRefused(PACKET_TOO_LARGE)
        return packet

    async def unsubscribe(self, topics: list[str]) -> None:
        """UNSUBSCRIBE from topic filters on the current connection and wait for the UNSUBACK."""
        if self._conn is None:
            raise ConnectionError("not connected to the broker")
        mid = self._allocate()
        future = asyncio.get_running_loop().create_future()
        self._unsubscribing[mid] = future
        self._conn.transport.write(encode_unsubscribe(mid, topics, v5=self.v5))
        await future

    async def resubscribe(self, subscriptions: Sequence[tuple[str, int]]) -> None:
        """Make these the subscriptions (kept for reconnects): SUBSCRIBE the new filters, UNSUBSCRIBE the gone ones."""
        wanted = list(subscriptions)
        old = {topic for topic, _ in self.subscriptions}
        new = [(topic, options) for topic, options in wanted if topic not in old]
        gone = [topic for topic in old if topic not in {t for t, _ in wanted}]
        self.subscriptions = wanted
        conn = self._conn
        if conn is None:
            return  # the next CONNACK subscribes to all of them
        if new:
            mid = self._allocate()
            self._subscribing[mid] = [topic for topic, _ in new]
            conn.transport.write(encode_subscribe(mid, new, v5=self.v5))
        if gone:
            await self.unsubscribe(gone)

    def ack(self, raws: list[Raw]) -> None:
        """Acknowledge QoS 1 messages of the current connection: one write of PUBACKs."""
        conn = self._conn
        if conn is None:
            return
        generation = conn.generation
        mids = [raw.mid for raw in raws if raw.qos == 1 and raw.generation == generation]
        if mids:
            conn.transport.write(encode_pubacks(mids))

    # --- connection lifecycle ---------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.min_delay
        while True:
            wait = delay
            try:
                conn = await self._open()
            except AuthUnsupported as exc:
                wait = self._auth_refused(exc)
            except ConnectRefused as exc:
                logger.error("%s; retrying in %.0fs", exc, delay)
            except (OSError, TimeoutError, ProtocolError) as exc:
                why = self.config.explain_tls(exc) if isinstance(exc, ssl.SSLError) else exc or type(exc).__name__
                logger.warning("cannot connect to the broker at %s:%s (%s); retrying in %.0fs",
                               self.config.host, self.config.port, why, delay)
            else:
                delay = wait = self.min_delay
                await asyncio.shield(conn.closed)
                if conn.refusal is not None:
                    wait = self._auth_refused(conn.refusal)
                else:
                    self._auth_said = False
            await asyncio.sleep(wait)
            delay = min(delay * 2, self.max_delay)

    def _auth_refused(self, exc: AuthUnsupported) -> float:
        """Say it once (retrying cannot help until the broker's operator acts), then retry rarely."""
        level = logging.DEBUG if self._auth_said else logging.ERROR
        self._auth_said = True
        logger.log(level, "%s; retrying every %gs", exc, self.refused_delay)
        return self.refused_delay

    async def _open(self) -> _Connection:
        """One connection: TCP (TLS), CONNECT, then wait for the CONNACK."""
        self.generation += 1
        conn = _Connection(self, self.generation)
        loop = asyncio.get_running_loop()
        transport = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, _ = await loop.create_connection(
                    lambda: conn, self.config.host, self.config.port, ssl=self._ssl,
                    server_hostname=self.config.host if self._ssl else None)
                transport.write(encode_connect(
                    client_id=self.client_id, v5=self.v5, keepalive=self.keepalive, clean=False,
                    username=self.config.username, password=self.config.password,
                    session_expiry=self.session_expiry, receive_maximum=self.receive_maximum,
                    max_packet_size=self.max_packet_size, will=self.will() if self.will else None))
                await conn.connack
        except BaseException:
            conn.ours = True
            if transport is not None:
                transport.abort()
            raise
        return conn

    def _connack(self, conn: _Connection, body: bytes) -> None:
        """CONNACK: on success the connection goes live before any PUBLISH read with it is handed on."""
        session_present, code, props = decode_connack(body, v5=self.v5)
        if code == BAD_AUTHENTICATION_METHOD and self.v5:
            conn.fail_connect(self._auth_unsupported(f"CONNACK {reason_name(code)}"))
            return
        if code:
            why = reason_name(code) if self.v5 else V3_CONNACK.get(code, f"return code {code}")
            text = f" ({props[REASON_STRING]})" if REASON_STRING in props else ""
            conn.fail_connect(ConnectRefused(f"broker refused the connection: {why}{text}"))
            return
        self._quota = min(props.get(RECEIVE_MAXIMUM, MAX_IN_FLIGHT), MAX_IN_FLIGHT)
        self._broker_max_packet = props.get(MAXIMUM_PACKET_SIZE, MAX_REMAINING + 5)
        self._broker_max_qos = props.get(MAXIMUM_QOS, 1)
        self._conn = conn
        conn.start_keepalive(props.get(SERVER_KEEP_ALIVE, self.keepalive))
        if self.subscriptions:
            mid = self._allocate()
            self._subscribing[mid] = [topic for topic, _ in self.subscriptions]
            conn.transport.write(encode_subscribe(mid, self.subscriptions, v5=self.v5))
        self._release(all_waiters=True)
        if not conn.connack.done():
            conn.connack.set_result(session_present)
        if self.on_connect is not None:
            self.on_connect(session_present)

    def _connection_ended(self, conn: _Connection, why: str) -> None:
        """Fail what awaited this connection; tell the owner once, if it had been live."""
        conn.end(why)
        if self._conn is conn:
            self._conn = None
        if conn.announced or not conn.was_live:
            return
        conn.announced = True
        error = ConnectionError(f"connection to the broker lost ({why})")
        for mid, future in list(self._inflight.items()):
            if not future.done():
                future.set_exception(error)
            del self._inflight[mid]
        self._subscribing.clear()
        for future in self._unsubscribing.values():
            if not future.done():
                future.set_exception(error)
        self._unsubscribing.clear()
        self._release(all_waiters=True)
        if self.on_disconnect is not None and not self._stopping:
            self.on_disconnect(why)

    def _control(self, conn: _Connection, packets: list[tuple[int, bytes]]) -> None:
        """Every packet other than PUBLISH."""
        for first, body in packets:
            kind = first >> 4
            if kind == PUBACK:
                self._publish_acked(*decode_ack(body))
            elif kind == PINGRESP:
                conn.ping_outstanding = False
            elif kind == SUBACK:
                self._subacked(*decode_suback(body, v5=self.v5))
            elif kind == CONNACK and not conn.was_live:
                self._connack(conn, body)
            elif kind == DISCONNECT and self.v5:
                code, text = decode_disconnect(body)
                logger.warning("broker sent DISCONNECT: %s%s", reason_name(code), f" ({text})" if text else "")
                conn.transport.close()
            elif kind == UNSUBACK:
                future = self._unsubscribing.pop(decode_ack(body)[0], None)
                if future is not None and not future.done():
                    future.set_result(None)
            elif kind == AUTH and self.v5:
                method = decode_auth(body)[1]
                raise self._auth_unsupported(f"AUTH, method {method!r}" if method else "AUTH")
            else:  # PUBREC, PUBREL, PUBCOMP among them: the bridge never takes part in QoS 2
                raise ProtocolError(f"unexpected packet type {kind}", PROTOCOL_ERROR)

    def _auth_unsupported(self, what: str) -> AuthUnsupported:
        return AuthUnsupported(
            f"the broker at {self.config.host}:{self.config.port} asked for MQTT 5 enhanced authentication "
            f"({what}), which iotgw does not support: let the bridge log in on that listener with the user "
            "name and password in MQTT_URL (mqtt://user:password@host) or a client certificate "
            "(mqtts://host?cafile=…&certfile=…&keyfile=…)")

    def _publish_acked(self, mid: int, reason: int) -> None:
        future = self._inflight.get(mid)
        if future is None or future.done():
            return
        if reason >= 0x80:
            future.set_exception(PublishRefused(reason))
        else:
            future.set_result(None)

    def _subacked(self, mid: int, codes: list[int]) -> None:
        topics = self._subscribing.pop(mid, [])
        for topic, code in zip(topics, codes, strict=False):
            if code >= 0x80:
                why = reason_name(code) if self.v5 else "failure"
                logger.error("broker REFUSED the subscription to %s (%s): this bridge receives nothing on it",
                             topic, why)
            else:
                logger.info("subscribed to %s (QoS %d)", topic, code)

    def _allocate(self) -> int:
        mid = self._next_mid
        while True:
            mid = mid % 65535 + 1
            if mid not in self._inflight and mid not in self._subscribing and mid not in self._unsubscribing:
                self._next_mid = mid
                return mid

    async def _slot(self) -> None:
        """Wait until an in-flight publish ends or the connection changes."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # pass the slot on
            raise

    def _release(self, *, all_waiters: bool = False) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not all_waiters:
                    return


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to the broker."""

    def __init__(self, client: MqttClient, generation: int) -> None:
        self.client = client
        self.generation = generation
        self.reader = PacketReader(v5=client.v5, generation=generation, max_packet=client.max_packet_size)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made, before any use
        self.refusal: AuthUnsupported | None = None  # why the broker cannot be served, seen after CONNACK
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future = loop.create_future()
        self.closed: asyncio.Future = loop.create_future()
        self.was_live = False
        self.ours = False  # we closed it (not the broker)
        self.announced = False
        self.ping_outstanding = False
        self._ping: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # small PUBACKs and commands must not wait for Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            raws, others = self.reader.feed(data)
            if others:
                self.client._control(self, others)
        except AuthUnsupported as exc:
            self.client._peak = max(self.client._peak, self.reader.peak)
            if self.was_live:
                self.refusal = exc
                self.drop(PROTOCOL_ERROR)
            else:
                self.fail_connect(exc)
            return
        except (ProtocolError, ValueError) as exc:
            self.client._peak = max(self.client._peak, self.reader.peak)
            reason = exc.reason if isinstance(exc, ProtocolError) else MALFORMED
            logger.error("broker sent what MQTT forbids (%s); %s and reconnecting", exc,
                         f"DISCONNECT {reason_name(reason)}" if self.client.v5 else "closing")
            self.drop(reason)
            return
        if self.reader.peak > self.client._peak:
            self.client._peak = self.reader.peak
        if raws:
            self.client.on_messages(raws)

    def drop(self, reason: int) -> None:
        """Stop reading and close, after a v5 DISCONNECT with `reason` once the connection is live."""
        self.ours = True
        if self.client.v5 and self.was_live:
            self.transport.write(encode_disconnect(reason))
            self.transport.close()  # reads stop now; the DISCONNECT is flushed first
            asyncio.get_running_loop().call_later(2, self.transport.abort)  # unless the broker reads nothing
        else:
            self.transport.abort()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        # TLS 1.3: a broker refuses a client certificate after the handshake, so it shows up here; its
        # alert is often lost to the reset that our CONNECT, arriving after its close, provokes.
        refused = (self.client.config.tls and not self.was_live and not self.ours
                   and (exc is None or isinstance(exc, ConnectionError)))
        if isinstance(exc, ssl.SSLError) or refused:
            why = self.client.config.explain_tls(exc)
        else:
            why = str(exc) if exc else "closed by the broker"
        self.client._connection_ended(self, why)

    def start_keepalive(self, seconds: int) -> None:
        """PINGREQ every `seconds`; no PINGRESP by the next one means the connection is dead."""
        self.was_live = True
        self.keepalive = seconds
        if seconds:
            self._ping = asyncio.get_running_loop().call_later(seconds, self._keepalive)

    def _keepalive(self) -> None:
        if self.transport.is_closing():
            return
        if self.ping_outstanding:
            logger.warning("no PINGRESP from the broker within %ss; reconnecting", self.keepalive)
            self.transport.abort()
            return
        self.ping_outstanding = True
        self.transport.write(PINGREQ_PACKET)
        self._ping = asyncio.get_running_loop().call_later(self.keepalive, self._keepalive)

    def fail_connect(self, exc: Exception) -> None:
        self.ours = True
        if not self.connack.done():
            self.connack.set_exception(exc)
        self.transport.close()

    def end(self, why: str) -> None:
        if self._ping is not None:
            self._ping.cancel()
        if not self.connack.done():
            self.connack.set_exception(ConnectionError(f"connection closed before CONNACK ({why})"))
        if not self.closed.done():
            self.closed.set_result(why)
