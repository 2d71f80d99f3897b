"""The broker the bridge talks to (from MQTT_URL) and what it subscribes to there."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

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


def subscriptions(config: BrokerConfig, share_group: str) -> list[tuple[str, int]]:
    """(topic filter, QoS) of the device topics, shared among bridges on v5 (each message goes to one of them)."""
    if config.protocol == 5:
        return [(f"$share/{share_group}/{t}", 1) for t in INBOUND_TOPICS]
    return [(t, 1) for t in INBOUND_TOPICS]
