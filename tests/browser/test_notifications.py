"""The notifications page in headless Chromium: a channel's test-send button reaches a real receiver."""

from __future__ import annotations

import pytest

from notify.models import Channel
from testing.webhook import Receiver
from tests.browser.test_dashboard import browser, gateway, operator, page, shot  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def channel(registry, receiver):
    """Made before the browser starts (playwright's sync API runs an event loop, where the ORM may not)."""
    return Channel.objects.create(name=f"ops-hook-{registry.tag}", kind="webhook", target=receiver.url, secret="s")


def test_the_test_button_sends_through_the_channel_and_shows_the_result(channel, receiver, page, gateway):  # noqa: F811
    page.goto(gateway.url + "/notifications/")
    row = f'tr[data-channel="{channel.pk}"]'
    page.click(f"{row} button.test-send")
    page.wait_for_selector(f"{row} .result.good")
    assert page.inner_text(f"{row} .result").startswith("sent (HTTP 200) in ")
    shot(page, "notifications-test-sent")
    (request,) = receiver.received
    assert request.json()["event"]["kind"] == "test"
