"""Mosquitto dynamic security (MQTT_DYNSEC=1): the broker's clients and roles follow the device registry.

Each device gets a client (username = device id, password = its secret) and a
role of its own with exactly its profile's topics (docs/profiles.md): by default
publishing only to its telemetry, status and command-response topics and
subscribing only to its commands topic. Commands go
over `$CONTROL/dynamic-security/v1` with the admin account of MQTT_DYNSEC_URL.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from django.conf import settings

from core import topics
from core.broker import BrokerConfig
from core.profiles import Grants
from devices import signals
from devices.models import Device
from devices.selectors import device_grants

logger = logging.getLogger("iotgw.dynsec")

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"


class DynsecError(Exception):
    """The broker refused a dynamic-security command, or did not answer in time."""


def role_name(device_id: str) -> str:
    """The role that holds one device's topic rights."""
    return f"iotgw-device-{device_id}"


def device_acls(device_id: str) -> list[dict[str, Any]]:
    """A device's rights, by its profile (docs/profiles.md): by default publish to its own inbound topics and
    subscribe to its own commands (SPEC §4); a gateway's cover its children's topics."""
    grants = device_grants(device_id)
    if grants is None:
        grants = Grants(tuple(topics.device_topic(device_id, kind) for kind in topics.PUBLISH_KINDS),
                        (topics.device_topic(device_id, topics.SUBSCRIBE_KIND),))
    acls = [{"acltype": "publishClientSend", "topic": topic, "allow": True} for topic in grants.publish]
    acls += [{"acltype": "subscribePattern" if "+" in topic or "#" in topic else "subscribeLiteral", "topic": topic,
              "allow": True} for topic in grants.subscribe]
    return acls


class DynsecClient:
    """A short-lived admin connection that sends commands and waits for their answers."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.config = BrokerConfig.from_url(url)
        self.timeout = timeout
        self._answers: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"iotgw-dynsec-{uuid.uuid4().hex[:8]}",
                                   protocol=mqtt.MQTTv5)
        if self.config.username:
            self._client.username_pw_set(self.config.username, self.config.password)
        if self.config.tls:
            self._client.tls_set_context(self.config.ssl_context())
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_args: self._ready.set()
        self._client.on_message = self._on_message

    def __enter__(self) -> DynsecClient:
        self._client.connect(self.config.host, self.config.port, keepalive=30)
        self._client.loop_start()
        if not self._ready.wait(self.timeout):
            self.close()
            raise DynsecError(f"no dynamic-security session with {self.config.host}:{self.config.port}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            logger.error("dynamic security: broker refused the admin login: %s", reason_code)
            return
        client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(msg.payload).get("responses", [])
        except (ValueError, AttributeError):
            return
        with self._cond:
            for response in responses:
                if isinstance(response, dict) and "correlationData" in response:
                    self._answers[response["correlationData"]] = response
            self._cond.notify_all()

    def run(self, *commands: dict[str, Any], ok_errors: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Send commands in one message; raise DynsecError on an error not listed in `ok_errors`."""
        tagged = [dict(c, correlationData=uuid.uuid4().hex) for c in commands]
        self._client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
        keys = [c["correlationData"] for c in tagged]
        with self._cond:
            if not self._cond.wait_for(lambda: all(k in self._answers for k in keys), self.timeout):
                raise DynsecError(f"no answer to {[c['command'] for c in commands]}")
            answers = [self._answers.pop(k) for k in keys]
        for answer in answers:
            error = answer.get("error")
            if error and not any(ok in error for ok in ok_errors):
                raise DynsecError(f"{answer.get('command')}: {error}")
        return answers


def _client() -> DynsecClient:
    url = settings.MQTT_DYNSEC_URL
    if not url:
        raise DynsecError("MQTT_DYNSEC is on but neither MQTT_DYNSEC_URL nor MQTT_URL is set")
    return DynsecClient(url)


def client_create(*, device_id: str, secret: str) -> None:
    """Create (or reset) a device's broker client and its role."""
    role = role_name(device_id)
    with _client() as dynsec:
        dynsec.run({"command": "createRole", "rolename": role, "acls": device_acls(device_id)},
                   ok_errors=("already exists",))
        answer = dynsec.run({"command": "createClient", "username": device_id, "password": secret,
                             "roles": [{"rolename": role}]}, ok_errors=("already exists",))[0]
        if answer.get("error"):  # registered again after a database reset: take it over
            dynsec.run({"command": "setClientPassword", "username": device_id, "password": secret},
                       {"command": "addClientRole", "username": device_id, "rolename": role},
                       {"command": "enableClient", "username": device_id})


def role_update(*, device_id: str) -> None:
    """Make a device's role hold exactly the rights of its profile now."""
    role = role_name(device_id)
    wanted = device_acls(device_id)
    with _client() as dynsec:
        current = dynsec.run({"command": "getRole", "rolename": role})[0].get("data", {}).get("role", {})
        for acl in current.get("acls", []):
            dynsec.run({"command": "removeRoleACL", "rolename": role, "acltype": acl["acltype"],
                        "topic": acl["topic"]}, ok_errors=("not found",))
        for acl in wanted:
            dynsec.run({"command": "addRoleACL", "rolename": role, **acl}, ok_errors=("already exists",))


def client_set_enabled(*, device_id: str, enabled: bool) -> None:
    """Enable a device's client, or disable it (the broker also drops its open connection)."""
    with _client() as dynsec:
        dynsec.run({"command": "enableClient" if enabled else "disableClient", "username": device_id})


def client_set_password(*, device_id: str, secret: str) -> None:
    """Set a device's new secret and drop connections made with the old one."""
    with _client() as dynsec:
        dynsec.run({"command": "setClientPassword", "username": device_id, "password": secret})
        # Disabling kicks the client; a device that is meant to be disabled stays so.
        dynsec.run({"command": "disableClient", "username": device_id})
        if Device.objects.filter(pk=device_id, enabled=True).exists():
            dynsec.run({"command": "enableClient", "username": device_id})


BRIDGE_ROLE = "iotgw-bridge"


def bridge_acls() -> list[dict[str, Any]]:
    """The bridge's rights: the device topics in (shared among bridges), commands out."""
    return [
        {"acltype": "subscribePattern", "topic": topics.ALL_DEVICES, "allow": True},
        {"acltype": "subscribePattern", "topic": f"$share/+/{topics.ALL_DEVICES}", "allow": True},
        {"acltype": "publishClientReceive", "topic": topics.ALL_DEVICES, "allow": True},
        {"acltype": "publishClientSend", "topic": topics.ANY_DEVICE_COMMANDS, "allow": True},
        # Device profiles (docs/profiles.md) put devices on any topics: the bridge reads and commands them all.
        {"acltype": "subscribePattern", "topic": "#", "allow": True},
        {"acltype": "subscribePattern", "topic": "$share/#", "allow": True},
        {"acltype": "publishClientReceive", "topic": "#", "allow": True},
        {"acltype": "publishClientSend", "topic": "#", "allow": True},
        {"acltype": "unsubscribePattern", "topic": "#", "allow": True},
    ]


def bridge_account_ensure(*, username: str, password: str) -> None:
    """Create (or reset) the bridge's broker account and role; safe to run at every deployment."""
    with _client() as dynsec:
        dynsec.run({"command": "createRole", "rolename": BRIDGE_ROLE}, ok_errors=("already exists",))
        for acl in bridge_acls():
            dynsec.run({"command": "addRoleACL", "rolename": BRIDGE_ROLE, **acl}, ok_errors=("already exists",))
        answer = dynsec.run({"command": "createClient", "username": username, "password": password,
                             "roles": [{"rolename": BRIDGE_ROLE}]}, ok_errors=("already exists",))[0]
        if answer.get("error"):  # it exists: reset it
            client = dynsec.run({"command": "getClient", "username": username})[0].get("data", {}).get("client", {})
            dynsec.run({"command": "setClientPassword", "username": username, "password": password},
                       {"command": "enableClient", "username": username})
            if BRIDGE_ROLE not in {r.get("rolename") for r in client.get("roles", [])}:
                dynsec.run({"command": "addClientRole", "username": username, "rolename": BRIDGE_ROLE})


ACTIONS: dict[str, Callable[..., None]] = {"client_create": client_create, "client_set_enabled": client_set_enabled,
           "client_set_password": client_set_password, "role_update": role_update}


def apply(action: str, **kwargs: Any) -> None:
    """Run a registry change on the broker after its commit; a failure is logged, never raised into the caller."""
    if not settings.MQTT_DYNSEC:
        return
    try:
        ACTIONS[action](**kwargs)
    except Exception as exc:
        logger.error("dynamic security: %s for %s failed: %s", action, kwargs.get("device_id"), exc)


def _registered(sender: object, *, device_id: str, secret: str, **_: object) -> None:
    apply("client_create", device_id=device_id, secret=secret)


def _enabled_changed(sender: object, *, device_id: str, enabled: bool, **_: object) -> None:
    apply("client_set_enabled", device_id=device_id, enabled=enabled)


def _secret_changed(sender: object, *, device_id: str, secret: str, **_: object) -> None:
    apply("client_set_password", device_id=device_id, secret=secret)


def _profile_changed(sender: object, *, device_id: str, **_: object) -> None:
    apply("role_update", device_id=device_id)


def connect_receivers() -> None:
    """Follow the registry: the domain's signals (sent after each commit) become dynamic-security commands."""
    signals.device_registered.connect(_registered, dispatch_uid="dynsec-registered")
    signals.device_enabled_changed.connect(_enabled_changed, dispatch_uid="dynsec-enabled")
    signals.device_secret_changed.connect(_secret_changed, dispatch_uid="dynsec-secret")
    signals.device_profile_changed.connect(_profile_changed, dispatch_uid="dynsec-profile")
