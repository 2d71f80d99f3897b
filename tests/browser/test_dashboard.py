"""The dashboard in headless Chromium against a real all-in-one gateway with a simulated device."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from testing.http import http_get
from testing.mqtt import MqttDevice
from testing.processes import OUTPUT, ROOT, Process, ProcessGroup, free_port, stack_env
from testing.registry import demo_secret
from testing.waiting import wait_until
from tests.conftest import REQUIRE_SERVICES

pytestmark = [pytest.mark.browser, pytest.mark.services]

CHROMIUM = os.environ.get("IOTGW_CHROMIUM", "/usr/bin/chromium")
SHOTS = OUTPUT / "browser"
PASSWORD = "pw-123456"


def need_chromium() -> None:
    """Skip (or, with IOTGW_REQUIRE_SERVICES=1, fail) without Chromium and the playwright package."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright package is not installed"
    else:
        missing = "" if os.access(CHROMIUM, os.X_OK) else f"Chromium is not installed at {CHROMIUM}"
    if not missing:
        return
    if REQUIRE_SERVICES:
        pytest.fail(missing + " and IOTGW_REQUIRE_SERVICES is set")
    pytest.skip(missing)


@dataclass
class Gateway:
    """The all-in-one gateway under test: embedded broker, in-memory layer, one simulated device."""

    env: dict[str, str]
    port: int
    mqtt_port: int
    processes: ProcessGroup
    proc: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Gateway:
        args = [sys.executable, "manage.py", "gateway", "--port", str(self.port),
                "--mqtt-port", str(self.mqtt_port), "--simulate", "1"]
        self.proc = proc = self.processes.start("gateway", args, self.env)
        wait_until(lambda: http_get(self.url + "/healthz")[0] == 200 or not proc.alive(),
                           timeout=60, what="the gateway")
        assert proc.alive(), proc.output()
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill(signal.SIGTERM)


@pytest.fixture
def gateway(live_db, processes, run_id) -> Iterator[Gateway]:
    need_chromium()
    env = stack_env(database_url=live_db, redis_url=None, mqtt_url=None, run_id=run_id)
    gw = Gateway(env=env, port=free_port(), mqtt_port=free_port(), processes=processes).start()
    yield gw
    gw.stop()
    shutil.rmtree(ROOT / "var" / f"mosquitto-{gw.mqtt_port}", ignore_errors=True)


@pytest.fixture
def browser():
    need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture
def operator(registry):
    """A staff user; created before the browser starts, as playwright's sync API runs an event loop."""
    return registry.user("operator", staff=True, password=PASSWORD)


@pytest.fixture
def page(operator, gateway, browser):
    """A page logged in as a staff user, with JavaScript errors collected."""
    user = operator
    context = browser.new_context(viewport={"width": 1360, "height": 860})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.js_errors = []
    pg.on("pageerror", lambda exc: pg.js_errors.append(str(exc)))
    pg.goto(gateway.url + "/")
    assert "/login/" in pg.url
    shot(pg, "login")
    pg.fill("input[name=username]", user.username)
    pg.fill("input[name=password]", PASSWORD)
    pg.click("button[type=submit]")
    pg.wait_for_url(gateway.url + "/")
    yield pg
    context.close()
    assert pg.js_errors == [], pg.js_errors


def shot(pg, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def text_changes(pg, selector: str, timeout: float = 30_000) -> tuple[str, str]:
    """Wait for the element's text to appear, then to change; returns (before, after)."""
    pg.wait_for_selector(selector, timeout=timeout)
    before = pg.inner_text(selector)
    pg.wait_for_function("([s, t]) => { const e = document.querySelector(s); return e && e.textContent !== t; }",
                         arg=[selector, before], timeout=timeout)
    return before, pg.inner_text(selector)


TEMPERATURE = 'tr[data-device="demo-1"] .chip[data-metric="temperature"] .v'


def test_fleet_view_shows_the_simulated_device_live(gateway, page):
    before, after = text_changes(page, TEMPERATURE)
    assert float(after) != float(before)
    assert page.inner_text("#conn") == "live"
    assert "online" in page.inner_text('tr[data-device="demo-1"] .badge')
    shot(page, "fleet")


def test_device_strings_are_shown_as_text_not_markup(gateway, page):
    device = MqttDevice(f"mqtt://127.0.0.1:{gateway.mqtt_port}", "demo-1", protocol=4, will=False,
                                password=demo_secret("demo-1"))
    try:
        page.wait_for_selector(TEMPERATURE)
        device.telemetry({"note": '<img src=x onerror="window.pwned=1"><b>bold</b>'})
        chip = 'tr[data-device="demo-1"] .chip[data-metric="note"] .v'
        page.wait_for_selector(chip)
        assert page.inner_text(chip) == '<img src=x onerror="window.pwned=1"><b>bold</b>'
        assert page.query_selector("#fleet img, #fleet b") is None
        assert page.evaluate("window.pwned") is None
    finally:
        device.close()


def test_device_page_charts_history_and_live_values(gateway, page):
    page.wait_for_selector(TEMPERATURE)
    page.click('tr[data-device="demo-1"] a.name')
    page.wait_for_url(gateway.url + "/devices/demo-1/")
    page.wait_for_selector('.chart[data-metric="temperature"] canvas')
    text_changes(page, '.chart[data-metric="temperature"] .value')
    assert page.inner_text("#state") == "online"
    assert page.inner_text("#history-note") == "", "the history endpoint should answer"
    shot(page, "device")


def test_commands_from_the_device_page_reach_their_final_state(gateway, page):
    page.goto(gateway.url + "/devices/demo-1/")
    page.wait_for_selector("#conn.up")
    page.wait_for_selector('.chart[data-metric="temperature"]')  # the device is connected and publishing
    page.fill("input[name=name]", "ping")
    page.click("#command-form button[type=submit]")
    row = "#commands tbody tr"
    page.wait_for_selector(row)
    page.wait_for_selector(f'{row}[data-status="succeeded"]', timeout=20_000)
    assert page.get_attribute(row, "data-id"), "the row learns the command's id"
    assert "pong" in page.inner_text(f"{row} .outcome")
    assert "sent" in page.inner_text(f"{row} .trail")

    page.fill("input[name=name]", "self_destruct")  # the simulator answers unknown names with an error
    page.click("#command-form button[type=submit]")
    failed = f'{row}[data-status="failed"]'
    page.wait_for_selector(failed, timeout=20_000)
    assert "unknown command" in page.inner_text(f"{failed} .outcome")
    assert page.get_attribute(f"{row}:first-child", "data-status") == "failed", "the newest command is on top"
    shot(page, "command")


def test_a_lost_connection_is_shown_and_the_page_recovers_with_a_fresh_snapshot(gateway, page):
    page.wait_for_selector(TEMPERATURE)
    gateway.stop()
    page.wait_for_selector("#conn.down")
    assert "retrying" in page.inner_text("#conn")
    shot(page, "fleet-disconnected")
    gateway.start()
    page.wait_for_selector("#conn.up", timeout=30_000)
    text_changes(page, TEMPERATURE)


@pytest.fixture
def three_days(gateway):
    """Three days of demo-1's temperature, a sample every 5 minutes, before the live window (before the browser
    starts: playwright's sync API runs an event loop, where the ORM refuses to)."""
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from core.payloads import Sample
    from devices.rollups import rollups_catch_up
    from devices.services.telemetry import Inbound, telemetry_ingest

    now = timezone.now()
    samples = [Sample(ts=now - timedelta(minutes=15 + 5 * i), data={"temperature": 20 + (i % 12)}) for i in range(864)]
    telemetry_ingest(items=[Inbound("demo-1", samples)], received_at=now)
    if connection.vendor == "postgresql":  # late samples: rolled up by the job's next pass, run here (SQLite: above)
        rollups_catch_up(now=now, wait=True)


def test_device_page_ranges_draw_the_aggregates_as_a_band(gateway, three_days, page):
    page.goto(gateway.url + "/devices/demo-1/")
    page.wait_for_selector('.chart[data-metric="temperature"] canvas')
    page.click('#ranges button[data-range="604800"]')
    card = page.wait_for_selector('.chart[data-metric="temperature"][data-tier]')
    assert card.get_attribute("data-tier") == "hour"
    assert int(card.get_attribute("data-buckets")) >= 72  # one per hour of the three days
    assert "rollups" in page.inner_text("#range-note")
    shot(page, "device-7d")
    page.click('#ranges button[data-range="0"]')
    text_changes(page, '.chart[data-metric="temperature"] .value')


@pytest.fixture
def labelled(gateway):
    """demo-1's temperature with a label and a unit (before the browser starts, as three_days)."""
    from devices.models import Device, DeviceMetric

    wait_until(lambda: Device.objects.filter(pk="demo-1").exists(), what="the simulated device")
    DeviceMetric.objects.create(device_id="demo-1", name="temperature", label="Room temperature", unit="K",
                                source="manual")


def test_device_page_charts_carry_the_metrics_labels_and_units(gateway, labelled, page):
    page.goto(gateway.url + "/devices/demo-1/")
    card = '.chart[data-metric="temperature"]'
    page.wait_for_selector(card + " canvas")
    assert page.text_content(card + " h3") == "Room temperature"  # as written (the style shows it in capitals)
    assert page.get_attribute(card + " h3", "title") == "temperature"
    assert page.text_content(card + " .unit") == "K"
    shot(page, "device-units")
