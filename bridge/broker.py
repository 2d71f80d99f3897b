"""The all-in-one gateway's embedded MQTT broker: Mosquitto when it is installed, else amqtt (from PyPI).

Either one authenticates devices against the registry (username = device id,
password = its secret) and confines each to its own topics (core/topics.py,
the same rule as the `/mqtt/acl` hook and dynamic security). The bridge logs in
with an account of its own, made up at each start. A watcher keeps the broker in
step with the registry: a device registered, disabled or given a new secret — in
this process or by `manage.py` in another terminal — counts within a second, and
a connection made with credentials that no longer hold is dropped.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import socket
import threading
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import DatabaseError, close_old_connections, transaction
from django.db.models.signals import post_delete, post_save

logger = logging.getLogger("iotgw.broker")

# Never a device id (those start with a letter or a digit), so no device can be registered under it.
BRIDGE_USERNAME = "_iotgw-bridge"
MOSQUITTO, AMQTT = "mosquitto", "amqtt"
_MOSQUITTO_PLACES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker cannot start; the message says what to do."""


# id → (enabled, secret_hash, mqtt_password_hash): what a login depends on.
Credentials = dict[str, tuple[bool, str, str]]


def mosquitto_binary() -> str | None:
    """The `mosquitto` executable, if one is installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in _MOSQUITTO_PLACES if Path(p).is_file()), None)


MQTT_PORT_FIX = "`make run MQTT_PORT=…` or `gateway --mqtt-port …`, or use that broker with MQTT_URL=…"


def port_check(host: str, port: int, *, what: str = "MQTT", fix: str = MQTT_PORT_FIX) -> None:
    """Fail with what to do when something already listens on a port: the gateway's ports never wander."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise EmbeddedBrokerError(f"{what} port {port} on {host} is taken ({exc.strerror}): "
                                      f"choose another one with {fix}") from None


def registry_credentials() -> Credentials:
    """Every device's login state, read in one query."""
    from devices.models import Device

    rows = Device.objects.values_list("id", "enabled", "secret_hash", "mqtt_password_hash")
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


class EmbeddedBroker:
    """What the gateway needs of either broker: start, stop, the URLs, and registry changes applied."""

    kind = ""

    def __init__(self, *, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.bridge_password = secrets.token_urlsafe(24)
        self.watcher = RegistryWatcher(self)

    @property
    def url(self) -> str:
        """The bridge's MQTT_URL: its own account on this broker."""
        return f"mqtt://{quote(BRIDGE_USERNAME)}:{quote(self.bridge_password)}@{self._netloc}"

    @property
    def device_url(self) -> str:
        """Where devices connect (they bring their own id and secret)."""
        return f"mqtt://{self._netloc}"

    @property
    def _netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def label(self) -> str:
        """One line for the start-up banner."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the broker and the registry watcher; EmbeddedBrokerError if it cannot."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the watcher and the broker."""
        self.watcher.stop()

    def apply(self, credentials: Credentials) -> None:
        """Bring the broker in step with the registry: new logins valid, stale ones refused and dropped."""
        raise NotImplementedError


class RegistryWatcher:
    """Polls the registry's logins (one query every half second) and hands changes to the broker.

    A registry change in this process wakes it at once; `manage.py adddevice`
    (or the admin of a split web process) elsewhere counts at the next poll.
    """

    def __init__(self, broker: EmbeddedBroker, *, interval: float = 0.5) -> None:
        self.broker = broker
        self.interval = interval
        self.known: Credentials = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="embedded-broker-registry", daemon=True)

    def load(self) -> Credentials:
        """The registry now (at start-up, before the broker accepts anyone)."""
        self.known = registry_credentials()
        close_old_connections()
        return self.known

    def start(self) -> None:
        post_save.connect(self._changed, sender="devices.Device", dispatch_uid="embedded-broker")
        post_delete.connect(self._changed, sender="devices.Device", dispatch_uid="embedded-broker")
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def _changed(self, **_kwargs: object) -> None:
        # Sent inside the writer's transaction; the poll reads committed rows, so it waits for the commit.
        transaction.on_commit(self._wake.set)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.poll()
            except DatabaseError as exc:
                logger.warning("embedded broker: registry not readable (%s); retrying", str(exc).strip()[:200])
            except Exception:
                logger.exception("embedded broker: applying a registry change failed; retrying")
            finally:
                close_old_connections()

    def poll(self) -> None:
        """Read the registry and apply it (each broker acts only on what differs from what it holds)."""
        self.known = registry_credentials()
        self.broker.apply(self.known)


def embedded_broker(*, host: str, port: int) -> EmbeddedBroker:
    """The embedded broker IOTGW_EMBEDDED_BROKER asks for: `auto` takes Mosquitto when it is installed."""
    choice = settings.IOTGW_EMBEDDED_BROKER
    if choice not in ("auto", MOSQUITTO, AMQTT):
        raise EmbeddedBrokerError(f"IOTGW_EMBEDDED_BROKER must be auto, mosquitto or amqtt, got {choice!r}")
    binary = mosquitto_binary() if choice != AMQTT else None
    if choice == MOSQUITTO and binary is None:
        raise EmbeddedBrokerError("IOTGW_EMBEDDED_BROKER=mosquitto, but no `mosquitto` is installed "
                                  "(apt install mosquitto, brew install mosquitto)")
    if binary is not None:
        from bridge.broker_mosquitto import MosquittoBroker

        return MosquittoBroker(host=host, port=port, binary=binary)
    from bridge.broker_amqtt import AmqttBroker

    return AmqttBroker(host=host, port=port)
