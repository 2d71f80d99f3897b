"""Building the bridge's paho client from settings: v5, persistent session, manual acks."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

# All of devices/#: a device publishing outside SPEC §4's table is rejected and counted,
# not silently unseen. The bridge's own command publishes come back and are skipped.
INBOUND_TOPICS = ("devices/#",)


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how to reach the broker, parsed from MQTT_URL."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    # 5 for MQTT v5 (shared subscriptions, properties); 4 for 3.1.1 brokers such as amqtt.
    protocol: int = 5

    @classmethod
    def from_url(cls, url: str) -> BrokerConfig:
        """`mqtt://user:pw@host:1883` or `mqtts://…:8883`; `?protocol=3.1.1` for a v3 broker."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"MQTT_URL scheme must be mqtt:// or mqtts://, got {parts.scheme!r}")
        tls = parts.scheme in ("mqtts", "ssl")
        query = parse_qs(parts.query)
        protocol = 4 if query.get("protocol", ["5"])[0] in ("3.1.1", "4", "311") else 5
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            protocol=protocol,
        )


def build_client(config: BrokerConfig, *, client_id: str) -> mqtt.Client:
    """A paho client that acks only when told to and keeps its session across restarts."""
    v5 = config.protocol == 5
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        # v3.1.1: clean_session=False keeps the session; v5 sets clean_start at connect.
        clean_session=None if v5 else False,
        manual_ack=True,
    )
    if config.username:
        client.username_pw_set(config.username, config.password)
    if config.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    # paho leaves Nagle on: small PUBACKs and commands would wait for the next write.
    client.on_socket_open = lambda _c, _u, sock: sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def connect_properties(*, session_expiry: int, receive_maximum: int) -> Properties:
    """CONNECT properties of a v5 persistent session."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry
    props.ReceiveMaximum = receive_maximum
    return props


def subscriptions(config: BrokerConfig, share_group: str) -> list[tuple[str, SubscribeOptions | int]]:
    """The device topics, shared among bridges on v5 (each message goes to one of them)."""
    if config.protocol == 5:
        return [(f"$share/{share_group}/{t}", SubscribeOptions(qos=1)) for t in INBOUND_TOPICS]
    return [(t, 1) for t in INBOUND_TOPICS]
