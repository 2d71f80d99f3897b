"""The admin: a channel's test-send action sends through the real channel and shows the result."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from notify.models import Channel, Delivery
from testing.webhook import Receiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(db):
    user = User.objects.create_user("root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    return client


def test_the_test_send_action_reaches_the_webhook_and_reports_success(admin_client):
    receiver = Receiver().start()
    try:
        channel = Channel.objects.create(name="hook", kind="webhook", target=receiver.url, secret="s")
        action = {"action": "send_test", "_selected_action": [channel.pk]}
        response = admin_client.post("/admin/notify/channel/", action,
                                     follow=True)
        assert "hook: sent (http 200)" in response.content.decode().lower()
        (request,) = receiver.received
        assert request.json()["event"]["kind"] == "test"
        assert Delivery.objects.get().status == "sent"
    finally:
        receiver.stop()


def test_the_test_send_action_reports_a_receiver_that_is_down(admin_client):
    channel = Channel.objects.create(name="hook", kind="webhook", target=Receiver().url, secret="s")
    response = admin_client.post("/admin/notify/channel/", {"action": "send_test", "_selected_action": [channel.pk]},
                                 follow=True)
    assert "hook: failed: connectionerror" in response.content.decode().lower()
    assert Delivery.objects.get().status == "failed"


def test_a_webhook_added_without_a_secret_gets_one(admin_client):
    admin_client.post("/admin/notify/channel/add/", {"name": "h", "kind": "webhook", "target": "http://x.test/",
                                                     "secret": "", "enabled": "on"})
    assert Channel.objects.get().secret.startswith("whsec_")


def test_the_delivery_log_lists_deliveries(admin_client):
    assert admin_client.get("/admin/notify/delivery/").status_code == 200
    assert admin_client.get("/admin/notify/subscription/add/").status_code == 200


def test_the_admin_refuses_a_target_the_channel_cannot_use(admin_client):
    reply = admin_client.post("/admin/notify/channel/add/", {"name": "h", "kind": "webhook", "target": "ftp://x/",
                                                             "secret": "", "enabled": "on"})
    assert reply.status_code == 200 and "http:// or https://" in reply.content.decode()
    assert not Channel.objects.exists()
