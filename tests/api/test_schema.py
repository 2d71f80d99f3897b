"""The OpenAPI schema tells the truth: each operation declares exactly the statuses it answers, in the error shape."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from alarms.models import AlarmRule
from alarms.services import alarm_raise
from core.ratelimit import BucketMap
from devices.models import Command
from devices.services.commands import command_issue
from devices.services.devices import device_register, device_set_enabled
from devices.services.tokens import token_create

pytestmark = pytest.mark.django_db


@dataclass
class World:
    alice: str  # token
    ops: str  # staff token
    mine: str  # alice's device id
    secret: str
    hidden: str  # bob's device id
    disabled: str  # alice's disabled device
    command: str  # a queued command of alice's
    theirs: str  # a command of bob's
    quiet: str  # alice's device without commands
    quiet_secret: str
    session: Client  # alice logged in, CSRF enforced
    alarm: int = 0  # an active alarm of alice's device
    rule: int = 0  # a rule on alice's device


@pytest.fixture
def world(settings) -> World:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    settings.IOTGW_IMPORT_MAX_BYTES = 4096
    users = get_user_model().objects
    alice, bob = users.create_user("alice"), users.create_user("bob")
    ops = users.create_user("ops", is_staff=True)
    mine, secret = device_register(device_id="mine", owner=alice)
    device_register(device_id="theirs", owner=bob)
    device_register(device_id="off", owner=alice)
    _, quiet_secret = device_register(device_id="quiet", owner=alice)
    device_set_enabled(device_id="off", enabled=False)
    command = command_issue(user=alice, device_id="mine", name="reboot")
    theirs = command_issue(user=bob, device_id="theirs", name="reboot")
    session = Client(enforce_csrf_checks=True)
    session.force_login(alice)
    rule = AlarmRule.objects.create(name="hot", kind="above", metric="t", high=1, device_id="mine")
    alarm = alarm_raise(rule=rule, device_id="mine", at=command.created_at).alarm
    from api import ingest

    ingest._ingest_buckets = None  # a bucket a case slowed down is not the next case's
    return World(alice=token_create(user=alice), ops=token_create(user=ops), mine="mine", secret=secret,
                 hidden="theirs", disabled="off", command=str(command.id), theirs=str(theirs.id),
                 session=session, alarm=alarm.pk, rule=rule.pk, quiet="quiet",
                 quiet_secret=quiet_secret)


def api(method: str, path: str, *, token: str | None = None, body=None, raw: bytes | None = None,
        headers: dict | None = None, client: Client | None = None):
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in (headers or {}).items()}
    if token:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    kwargs = {"data": data, "content_type": "application/json"} if data is not None else {}
    return getattr(client or Client(), method.lower())(path, **kwargs, **extra)


def device_auth(device_id: str, secret: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{device_id}:{secret}".encode()).decode()}


def until_limited(w: World):
    """Ingest until the device's rate limit answers (a slow bucket: each request here builds a fresh event loop)."""
    from api import ingest  # after api.rest, which imports it while it builds the API

    ingest._ingest_buckets = BucketMap(rate=0.01, burst=3)
    for _ in range(500):
        reply = api("POST", f"/api/ingest/{w.mine}/telemetry", body={"x": 1}, headers=device_auth(w.mine, w.secret))
        if reply.status_code == 429:
            return reply
    raise AssertionError("never rate limited")


def next_command_of(w: World):
    """The device long-polls and is handed its queued command."""
    reply = api("GET", f"/api/ingest/{w.mine}/commands/next?wait=10", headers=device_auth(w.mine, w.secret))
    assert reply.status_code == 200 and reply.json()["id"] == w.command, reply.content[:300]
    return reply


Case = Callable[[World], object]
SPEC = {"topics": [{"topic": "x/{device}/data", "role": "telemetry"}]}


def custom(w: World) -> None:
    """A custom profile to replace or delete."""
    api("POST", "/api/profiles", token=w.ops, body={"name": "custom", "spec": SPEC})


def mail_channel(name: str = "mail") -> int:
    from notify.models import Channel

    return Channel.objects.get_or_create(name=name, kind="email", target="oncall@example.test")[0].pk


CHANNEL = {"name": "hook", "kind": "webhook", "target": "http://127.0.0.1:9/hook"}
NOTIFICATION_CASES: dict[tuple[str, str], dict[int, Case]] = {
    ("get", "/api/notifications/channels"): {
        200: lambda w: api("GET", "/api/notifications/channels", token=w.ops),
        401: lambda w: api("GET", "/api/notifications/channels"),
        403: lambda w: api("GET", "/api/notifications/channels", token=w.alice),
    },
    ("post", "/api/notifications/channels"): {
        201: lambda w: api("POST", "/api/notifications/channels", token=w.ops, body=CHANNEL),
        400: lambda w: api("POST", "/api/notifications/channels", token=w.ops, body={**CHANNEL, "kind": "fax"}),
        401: lambda w: api("POST", "/api/notifications/channels", body=CHANNEL),
        403: lambda w: api("POST", "/api/notifications/channels", token=w.alice, body=CHANNEL),
        409: lambda w: (mail_channel("hook"), api("POST", "/api/notifications/channels", token=w.ops,
                                                   body=CHANNEL))[1],
        413: lambda w: api("POST", "/api/notifications/channels", token=w.ops, raw=BIG),
    },
    ("get", "/api/notifications/channels/{channel_id}"): {
        200: lambda w: api("GET", f"/api/notifications/channels/{mail_channel()}", token=w.ops),
        401: lambda w: api("GET", f"/api/notifications/channels/{mail_channel()}"),
        403: lambda w: api("GET", f"/api/notifications/channels/{mail_channel()}", token=w.alice),
        404: lambda w: api("GET", "/api/notifications/channels/999999", token=w.ops),
    },
    ("post", "/api/notifications/channels/{channel_id}/test"): {
        200: lambda w: api("POST", f"/api/notifications/channels/{mail_channel()}/test", token=w.ops),
        401: lambda w: api("POST", f"/api/notifications/channels/{mail_channel()}/test"),
        403: lambda w: api("POST", f"/api/notifications/channels/{mail_channel()}/test", token=w.alice),
        404: lambda w: api("POST", "/api/notifications/channels/999999/test", token=w.ops),
    },
    ("get", "/api/notifications/subscriptions"): {
        200: lambda w: api("GET", "/api/notifications/subscriptions", token=w.ops),
        401: lambda w: api("GET", "/api/notifications/subscriptions"),
        403: lambda w: api("GET", "/api/notifications/subscriptions", token=w.alice),
    },
    ("post", "/api/notifications/subscriptions"): {
        201: lambda w: api("POST", "/api/notifications/subscriptions", token=w.ops,
                           body={"channel": mail_channel(), "user": "alice"}),
        400: lambda w: api("POST", "/api/notifications/subscriptions", token=w.ops, body={"channel": mail_channel()}),
        401: lambda w: api("POST", "/api/notifications/subscriptions", body={"channel": 1, "user": "alice"}),
        403: lambda w: api("POST", "/api/notifications/subscriptions", token=w.alice,
                           body={"channel": 1, "user": "alice"}),
        413: lambda w: api("POST", "/api/notifications/subscriptions", token=w.ops, raw=BIG),
    },
    ("get", "/api/notifications/deliveries"): {
        200: lambda w: api("GET", "/api/notifications/deliveries", token=w.ops),
        400: lambda w: api("GET", "/api/notifications/deliveries?limit=0", token=w.ops),
        401: lambda w: api("GET", "/api/notifications/deliveries"),
        403: lambda w: api("GET", "/api/notifications/deliveries", token=w.alice),
    },
}
BIG = b'{"id": "' + b"x" * 5000 + b'"}'

# (method, path in the schema) -> {status: a request that gets it}
CASES: dict[tuple[str, str], dict[int, Case]] = {
    ("get", "/api/devices"): {
        200: lambda w: api("GET", "/api/devices", token=w.alice),
        400: lambda w: api("GET", "/api/devices?limit=0", token=w.alice),
        401: lambda w: api("GET", "/api/devices"),
    },
    ("post", "/api/devices"): {
        201: lambda w: api("POST", "/api/devices", token=w.ops, body={"id": "new-one"}),
        400: lambda w: api("POST", "/api/devices", token=w.ops, body={"name": "no id"}),
        401: lambda w: api("POST", "/api/devices", body={"id": "x"}),
        403: lambda w: api("POST", "/api/devices", token=w.alice, body={"id": "x"}),
        409: lambda w: api("POST", "/api/devices", token=w.ops, body={"id": w.mine}),
        413: lambda w: api("POST", "/api/devices", token=w.ops, raw=BIG),
    },
    ("get", "/api/devices/{device_id}"): {
        200: lambda w: api("GET", f"/api/devices/{w.mine}", token=w.alice),
        401: lambda w: api("GET", f"/api/devices/{w.mine}"),
        404: lambda w: api("GET", f"/api/devices/{w.hidden}", token=w.alice),
    },
    ("get", "/api/devices/{device_id}/telemetry"): {
        200: lambda w: api("GET", f"/api/devices/{w.mine}/telemetry", token=w.alice),
        400: lambda w: api("GET", f"/api/devices/{w.mine}/telemetry?since=yesterday", token=w.alice),
        401: lambda w: api("GET", f"/api/devices/{w.mine}/telemetry"),
        404: lambda w: api("GET", f"/api/devices/{w.hidden}/telemetry", token=w.alice),
    },
    ("get", "/api/devices/{device_id}/telemetry/aggregate"): {
        200: lambda w: api("GET", f"/api/devices/{w.mine}/telemetry/aggregate?metric=x", token=w.alice),
        400: lambda w: api("GET", f"/api/devices/{w.mine}/telemetry/aggregate?metric=x&bucket=1&since=0",
                           token=w.alice),
        401: lambda w: api("GET", f"/api/devices/{w.mine}/telemetry/aggregate?metric=x"),
        404: lambda w: api("GET", f"/api/devices/{w.hidden}/telemetry/aggregate?metric=x", token=w.alice),
    },
    ("post", "/api/ingest/{device_id}/telemetry"): {
        200: lambda w: api("POST", f"/api/ingest/{w.mine}/telemetry", body={"x": 1},
                           headers=device_auth(w.mine, w.secret)),
        400: lambda w: api("POST", f"/api/ingest/{w.mine}/telemetry", raw=b"{", headers=device_auth(w.mine, w.secret)),
        401: lambda w: api("POST", f"/api/ingest/{w.disabled}/telemetry", body={"x": 1},
                           headers=device_auth(w.disabled, w.secret)),
        413: lambda w: api("POST", f"/api/ingest/{w.mine}/telemetry", raw=b"[" + b"{}," * 30000 + b"{}]",
                           headers=device_auth(w.mine, w.secret)),
        429: until_limited,
    },
    ("get", "/api/ingest/{device_id}/commands/next"): {
        200: lambda w: next_command_of(w),
        204: lambda w: api("GET", f"/api/ingest/{w.quiet}/commands/next?wait=1",
                           headers=device_auth(w.quiet, w.quiet_secret)),
        400: lambda w: api("GET", f"/api/ingest/{w.mine}/commands/next?wait=-1", headers=device_auth(w.mine, w.secret)),
        401: lambda w: api("GET", f"/api/ingest/{w.mine}/commands/next", headers=device_auth(w.mine, "wrong")),
        429: lambda w: (until_limited(w), api("GET", f"/api/ingest/{w.mine}/commands/next",
                                              headers=device_auth(w.mine, w.secret)))[1],
    },
    ("post", "/api/ingest/{device_id}/commands/{command_id}/response"): {
        200: lambda w: (next_command_of(w), api("POST", f"/api/ingest/{w.mine}/commands/{w.command}/response",
                                                body={"status": "ok"}, headers=device_auth(w.mine, w.secret)))[1],
        400: lambda w: api("POST", f"/api/ingest/{w.mine}/commands/{w.command}/response", body={"status": "maybe"},
                           headers=device_auth(w.mine, w.secret)),
        401: lambda w: api("POST", f"/api/ingest/{w.mine}/commands/{w.command}/response", body={"status": "ok"}),
        404: lambda w: api("POST", f"/api/ingest/{w.mine}/commands/{w.theirs}/response", body={"status": "ok"},
                           headers=device_auth(w.mine, w.secret)),
        413: lambda w: api("POST", f"/api/ingest/{w.mine}/commands/{w.command}/response", raw=BIG + b" " * 70000,
                           headers=device_auth(w.mine, w.secret)),
        429: lambda w: (until_limited(w), api("POST", f"/api/ingest/{w.mine}/commands/{w.command}/response",
                                              body={"status": "ok"}, headers=device_auth(w.mine, w.secret)))[1],
    },
    ("post", "/api/devices/{device_id}/commands"): {
        202: lambda w: api("POST", f"/api/devices/{w.mine}/commands", token=w.alice, body={"name": "ping"}),
        400: lambda w: api("POST", f"/api/devices/{w.mine}/commands", token=w.alice, body={"name": "no spaces"}),
        401: lambda w: api("POST", f"/api/devices/{w.mine}/commands", body={"name": "ping"}),
        403: lambda w: api("POST", f"/api/devices/{w.disabled}/commands", token=w.alice, body={"name": "ping"}),
        404: lambda w: api("POST", f"/api/devices/{w.hidden}/commands", token=w.alice, body={"name": "ping"}),
        413: lambda w: api("POST", f"/api/devices/{w.mine}/commands", token=w.alice, raw=BIG),
    },
    ("post", "/api/commands"): {
        202: lambda w: api("POST", "/api/commands", token=w.alice,
                           body={"name": "ping", "devices": [w.mine, w.hidden]}),
        400: lambda w: api("POST", "/api/commands", token=w.alice, body={"name": "ping", "devices": []}),
        401: lambda w: api("POST", "/api/commands", body={"name": "ping", "devices": [w.mine]}),
        403: lambda w: api("POST", "/api/commands", client=w.session, body={"name": "ping", "devices": [w.mine]}),
        413: lambda w: api("POST", "/api/commands", token=w.alice, raw=BIG),
    },
    ("get", "/api/commands/{command_id}"): {
        200: lambda w: api("GET", f"/api/commands/{w.command}", token=w.alice),
        401: lambda w: api("GET", f"/api/commands/{w.command}"),
        404: lambda w: api("GET", "/api/commands/not-a-uuid", token=w.alice),
    },
    ("post", "/api/commands/{command_id}/cancel"): {
        200: lambda w: api("POST", f"/api/commands/{w.command}/cancel", token=w.alice),
        401: lambda w: api("POST", f"/api/commands/{w.command}/cancel"),
        403: lambda w: api("POST", f"/api/commands/{w.command}/cancel", client=w.session),  # no CSRF token
        404: lambda w: api("POST", f"/api/commands/{w.theirs}/cancel", token=w.alice),
        409: lambda w: (Command.objects.filter(pk=w.command).update(status="sent"),
                        api("POST", f"/api/commands/{w.command}/cancel", token=w.alice))[1],
    },
    ("post", "/api/devices/{device_id}/secret"): {
        200: lambda w: api("POST", f"/api/devices/{w.mine}/secret", token=w.ops),
        401: lambda w: api("POST", f"/api/devices/{w.mine}/secret"),
        403: lambda w: api("POST", f"/api/devices/{w.mine}/secret", token=w.alice),
        404: lambda w: api("POST", f"/api/devices/{w.hidden}/secret", token=w.alice),
    },
    ("get", "/api/profiles"): {
        200: lambda w: api("GET", "/api/profiles", token=w.alice),
        401: lambda w: api("GET", "/api/profiles"),
    },
    ("get", "/api/profiles/{name}"): {
        200: lambda w: api("GET", "/api/profiles/tasmota", token=w.alice),
        401: lambda w: api("GET", "/api/profiles/tasmota"),
        404: lambda w: api("GET", "/api/profiles/nope", token=w.alice),
    },
    ("post", "/api/profiles"): {
        201: lambda w: api("POST", "/api/profiles", token=w.ops, body={"name": "mine", "spec": SPEC}),
        400: lambda w: api("POST", "/api/profiles", token=w.ops, body={"name": "bad", "spec": {"topics": []}}),
        401: lambda w: api("POST", "/api/profiles", body={"name": "x", "spec": SPEC}),
        403: lambda w: api("POST", "/api/profiles", token=w.alice, body={"name": "x", "spec": SPEC}),
        409: lambda w: api("POST", "/api/profiles", token=w.ops, body={"name": "tasmota", "spec": SPEC}),
    },
    ("put", "/api/profiles/{name}"): {
        200: lambda w: (custom(w), api("PUT", "/api/profiles/custom", token=w.ops, body={"spec": SPEC}))[1],
        400: lambda w: (custom(w), api("PUT", "/api/profiles/custom", token=w.ops, body={"spec": {"x": 1}}))[1],
        401: lambda w: api("PUT", "/api/profiles/tasmota", body={"spec": SPEC}),
        403: lambda w: api("PUT", "/api/profiles/tasmota", token=w.alice, body={"spec": SPEC}),
        404: lambda w: api("PUT", "/api/profiles/nope", token=w.ops, body={"spec": SPEC}),
        409: lambda w: api("PUT", "/api/profiles/tasmota", token=w.ops, body={"spec": SPEC}),
    },
    ("delete", "/api/profiles/{name}"): {
        200: lambda w: (custom(w), api("DELETE", "/api/profiles/custom", token=w.ops))[1],
        401: lambda w: api("DELETE", "/api/profiles/tasmota"),
        403: lambda w: api("DELETE", "/api/profiles/tasmota", token=w.alice),
        404: lambda w: api("DELETE", "/api/profiles/nope", token=w.ops),
        409: lambda w: api("DELETE", "/api/profiles/tasmota", token=w.ops),
    },
    ("put", "/api/devices/{device_id}/profile"): {
        200: lambda w: api("PUT", f"/api/devices/{w.mine}/profile", token=w.ops, body={"profile": "tasmota"}),
        400: lambda w: api("PUT", f"/api/devices/{w.mine}/profile", token=w.ops, body={"profile": "nope"}),
        401: lambda w: api("PUT", f"/api/devices/{w.mine}/profile", body={"profile": "tasmota"}),
        403: lambda w: api("PUT", f"/api/devices/{w.mine}/profile", token=w.alice, body={"profile": "tasmota"}),
        404: lambda w: api("PUT", f"/api/devices/{w.hidden}/profile", token=w.alice, body={"profile": "tasmota"}),
    },
    ("post", "/api/devices/{device_id}/children"): {
        201: lambda w: api("POST", f"/api/devices/{w.mine}/children", token=w.ops, body={"name": "Living Room"}),
        400: lambda w: api("POST", f"/api/devices/{w.mine}/children", token=w.ops, body={"name": ""}),
        401: lambda w: api("POST", f"/api/devices/{w.mine}/children", body={"name": "x"}),
        403: lambda w: api("POST", f"/api/devices/{w.mine}/children", token=w.alice, body={"name": "x"}),
        404: lambda w: api("POST", f"/api/devices/{w.hidden}/children", token=w.alice, body={"name": "x"}),
        409: lambda w: [api("POST", f"/api/devices/{w.mine}/children", token=w.ops, body={"name": "x"})
                        for _ in range(2)][1],
    },
    ("get", "/api/telemetry/export"): {
        200: lambda w: api("GET", f"/api/telemetry/export?devices={w.mine}", token=w.alice),
        400: lambda w: api("GET", "/api/telemetry/export?format=xml", token=w.alice),
        401: lambda w: api("GET", "/api/telemetry/export"),
        404: lambda w: api("GET", f"/api/telemetry/export?devices={w.hidden}", token=w.alice),
    },
    ("post", "/api/telemetry/import"): {
        200: lambda w: api("POST", "/api/telemetry/import", token=w.alice, raw=b"device,ts,metric,value\n"),
        400: lambda w: api("POST", "/api/telemetry/import?format=xml", token=w.alice, raw=b""),
        401: lambda w: api("POST", "/api/telemetry/import", raw=b""),
        413: lambda w: api("POST", "/api/telemetry/import", token=w.alice, raw=b"x" * 5000),
    },
    ("post", "/api/ws-ticket"): {
        200: lambda w: api("POST", "/api/ws-ticket", token=w.alice),
        401: lambda w: api("POST", "/api/ws-ticket"),
        403: lambda w: api("POST", "/api/ws-ticket", client=w.session),
    },
    **NOTIFICATION_CASES,
}

RULE = {"name": "cold", "kind": "below", "metric": "t", "low": 0}


def _alarm_write(action: str) -> dict[int, Case]:
    return {
        200: lambda w: api("POST", f"/api/alarms/{w.alarm}/{action}", token=w.alice, body={"note": "seen"}),
        400: lambda w: api("POST", f"/api/alarms/{w.alarm}/{action}", token=w.alice, body={"note": 5}),
        401: lambda w: api("POST", f"/api/alarms/{w.alarm}/{action}", body={}),
        403: lambda w: api("POST", f"/api/alarms/{w.alarm}/{action}", client=w.session, body={}),
        404: lambda w: api("POST", f"/api/alarms/999999/{action}", token=w.alice, body={}),
        409: lambda w: (api("POST", f"/api/alarms/{w.alarm}/clear", token=w.alice, body={}),
                        api("POST", f"/api/alarms/{w.alarm}/{action}", token=w.alice, body={}))[1],
        413: lambda w: api("POST", f"/api/alarms/{w.alarm}/{action}", token=w.alice, raw=BIG),
    }


CASES.update({
    ("get", "/api/alarms"): {
        200: lambda w: api("GET", "/api/alarms?state=open", token=w.alice),
        400: lambda w: api("GET", "/api/alarms?severity=loud", token=w.alice),
        401: lambda w: api("GET", "/api/alarms"),
    },
    ("get", "/api/alarms/{alarm_id}"): {
        200: lambda w: api("GET", f"/api/alarms/{w.alarm}", token=w.alice),
        401: lambda w: api("GET", f"/api/alarms/{w.alarm}"),
        404: lambda w: api("GET", f"/api/alarms/{w.alarm}", token=w.ops.replace(w.ops, token_create(
            user=get_user_model().objects.create_user("nobody")))),
    },
    ("post", "/api/alarms/{alarm_id}/acknowledge"): _alarm_write("acknowledge"),
    ("post", "/api/alarms/{alarm_id}/clear"): _alarm_write("clear"),
    ("get", "/api/alarm-rules"): {
        200: lambda w: api("GET", "/api/alarm-rules", token=w.alice),
        401: lambda w: api("GET", "/api/alarm-rules"),
    },
    ("post", "/api/alarm-rules"): {
        201: lambda w: api("POST", "/api/alarm-rules", token=w.ops, body=RULE),
        400: lambda w: api("POST", "/api/alarm-rules", token=w.ops, body={**RULE, "low_clear": -1}),
        401: lambda w: api("POST", "/api/alarm-rules", body=RULE),
        403: lambda w: api("POST", "/api/alarm-rules", token=w.alice, body=RULE),
        413: lambda w: api("POST", "/api/alarm-rules", token=w.ops, raw=BIG),
    },
    ("get", "/api/alarm-rules/{rule_id}"): {
        200: lambda w: api("GET", f"/api/alarm-rules/{w.rule}", token=w.alice),
        401: lambda w: api("GET", f"/api/alarm-rules/{w.rule}"),
        404: lambda w: api("GET", "/api/alarm-rules/12345678", token=w.alice),
    },
    ("put", "/api/alarm-rules/{rule_id}"): {
        200: lambda w: api("PUT", f"/api/alarm-rules/{w.rule}", token=w.ops, body=RULE),
        400: lambda w: api("PUT", f"/api/alarm-rules/{w.rule}", token=w.ops, body={**RULE, "kind": "inactivity"}),
        401: lambda w: api("PUT", f"/api/alarm-rules/{w.rule}", body=RULE),
        403: lambda w: api("PUT", f"/api/alarm-rules/{w.rule}", token=w.alice, body=RULE),
        404: lambda w: api("PUT", "/api/alarm-rules/12345678", token=w.ops, body=RULE),
        413: lambda w: api("PUT", f"/api/alarm-rules/{w.rule}", token=w.ops, raw=BIG),
    },
    ("delete", "/api/alarm-rules/{rule_id}"): {
        204: lambda w: api("DELETE", f"/api/alarm-rules/{w.rule}", token=w.ops),
        401: lambda w: api("DELETE", f"/api/alarm-rules/{w.rule}"),
        403: lambda w: api("DELETE", f"/api/alarm-rules/{w.rule}", token=w.alice),
        404: lambda w: api("DELETE", "/api/alarm-rules/12345678", token=w.ops),
    },
})


@pytest.fixture
def schema(client) -> dict:
    return client.get("/api/openapi.json").json()


def test_every_operation_has_its_cases(schema):
    operations = {(m, p) for p, ops in schema["paths"].items() for m in ops}
    assert operations == set(CASES)


@pytest.mark.parametrize(("operation", "status"), [(op, s) for op, cases in CASES.items() for s in cases],
                         ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_a_declared_status_is_really_answered_in_its_declared_shape(world, schema, operation, status):
    method, path = operation
    declared = schema["paths"][path][method]["responses"]
    assert sorted(map(int, declared)) == sorted(CASES[operation]), "declared statuses are exactly the real ones"
    reply = CASES[operation][status](world)
    assert reply.status_code == status, reply.content[:300]
    if reply.streaming:  # an export: its declared media type, not JSON
        assert reply["Content-Type"].split(";")[0] in declared[str(status)]["content"]
        return
    if status == 204:
        assert reply.content == b""
        return
    body = reply.json()
    if status >= 400:
        assert declared[str(status)]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]) <= {"code", "message", "details"}
        assert all(isinstance(v, str) for k, v in body["error"].items() if k != "details")
        if "details" in body["error"]:
            assert status == 400 and all(set(d) == {"loc", "msg"} for d in body["error"]["details"])
    if status == 429:
        assert int(reply["Retry-After"]) >= 1 and "Retry-After" in declared["429"]["headers"]


def test_validation_errors_carry_details_and_the_schema_says_so(world, schema):
    reply = api("POST", "/api/devices", token=world.ops, body={"name": 5})
    details = reply.json()["error"]["details"]
    assert reply.status_code == 400 and any(d["loc"][-1] == "id" for d in details), details
    info = schema["components"]["schemas"]["ErrorInfo"]
    assert info["properties"]["details"]["type"] == "array" and info["required"] == ["code", "message"]
    assert schema["components"]["schemas"]["ErrorDetail"]["required"] == ["loc", "msg"]


def test_ingest_declares_the_device_credentials_it_takes(schema):
    ingest = schema["paths"]["/api/ingest/{device_id}/telemetry"]["post"]
    assert ingest["security"] == [{"DeviceBasic": []}, {"DeviceSecret": []}]
    schemes = schema["components"]["securitySchemes"]
    assert schemes["DeviceBasic"] == {**schemes["DeviceBasic"], "type": "http", "scheme": "basic"}
    assert schemes["DeviceSecret"]["scheme"] == "bearer"
    others = [op for p, ops in schema["paths"].items() for op in ops.values() if "ingest" not in p]
    assert all(op["security"] == [{"BearerToken": []}, {"SessionCookie": []}] for op in others)


def test_created_and_accepted_declare_their_location(schema):
    assert "Location" in schema["paths"]["/api/devices"]["post"]["responses"]["201"]["headers"]
    assert "Location" in schema["paths"]["/api/devices/{device_id}/commands"]["post"]["responses"]["202"]["headers"]
    assert "Link" in schema["paths"]["/api/devices"]["get"]["responses"]["200"]["headers"]
