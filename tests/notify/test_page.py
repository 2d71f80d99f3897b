"""The /notifications/ page: staff see the channels with a test button each; others may not."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from notify.models import Channel

pytestmark = pytest.mark.django_db


def test_staff_see_each_channel_with_its_test_button_and_no_secret():
    Channel.objects.create(name="chat", kind="apprise", target="ntfy://ntfy.example.test/s3cret")
    client = Client()
    client.force_login(User.objects.create_user("ops", is_staff=True))
    page = client.get("/notifications/").content.decode()
    assert "chat" in page and "Send test" in page and "ntfy://…" in page and "s3cret" not in page


def test_a_user_who_is_not_staff_is_refused():
    client = Client()
    client.force_login(User.objects.create_user("alice"))
    assert client.get("/notifications/").status_code == 403
