"""The broker the MQTT edge and the simulator talk to (from MQTT_URL), and what a bridge subscribes to there."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from core.topics import ALL_DEVICES

# All of devices/#: a device publishing outside SPEC §4's table is rejected and counted,
# not silently unseen. The bridge's own command publishes come back and are skipped.
INBOUND_TOPICS = (ALL_DEVICES,)


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


# SUBSCRIBE options (MQTT v5 §3.8.3.1): the maximum QoS in bits 0-1, No Local in bit 2.
QOS1 = 0x01
NO_LOCAL = 0x04


def subscriptions(config: BrokerConfig, share_group: str | None) -> list[tuple[str, int]]:
    """(topic filter, SUBSCRIBE options) of the device topics.

    With a share group (several bridges, MQTT v5) the bridges share `$share/<group>/devices/#`,
    so each message goes to one of them. Without one (a single bridge, the default) the bridge
    subscribes to `devices/#` itself: Mosquitto 2.0 persists a plain subscription with the
    session and restores it after a restart, but not a shared one, so what devices publish
    between a broker restart and the bridge's return is queued for it instead of discarded.
    A plain v5 subscription also sets No Local: the bridge's own command publishes stay away.
    """
    if config.protocol == 5 and share_group:
        return [(f"$share/{share_group}/{t}", QOS1) for t in INBOUND_TOPICS]
    return [(t, QOS1 | (NO_LOCAL if config.protocol == 5 else 0)) for t in INBOUND_TOPICS]
