"""The broker hooks /mqtt/auth and /mqtt/acl over real HTTP, in EMQX 5 and mosquitto-go-auth formats."""

from __future__ import annotations

import urllib.parse

import pytest

from devices.services.devices import device_rotate_secret, device_set_enabled
from testing.http import call

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

BRIDGE_USER, BRIDGE_PASSWORD = "bridge-acct", "bridge-pw-123"


@pytest.fixture
def hooks(stack, registry):
    """Daphne with a bridge account; two devices, `mine` and `other`."""
    stack.env.update(MQTT_BRIDGE_USERNAME=BRIDGE_USER, MQTT_BRIDGE_PASSWORD=BRIDGE_PASSWORD)
    stack.start_web()
    mine, other = registry.device("mine"), registry.device("other")
    return stack.web, mine, other


def emqx(web: str, hook: str, **fields: str):
    """An EMQX 5 request: a JSON body; the answer is always 200 with `result`."""
    reply = call("POST", f"{web}/mqtt/{hook}", body=fields)
    assert reply.status == 200, reply.body
    return reply.json()["result"]


def go_auth(web: str, hook: str, *, json_mode: bool = False, **fields: str) -> int:
    """A mosquitto-go-auth request: form fields (or JSON, sent by Go's client); the status is the answer."""
    if json_mode:
        return call("POST", f"{web}/mqtt/{hook}", body=fields, headers={"User-Agent": "Go-http-client/1.1"}).status
    raw = urllib.parse.urlencode(fields).encode()
    return call("POST", f"{web}/mqtt/{hook}", raw=raw, content_type="application/x-www-form-urlencoded").status


def test_device_login_with_its_secret_only(hooks):
    web, (mine, secret), (other, other_secret) = hooks
    assert emqx(web, "auth", username=mine, password=secret, clientid="c1") == "allow"
    assert emqx(web, "auth", username=mine, password=other_secret, clientid="c1") == "deny"
    assert emqx(web, "auth", username=mine, password="", clientid="c1") == "deny"
    assert emqx(web, "auth", username="ghost", password=secret, clientid="c1") == "deny"
    assert emqx(web, "auth", username="a/+/#", password=secret, clientid="c1") == "deny"
    assert go_auth(web, "auth", username=mine, password=secret, clientid="c1") == 200
    assert go_auth(web, "auth", username=mine, password="wrong", clientid="c1") == 403
    assert go_auth(web, "auth", json_mode=True, username=mine, password="wrong", clientid="c1") == 403
    assert go_auth(web, "auth", json_mode=True, username=mine, password=secret, clientid="c1") == 200


def test_disabled_device_and_rotated_secret_are_denied(hooks):
    web, (mine, secret), _ = hooks
    new_secret = device_rotate_secret(device_id=mine)
    assert emqx(web, "auth", username=mine, password=secret) == "deny"
    assert emqx(web, "auth", username=mine, password=new_secret) == "allow"
    device_set_enabled(device_id=mine, enabled=False)
    assert emqx(web, "auth", username=mine, password=new_secret) == "deny"
    assert emqx(web, "acl", username=mine, topic=f"devices/{mine}/telemetry", action="publish") == "deny"
    assert go_auth(web, "acl", username=mine, topic=f"devices/{mine}/telemetry", acc="2", clientid="c") == 403


def test_bridge_account_is_a_superuser(hooks):
    web, _, (other, _) = hooks
    reply = call("POST", web + "/mqtt/auth", body={"username": BRIDGE_USER, "password": BRIDGE_PASSWORD})
    assert reply.json() == {"result": "allow", "is_superuser": True}
    assert emqx(web, "auth", username=BRIDGE_USER, password="nope") == "deny"
    assert emqx(web, "acl", username=BRIDGE_USER, topic="devices/#", action="subscribe") == "allow"
    assert emqx(web, "acl", username=BRIDGE_USER, topic=f"devices/{other}/commands", action="publish") == "allow"
    assert go_auth(web, "superuser", username=BRIDGE_USER) == 200
    assert go_auth(web, "superuser", username=other) == 403


def test_device_publishes_and_subscribes_only_on_its_own_topics(hooks):
    web, (mine, _), (other, _) = hooks
    own = f"devices/{mine}/"
    for kind in ("telemetry", "status", "commands/response"):
        assert emqx(web, "acl", username=mine, clientid="c", topic=own + kind, action="publish") == "allow"
        assert go_auth(web, "acl", username=mine, clientid="c", topic=own + kind, acc="2") == 200
    assert emqx(web, "acl", username=mine, topic=own + "commands", action="subscribe") == "allow"
    assert go_auth(web, "acl", username=mine, clientid="c", topic=own + "commands", acc="4") == 200
    assert go_auth(web, "acl", username=mine, clientid="c", topic=own + "commands", acc="1") == 200

    # Publishing as another device, or forging commands, or reading others' topics: denied.
    denied_publish = [f"devices/{other}/telemetry", f"devices/{other}/status", own + "commands", own + "config",
                      "devices/+/telemetry", "$SYS/broker"]
    for topic in denied_publish:
        assert emqx(web, "acl", username=mine, topic=topic, action="publish") == "deny", topic
        assert go_auth(web, "acl", username=mine, clientid="c", topic=topic, acc="2") == 403, topic
    for topic in (f"devices/{other}/commands", "devices/+/commands", "devices/#", "#", own + "telemetry"):
        assert emqx(web, "acl", username=mine, topic=topic, action="subscribe") == "deny", topic
        assert go_auth(web, "acl", username=mine, clientid="c", topic=topic, acc="4") == 403, topic
    assert go_auth(web, "acl", username=mine, clientid="c", topic=own + "commands", acc="3") == 403
    assert go_auth(web, "acl", username=mine, clientid="c", topic=own + "commands", acc="x") == 403
    assert emqx(web, "acl", username="ghost", topic="devices/ghost/telemetry", action="publish") == "deny"


def test_explicit_format_wins_over_detection(hooks):
    web, (mine, _), _ = hooks
    # A JSON body would be read as EMQX; ?format=go-auth makes a deny a 403.
    reply = call("POST", web + "/mqtt/auth?format=go-auth", body={"username": mine, "password": "bad"})
    assert reply.status == 403
    reply = call("POST", web + "/mqtt/auth?format=emqx", raw=b"username=x&password=y",
                 content_type="application/x-www-form-urlencoded")
    assert reply.status == 200 and reply.json()["result"] == "deny"


def test_malformed_hook_requests_are_denied(hooks):
    web, _, _ = hooks
    reply = call("POST", web + "/mqtt/auth", raw=b"{not json", content_type="application/json")
    assert reply.status == 200 and reply.json()["result"] == "deny"
    assert call("GET", web + "/mqtt/auth").status == 405


def test_hook_secret_is_required_when_configured(stack, registry):
    stack.env.update(MQTT_HOOK_SECRET="s3cret-hook")
    stack.start_web()
    device_id, secret = registry.device("hooked")
    fields = {"username": device_id, "password": secret}
    assert call("POST", stack.web + "/mqtt/auth", body=fields).json()["result"] == "deny"
    wrong = call("POST", stack.web + "/mqtt/auth", body=fields, headers={"X-Iotgw-Hook-Secret": "nope"})
    assert wrong.json()["result"] == "deny"
    right = call("POST", stack.web + "/mqtt/auth", body=fields, headers={"X-Iotgw-Hook-Secret": "s3cret-hook"})
    assert right.json()["result"] == "allow"
