"""The broker hooks in-process (Django's test client): the rules of /mqtt/auth, /mqtt/acl and /mqtt/superuser.

tests/integration/test_broker_auth.py holds the same hooks over real HTTP to Daphne.
"""

from __future__ import annotations

import pytest

from devices.services.devices import device_register, device_set_enabled
from devices.services.profiles import device_register_child, device_set_profile

pytestmark = pytest.mark.django_db

BRIDGE_USER, BRIDGE_PASSWORD = "bridge-acct", "bridge-pw-123"


@pytest.fixture
def devices(settings):
    settings.MQTT_BRIDGE_USERNAME, settings.MQTT_BRIDGE_PASSWORD = BRIDGE_USER, BRIDGE_PASSWORD
    settings.MQTT_HOOK_SECRET = None
    return device_register(device_id="mine")[1], device_register(device_id="other")[1]


def emqx(client, hook: str, **fields: str) -> str:
    reply = client.post(f"/mqtt/{hook}", fields, content_type="application/json")
    assert reply.status_code == 200
    return reply.json()["result"]


def go_auth(client, hook: str, **fields: str) -> int:
    return client.post(f"/mqtt/{hook}", fields).status_code


def test_a_device_logs_in_with_its_own_secret_only(client, devices):
    mine, other = devices
    assert emqx(client, "auth", username="mine", password=mine) == "allow"
    assert emqx(client, "auth", username="mine", password=other) == "deny"
    assert go_auth(client, "auth", username="mine", password=mine) == 200
    assert go_auth(client, "auth", username="ghost", password=mine) == 403
    device_set_enabled(device_id="mine", enabled=False)
    assert emqx(client, "auth", username="mine", password=mine) == "deny"


def test_a_device_publishes_and_subscribes_on_its_own_topics_only(client, devices):
    assert emqx(client, "acl", username="mine", topic="devices/mine/telemetry", action="publish") == "allow"
    assert emqx(client, "acl", username="mine", topic="devices/mine/commands", action="subscribe") == "allow"
    assert emqx(client, "acl", username="mine", topic="devices/other/telemetry", action="publish") == "deny"
    assert emqx(client, "acl", username="mine", topic="devices/mine/commands", action="publish") == "deny"
    assert go_auth(client, "acl", username="mine", topic="devices/mine/status", acc="2") == 200
    assert go_auth(client, "acl", username="mine", topic="devices/#", acc="4") == 403


def test_only_the_bridge_is_a_superuser_and_may_do_anything(client, devices):
    assert emqx(client, "auth", username=BRIDGE_USER, password=BRIDGE_PASSWORD) == "allow"
    assert emqx(client, "auth", username=BRIDGE_USER, password="wrong") == "deny"
    assert emqx(client, "acl", username=BRIDGE_USER, topic="devices/x/commands", action="publish") == "allow"
    assert go_auth(client, "superuser", username=BRIDGE_USER) == 200
    assert go_auth(client, "superuser", username="mine") == 403


def test_with_a_hook_secret_a_request_without_it_is_denied(client, devices, settings):
    mine, _ = devices
    settings.MQTT_HOOK_SECRET = "s3cret"
    assert emqx(client, "auth", username="mine", password=mine) == "deny"
    reply = client.post("/mqtt/auth", {"username": "mine", "password": mine}, content_type="application/json",
                        headers={"X-Iotgw-Hook-Secret": "s3cret"})
    assert reply.json()["result"] == "allow"


def test_a_device_on_a_profile_may_use_that_profiles_topics_only(client, devices):
    device_set_profile(device_id="mine", profile="tasmota")
    assert emqx(client, "acl", username="mine", topic="tele/mine/SENSOR", action="publish") == "allow"
    assert emqx(client, "acl", username="mine", topic="stat/mine/RESULT", action="publish") == "allow"
    assert emqx(client, "acl", username="mine", topic="cmnd/mine/#", action="subscribe") == "allow"
    assert emqx(client, "acl", username="mine", topic="tele/other/SENSOR", action="publish") == "deny"
    assert emqx(client, "acl", username="mine", topic="devices/mine/telemetry", action="publish") == "deny"
    assert emqx(client, "acl", username="mine", topic="cmnd/other/#", action="subscribe") == "deny"
    assert emqx(client, "acl", username="other", topic="devices/other/telemetry", action="publish") == "allow"


def test_a_gateway_may_speak_for_its_children_on_its_own_base_topic(client, devices):
    device_set_profile(device_id="mine", profile="zigbee2mqtt")
    lamp = device_register_child(gateway_id="mine", child_name="lamp")
    assert lamp.id == "mine.lamp" and lamp.profile_id == "zigbee2mqtt"
    assert emqx(client, "acl", username="mine", topic="mine/lamp", action="publish") == "allow"
    assert emqx(client, "acl", username="mine", topic="mine/lamp/availability", action="publish") == "allow"
    assert emqx(client, "acl", username="mine", topic="mine/#", action="subscribe") == "allow"
    assert emqx(client, "acl", username="mine", topic="other/lamp", action="publish") == "deny"
    assert go_auth(client, "acl", username="mine", topic="#", acc="4") == 403
