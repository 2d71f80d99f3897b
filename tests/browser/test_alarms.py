"""Alarms in headless Chromium: raised by the all-in-one gateway's engine from the simulated device's telemetry,
acknowledged from the device page, shown on the fleet and alarms pages."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from alarms.models import Alarm, AlarmRule
from tests.browser.test_dashboard import browser, gateway, operator, page, shot  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def rule(live_db):
    """Made before the browser starts (playwright's sync API runs an event loop, where the ORM may not).

    The simulator's temperature is always above -1000: the gateway raises it within a rule poll.
    """
    return AlarmRule.objects.create(name="warm enough", kind="above", metric="temperature", high=-1000,
                                    severity="major")


def test_an_alarm_is_acknowledged_from_the_device_page(rule, gateway, page):  # noqa: F811
    page.goto(gateway.url + "/devices/demo-1/")
    row = "#alarms tbody tr"
    page.wait_for_selector(f'{row}[data-state="active"]', timeout=30_000)
    assert "warm enough" in page.inner_text(row)
    page.wait_for_function("() => document.querySelector('#alarm-count .n').textContent === '1'")
    page.fill(f"{row} input.note", "looked at it")
    page.click(f"{row} button.ack")
    page.wait_for_selector(f'{row}[data-state="acknowledged"]')
    assert "looked at it" in page.inner_text(f"{row} .ack-by")
    shot(page, "device-alarm-acknowledged")
    alarm_id = page.get_attribute(row, "data-alarm")
    with ThreadPoolExecutor(1) as db:  # the ORM may not run on playwright's event loop
        alarm = db.submit(lambda: Alarm.objects.select_related("acknowledged_by").get(pk=alarm_id)).result()
    assert alarm.state == Alarm.ACKNOWLEDGED and alarm.acknowledged_by.username.startswith("operator")

    page.goto(gateway.url + "/")
    page.wait_for_selector('tr[data-device="demo-1"] td.alarms .badge.sev-major')
    page.goto(gateway.url + "/alarms/")
    mine = f'#alarms tbody tr[data-alarm="{alarm_id}"]'
    page.wait_for_selector(f'{mine}[data-state="acknowledged"]')
    page.click(f"{mine} button.clear")
    # Gone from the open alarms (the condition still holds, so the engine raises a new one: a new row).
    page.wait_for_selector(mine, state="detached")
    shot(page, "alarms-page")
