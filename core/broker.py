"""The broker the MQTT edge and the simulator talk to (from MQTT_URL), and what a bridge subscribes to there."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from core.topics import ALL_DEVICES

# All of devices/#: a device publishing outside SPEC §4's table is rejected and counted,
# not silently unseen. The bridge's own command publishes come back and are skipped.
INBOUND_TOPICS = (ALL_DEVICES,)

_OPTIONS = ("protocol", "cafile", "certfile", "keyfile")
# OpenSSL alert names by what they mean for the bridge (the broker sends them in its handshake).
_NO_CLIENT_CERT = ("CERTIFICATE_REQUIRED", "HANDSHAKE_FAILURE")
_CLIENT_CERT_REFUSED = ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN", "CERTIFICATE_EXPIRED",
                        "CERTIFICATE_REVOKED", "UNSUPPORTED_CERTIFICATE", "DECRYPT_ERROR", "ACCESS_DENIED")
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL")


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
    # mqtts:// only: the CA that signed the broker's certificate (else the system's CAs), and the
    # client certificate and its key for a broker that requires one (mutual TLS).
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    @classmethod
    def from_url(cls, url: str) -> BrokerConfig:
        """`mqtt://user:pw@host:1883` or `mqtts://…:8883?cafile=…&certfile=…&keyfile=…`; `?protocol=3.1.1` for v3."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"MQTT_URL scheme must be mqtt:// or mqtts://, got {parts.scheme!r}")
        tls = parts.scheme in ("mqtts", "ssl")
        # Not parse_qs: it reads "+" as a space, and a file name may hold one.
        query = {unquote(key): unquote(value) for key, _, value in
                 (item.partition("=") for item in parts.query.split("&") if item)}
        unknown = sorted(set(query) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"MQTT_URL: unknown option {unknown[0]!r} (known: {', '.join(_OPTIONS)})")
        files = {key: query.get(key) or None for key in ("cafile", "certfile", "keyfile")}
        if not tls and any(files.values()):
            raise ValueError("MQTT_URL: cafile, certfile and keyfile need TLS: mqtts://")
        if files["keyfile"] and not files["certfile"]:
            raise ValueError("MQTT_URL: keyfile without certfile")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            protocol=4 if query.get("protocol", "5") in ("3.1.1", "4", "311") else 5,
            **files,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """For mqtts://: the broker's certificate and name are checked; a client certificate if given."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.cafile)
        except OSError as exc:  # ssl.SSLError is one
            raise ValueError(f"MQTT_URL: cafile={self.cafile} cannot be used: {exc}") from None
        if self.certfile:
            try:
                context.load_cert_chain(self.certfile, self.keyfile)
            except OSError as exc:
                raise ValueError(f"MQTT_URL: certfile={self.certfile} keyfile={self.keyfile} cannot be used: "
                                 f"{exc}") from None
        return context

    def explain_tls(self, exc: BaseException | None) -> str:
        """A TLS failure in the terms of this configuration: what went wrong, and what to set."""
        if not isinstance(exc, ssl.SSLError):  # reset or closed before CONNACK: the alert may not have come through
            return (f"TLS: the broker closed the connection before its CONNACK ({exc or 'end of stream'}), as a "
                    "TLS 1.3 broker does when it refuses a client certificate; "
                    + (f"is the client certificate certfile={self.certfile} signed by a CA the broker trusts?"
                       if self.certfile else "if it requires one, set certfile= and keyfile= in MQTT_URL"))
        if isinstance(exc, ssl.SSLCertVerificationError):
            message = exc.verify_message or str(exc)
            if "mismatch" in message:
                return (f"TLS: the broker's certificate is not valid for {self.host} ({message}); connect by a "
                        "name or address it lists")
            trusted = f"the CA in cafile={self.cafile}" if self.cafile else "the system's CAs (no cafile= given)"
            return (f"TLS: the broker's certificate is not signed by {trusted} ({message}); set cafile= in "
                    "MQTT_URL to the CA that signed it")
        reason = exc.reason or ""
        if reason.endswith(_NO_CLIENT_CERT) and not self.certfile:
            return f"TLS: the broker requires a client certificate ({reason}): set certfile= and keyfile= in MQTT_URL"
        if reason.endswith(_CLIENT_CERT_REFUSED + _NO_CLIENT_CERT) and self.certfile:
            return (f"TLS: the broker refused the client certificate certfile={self.certfile} ({reason}); it must be "
                    "valid and signed by a CA the broker trusts")
        if reason.endswith(_NOT_TLS):
            return f"TLS: the broker did not answer in TLS ({reason}); is port {self.port} a TLS listener?"
        return f"TLS: {exc}"


# SUBSCRIBE options (MQTT v5 §3.8.3.1): the maximum QoS in bits 0-1, No Local in bit 2.
QOS1 = 0x01
NO_LOCAL = 0x04


def subscriptions(config: BrokerConfig, share_group: str | None,
                  topics: Sequence[str] = INBOUND_TOPICS) -> list[tuple[str, int]]:
    """(topic filter, SUBSCRIBE options) of the device topics (`topics`: those of the profiles in use too).

    With a share group (several bridges, MQTT v5) the bridges share `$share/<group>/devices/#`,
    so each message goes to one of them. Without one (a single bridge, the default) the bridge
    subscribes to `devices/#` itself: Mosquitto 2.0 persists a plain subscription with the
    session and restores it after a restart, but not a shared one, so what devices publish
    between a broker restart and the bridge's return is queued for it instead of discarded.
    A plain v5 subscription also sets No Local: the bridge's own command publishes stay away.
    """
    if config.protocol == 5 and share_group:
        return [(f"$share/{share_group}/{t}", QOS1) for t in topics]
    return [(t, QOS1 | (NO_LOCAL if config.protocol == 5 else 0)) for t in topics]
