"""Notifications over the JSON API: staff only, secrets shown once, a test send through the real channel, the log."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client

from devices.services.tokens import token_create
from notify.services import enqueue
from testing.webhook import Receiver
from tests.notify.helpers import drain

pytestmark = pytest.mark.django_db


@pytest.fixture
def ops(db) -> str:
    return token_create(user=User.objects.create_user("ops", is_staff=True))


def call(method: str, path: str, token: str, body=None):
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
    return getattr(Client(), method.lower())(path, HTTP_AUTHORIZATION=f"Bearer {token}", **kwargs)


def test_a_webhook_secret_is_shown_once_and_never_again(ops):
    made = call("POST", "/api/notifications/channels", ops, {"name": "h", "kind": "webhook",
                                                            "target": "https://hooks.example.test/x"})
    assert made.status_code == 201 and made.json()["secret"].startswith("whsec_")
    assert made["Location"] == f"/api/notifications/channels/{made.json()['id']}"
    for reply in (call("GET", made["Location"], ops), call("GET", "/api/notifications/channels", ops)):
        assert "whsec_" not in reply.content.decode() and "secret" not in reply.content.decode()


def test_an_apprise_url_holds_a_token_and_is_shown_only_by_its_scheme(ops):
    made = call("POST", "/api/notifications/channels", ops, {"name": "chat", "kind": "apprise",
                                                            "target": "ntfy://ntfy.example.test/s3cret-topic"})
    assert made.status_code == 201, made.content
    assert made.json()["target_full"] == "ntfy://ntfy.example.test/s3cret-topic"
    shown = call("GET", made["Location"], ops).json()
    assert shown["target"] == "ntfy://…" and "s3cret" not in json.dumps(shown)


@pytest.mark.parametrize("kind, target", [("webhook", "ftp://x.test/"), ("webhook", "http://[::1"),
                                          ("email", "not-an-address"), ("apprise", "nonsense://"),
                                          ("webhook", "http://x\u0000.test/")])
def test_a_target_the_channel_cannot_use_is_refused(ops, kind, target):
    reply = call("POST", "/api/notifications/channels", ops, {"name": "c", "kind": kind, "target": target})
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "bad_request"


def test_with_an_allow_list_only_those_hosts_may_be_targets(ops, settings):
    settings.IOTGW_NOTIFY_HOSTS = ["*.example.test"]
    ok = call("POST", "/api/notifications/channels", ops, {"name": "a", "kind": "webhook",
                                                          "target": "https://hooks.example.test/"})
    inside = call("POST", "/api/notifications/channels", ops, {"name": "b", "kind": "webhook",
                                                              "target": "http://10.0.0.5/admin"})
    chat = call("POST", "/api/notifications/channels", ops, {"name": "c", "kind": "apprise",
                                                            "target": "slack://T1/B2/C3"})
    assert (ok.status_code, inside.status_code, chat.status_code) == (201, 400, 400)


def test_the_test_button_sends_through_the_real_channel_and_says_how_it_went(ops):
    receiver = Receiver().start()
    try:
        made = call("POST", "/api/notifications/channels", ops, {"name": "h", "kind": "webhook",
                                                                "target": receiver.url}).json()
        result = call("POST", f"/api/notifications/channels/{made['id']}/test", ops).json()
        assert result["ok"] is True and result["status_code"] == 200 and result["latency_ms"] > 0
        assert receiver.received[0].headers["x-iotgw-delivery"] == result["delivery"]
    finally:
        receiver.stop()
    down = call("POST", f"/api/notifications/channels/{made['id']}/test", ops).json()
    assert down["ok"] is False and "Connection" in down["error"]


def test_a_subscription_is_a_users_or_a_groups_and_its_fields_are_checked(ops):
    channel = call("POST", "/api/notifications/channels", ops, {"name": "m", "kind": "email",
                                                               "target": "a@example.test"}).json()["id"]
    good = call("POST", "/api/notifications/subscriptions", ops, {"channel": channel, "user": "ops",
                                                                 "min_severity": "major", "repeat_every": 600})
    assert good.status_code == 201 and good.json()["repeat_every"] == 600
    for bad in ({"channel": channel}, {"channel": channel, "user": "ops", "group": "lab"},
                {"channel": channel, "user": "nobody"}, {"channel": channel, "user": "ops", "scope": "devices"},
                {"channel": channel, "user": "ops", "min_severity": "apocalyptic"},
                {"channel": channel, "user": "ops", "kinds": ["test"]}, {"channel": 424242, "user": "ops"}):
        assert call("POST", "/api/notifications/subscriptions", ops, bad).status_code == 400, bad
    assert [s["id"] for s in call("GET", "/api/notifications/subscriptions", ops).json()] == [good.json()["id"]]


def test_the_delivery_log_pages_newest_first_with_each_try(ops):
    channel = call("POST", "/api/notifications/channels", ops, {"name": "h", "kind": "webhook",
                                                               "target": Receiver().url}).json()["id"]
    call("POST", "/api/notifications/subscriptions", ops, {"channel": channel, "user": "ops"})
    for i in range(3):
        enqueue(key=f"alarm:{i}", kind="raised", severity="major", title=f"t{i}")
    drain(finish={"max_attempts": 5, "retry_first": 60, "retry_most": 60})  # nothing listens: one failed try each
    first = call("GET", "/api/notifications/deliveries?limit=2", ops).json()
    assert [d["key"] for d in first["items"]] == ["alarm:2", "alarm:1"]
    assert first["items"][0]["log"][0]["ok"] is False and first["items"][0]["status"] == "pending"
    rest = call("GET", first["next"], ops).json()
    assert [d["key"] for d in rest["items"]] == ["alarm:0"] and rest["next"] is None
    assert call("GET", "/api/notifications/deliveries?key=alarm:1", ops).json()["items"][0]["key"] == "alarm:1"
    assert call("GET", "/api/notifications/deliveries?after=nope", ops).status_code == 400
