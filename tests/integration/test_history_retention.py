"""Retention drops expired raw days while a real bridge goes on ingesting: nothing acknowledged is lost."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from core.payloads import Sample
from devices.models import RollupHour, Telemetry
from devices.rollups import rollups_catch_up
from devices.services.history import Retention, telemetry_maintain
from devices.services.telemetry import Inbound, telemetry_ingest
from testing.mqtt import MqttDevice
from testing.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def _publish(url: str, device_id: str, count: int, sent: list[int], stop: threading.Event) -> None:
    device = MqttDevice(url, device_id)
    start = int(time.time() * 1000)
    try:
        for i in range(count):
            if stop.is_set():
                break
            device.telemetry({"ts": start + i, "seq": i, "v": i % 10})  # waits for its PUBACK
            sent.append(i)
    finally:
        device.close()


def test_expired_days_are_dropped_while_the_bridge_ingests_and_nothing_is_lost(stack, registry):
    old, _ = registry.device("old")
    live, _ = registry.device("live")
    now = timezone.now()
    for day in range(3, 11):  # eight expired days, an hour's worth of samples each side of noon
        samples = [Sample(ts=now - timedelta(days=day, seconds=s), data={"v": 1}) for s in range(0, 3600, 60)]
        telemetry_ingest(items=[Inbound(old, samples)], received_at=now)
    rollups_catch_up(now=now, wait=True)  # late samples: the job's next pass rolls them up (devices/rollups.py)
    hours_before = RollupHour.objects.filter(device_id=old).count()
    stack.start_bridge()
    sent: list[int] = []
    stop = threading.Event()
    publisher = threading.Thread(target=_publish, args=(stack.mqtt_url, live, 3000, sent, stop), daemon=True)
    publisher.start()
    wait_until(lambda: Telemetry.objects.filter(device_id=live).count() > 200, timeout=30, what="ingest under way")
    with override_settings(IOTGW_METRICS_COUNT_SECONDS=0):
        report = telemetry_maintain(retention=Retention(raw_days=2))
    during = Telemetry.objects.filter(device_id=live).count()
    publisher.join(timeout=120)
    stop.set()
    assert during < len(sent), "the drop happened while samples were still arriving"
    wait_until(lambda: Telemetry.objects.filter(device_id=live).count() == len(sent), timeout=30,
               what="every acknowledged sample stored")
    assert sorted(Telemetry.objects.filter(device_id=live).values_list("data__seq", flat=True)) == sorted(sent)
    assert not Telemetry.objects.filter(device_id=old).exists()
    assert report.dropped or report.deleted.get("devices_telemetry") == 8 * 60
    assert RollupHour.objects.filter(device_id=old).count() == hours_before > 0  # the rollups stay
