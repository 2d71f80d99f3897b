"""The embedded broker without Mosquitto: amqtt 0.12 (MQTT 3.1.1 only) in a thread, with fixes for three of its bugs.

amqtt's own plugin interface carries the registry's logins (RegistryAuth) and the
topic rights of devices/topics.py (DeviceTopics). `_Broker` works around
what amqtt 0.12.1 gets wrong, each measured here:

- a QoS 0 publish followed at once by DISCONNECT (what `mosquitto_pub` does) was
  dropped: it waited in the session's queue for a message loop that started too
  late (after the retained messages below) or was cancelled with it inside;
- a new client got every retained message matching *anyone's* subscription
  (every device saw every other device's `status`);
- an MQTT 5 CONNECT was misparsed and answered with a traceback in the log and
  nothing the client understands: it now gets a v5 CONNACK "unsupported protocol
  version" and the log says what to do.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from channels.db import database_sync_to_async

from bridge.broker import BRIDGE_USERNAME, Credentials, EmbeddedBroker, EmbeddedBrokerError, port_check
from core import topics
from core.ids import DEVICE_ID_RE
from devices.models import Device
from devices.secrets import secret_hash

logger = logging.getLogger("iotgw.broker")

_V5_UNSUPPORTED = bytes([0x20, 0x03, 0x00, 0x84, 0x00])  # CONNACK, reason 0x84 Unsupported Protocol Version
_said: dict[str, float] = {}


def _say_once(key: str, level: int, message: str, *args: object, every: float = 60.0) -> None:
    """Log a line at most once per `every` seconds per key (a client retrying must not flood the log)."""
    now = time.monotonic()
    if now - _said.get(key, -every) >= every:
        if len(_said) > 10_000:
            _said.clear()
        _said[key] = now
        logger.log(level, message, *args)


LOGIN = "iotgw.secret_hash"  # session attribute: the secret hash a device logged in with


@database_sync_to_async
def _device_login(username: str, password: str) -> str | None:
    """The device's secret hash if it may log in with that password, else None."""
    if not DEVICE_ID_RE.match(username) or not password:
        return None
    stored = Device.objects.filter(pk=username, enabled=True).values_list("secret_hash", flat=True).first()
    return stored if stored and hmac.compare_digest(stored, secret_hash(password)) else None


class RegistryAuth(BaseAuthPlugin):
    """A login is the bridge's account, or an enabled device with its secret (and a Last Will of its own)."""

    @dataclass
    class Config:
        bridge_password: str = ""

    async def authenticate(self, *, session: Any) -> bool:
        username, password = session.username or "", session.password or ""
        if username == BRIDGE_USERNAME:
            expected = self.context.config.bridge_password
            return bool(expected) and hmac.compare_digest(password.encode(), expected.encode())
        who = f"{username or '(no username)'} from {session.remote_address}"
        # amqtt publishes a Will without checking its topic: a device could speak for another one.
        if session.will_flag and not topics.may_publish(device_id=username, topic=session.will_topic or ""):
            _say_once(f"will:{username}", logging.WARNING, "MQTT login refused: %s has a Last Will on %r, "
                      "which is not its own status topic", who, session.will_topic)
            return False
        login = await _device_login(username, password)
        if login is not None:
            session.attributes[LOGIN] = login
            return True
        _say_once(f"auth:{username}", logging.WARNING, "MQTT login refused: %s (unknown device, wrong secret or "
                  "disabled; a device logs in with its id and secret, `python manage.py rotatesecret ID` issues "
                  "a new one)", who)
        return False


class DeviceTopics(BaseTopicPlugin):
    """The bridge may do anything; a device only what devices/topics.py allows."""

    @dataclass
    class Config:
        pass

    async def topic_filtering(self, *, session: Any = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        if session is None or not topic:
            return False
        username = session.username or ""
        if username == BRIDGE_USERNAME:
            return True
        if action == Action.PUBLISH:
            allowed = topics.may_publish(device_id=username, topic=topic)
        else:  # SUBSCRIBE, and RECEIVE of each message delivered
            allowed = topics.may_subscribe(device_id=username, topic_filter=topic)
        if not allowed and action != Action.RECEIVE:
            _say_once(f"topic:{username}:{action}", logging.WARNING, "MQTT %s refused: %s may not use %r",
                      action, username, topic, every=10.0)
        return allowed


class _Reader(StreamReaderAdapter):
    """Replays the bytes read to sniff the CONNECT, then reads on."""

    def __init__(self, reader: asyncio.StreamReader, head: bytes) -> None:
        super().__init__(reader)
        self._head = head

    async def read(self, n: int = -1) -> bytes:
        if not self._head:
            data: bytes = await super().read(n)
            return data
        if 0 <= n < len(self._head):
            data, self._head = self._head[:n], self._head[n:]
            return data
        data, self._head = self._head, b""
        rest = n - len(data) if n >= 0 else -1
        return data + (await super().read(rest) if rest else b"")


async def _connect_head(reader: asyncio.StreamReader) -> tuple[bytes, int | None]:
    """The bytes of a CONNECT up to its protocol level, and the level (None if it is not a CONNECT)."""
    head = await reader.readexactly(1)
    if head[0] != 0x10:
        return head, None
    for _ in range(4):  # remaining length
        byte = await reader.readexactly(1)
        head += byte
        if not byte[0] & 0x80:
            break
    size = await reader.readexactly(2)
    head += size
    name_len = int.from_bytes(size, "big")
    if name_len > 6:
        return head, None
    head += await reader.readexactly(name_len + 1)
    return head, head[-1]


class _Broker(Broker):
    """amqtt's Broker with the three fixes described in the module docstring."""

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               listener_name: str) -> None:
        try:
            head, level = await asyncio.wait_for(_connect_head(reader), 10)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        if level == 5:
            peer = writer.get_extra_info("peername") or ("?", 0)
            _say_once(f"v5:{peer[0]}", logging.WARNING,
                      "An MQTT 5 client (%s) was turned away: the embedded amqtt broker speaks MQTT 3.1.1 only. "
                      "Connect it with MQTT 3.1.1 (mosquitto_pub -V mqttv311, MQTT.js protocolVersion: 4, paho "
                      "MQTTv311), or install Mosquitto (apt install mosquitto / brew install mosquitto) and restart "
                      "the gateway, which then embeds it (MQTT 5 and 3.1.1), or set MQTT_URL to an MQTT 5 broker.",
                      peer[0])
            writer.write(_V5_UNSUPPORTED)
            try:
                await writer.drain()
            except ConnectionError:
                pass
            writer.close()
            return
        await self.external_connected(_Reader(reader, head), StreamWriterAdapter(writer), listener_name)

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int], session: Any) -> None:
        # amqtt's own version also runs for every filter *anyone* subscribed to when a client connects, and
        # skips the topic check: only the client's own subscriptions count, and only what it may receive.
        topic_filter, qos = subscription
        if not any(s.client_id == session.client_id for s, _ in self._subscriptions.get(topic_filter, ())):
            return
        handler = self._get_handler(session)
        if handler is None:
            return
        tasks = []
        for topic, message in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter) and await self._topic_filtering(session, topic=topic,
                                                                                  action=Action.RECEIVE):
                tasks.append(asyncio.ensure_future(
                    handler.mqtt_publish(message.topic, message.data, min(qos, message.qos or qos), retain=True)))
        if tasks:
            await asyncio.wait(tasks)

    async def _handle_client_session(self, reader: Any, writer: Any, client_session: Any, handler: Any,
                                     *args: Any) -> None:
        try:
            await super()._handle_client_session(reader, writer, client_session, handler, *args)
        finally:
            # Whatever the client sent just before it went (amqtt's message loop may not have run at all, or
            # was cancelled with the message in its queue) is still delivered.
            queue = client_session.delivered_message_queue
            while not queue.empty():
                done = asyncio.get_running_loop().create_future()
                done.set_result(queue.get_nowait())
                await self._handle_message_delivery(client_session, handler, done)

    async def kick_stale(self, credentials: Credentials) -> int:
        """Drop each device connection whose device is gone, disabled, or has a new secret; returns how many."""
        dropped = 0
        for session, handler in list(self._sessions.values()):
            if session.username == BRIDGE_USERNAME or not session.transitions.is_connected():
                continue
            enabled, secret_hash, _ = credentials.get(session.username or "", (False, "", ""))
            if enabled and secret_hash == session.attributes.get(LOGIN):
                continue
            await handler.handle_connection_closed()
            await handler.stop()
            dropped += 1
        return dropped


class AmqttBroker(EmbeddedBroker):
    """amqtt in a daemon thread with its own event loop (MQTT 3.1.1 only)."""

    kind = "amqtt"

    def __init__(self, *, host: str, port: int) -> None:
        super().__init__(host=host, port=port)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: _Broker | None = None
        self._thread = threading.Thread(target=self._run, name="embedded-mqtt-broker", daemon=True)

    @property
    def url(self) -> str:
        return super().url + "?protocol=3.1.1"

    @property
    def device_url(self) -> str:
        return super().device_url + "?protocol=3.1.1"

    @property
    def label(self) -> str:
        from importlib.metadata import version

        return f"embedded amqtt {version('amqtt')}: MQTT 3.1.1 only; install Mosquitto for MQTT 5"

    def start(self, timeout: float = 15.0) -> None:
        port_check(self.host, self.port)
        self.watcher.load()
        self._thread.start()
        if not self._ready.wait(timeout):
            raise EmbeddedBrokerError("the embedded amqtt broker did not start in time")
        if self._error is not None:
            raise EmbeddedBrokerError(f"the embedded amqtt broker failed to start: {self._error}")
        self.watcher.start()
        logger.info("embedded amqtt broker on %s:%s (MQTT 3.1.1 only)", self.host, self.port)

    def stop(self) -> None:
        super().stop()
        if self._loop is not None and self._broker is not None and self._loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                future.result(5)
            except Exception as exc:  # shutting down anyway
                logger.debug("amqtt shutdown: %s", exc)

    def apply(self, credentials: Credentials) -> None:
        if self._loop is None or self._broker is None:
            return
        # Compared with what each connection logged in with, not with the last poll: a device can log in
        # (amqtt asks the database at once) and get a new secret between two polls.
        dropped = asyncio.run_coroutine_threadsafe(self._broker.kick_stale(credentials), self._loop).result(10)
        if dropped:
            logger.info("dropped %d MQTT connection(s) whose device was disabled, removed or given a new secret",
                        dropped)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 10000}},
            "plugins": {
                f"{__name__}.RegistryAuth": {"bridge_password": self.bridge_password},
                f"{__name__}.DeviceTopics": {},
            },
        }
        try:
            self._broker = _Broker(config, loop=self._loop)
            self._loop.run_until_complete(self._broker.start())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
