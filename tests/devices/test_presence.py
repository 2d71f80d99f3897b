"""The presence sweep: silent devices go offline after their own (or the default) silence, each exactly once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from devices.models import Device
from devices.services.devices import device_presence_sweep, device_register

pytestmark = pytest.mark.django_db(transaction=True)


def seen(device_id: str, seconds_ago: float, *, offline_after: int | None = None, online: bool = True) -> None:
    device_register(device_id=device_id, offline_after=offline_after)
    Device.objects.filter(pk=device_id).update(online=online, last_seen=timezone.now() - timedelta(seconds=seconds_ago))


def test_silent_devices_go_offline_after_their_own_or_the_default_silence():
    seen("default-silent", 61)
    seen("default-fresh", 30)
    seen("own-silent", 11, offline_after=10)
    seen("own-patient", 300, offline_after=3600)
    seen("never", 10 ** 6, offline_after=0)
    seen("already-off", 10 ** 6, online=False)

    ids, at = device_presence_sweep(default_after=60)
    assert sorted(ids) == ["default-silent", "own-silent"]
    assert abs((timezone.now() - at).total_seconds()) < 5
    assert set(Device.objects.filter(online=True).values_list("pk", flat=True)) == {
        "default-fresh", "own-patient", "never"}
    assert device_presence_sweep(default_after=60)[0] == []  # reported once


def test_the_default_of_zero_turns_the_sweep_off_for_devices_without_their_own():
    seen("quiet", 10 ** 6)
    seen("strict", 5, offline_after=1)
    assert device_presence_sweep(default_after=0)[0] == ["strict"]


def test_two_bridges_sweeping_at_once_mark_each_device_once():
    ids = [f"many-{i}" for i in range(200)]
    for device_id in ids:
        seen(device_id, 120)
    barrier, results = threading.Barrier(2), []

    def bridge() -> None:
        barrier.wait()
        try:
            results.append(device_presence_sweep(default_after=60)[0])
        finally:
            connection.close()

    threads = [threading.Thread(target=bridge) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results[0] + results[1]) == sorted(ids)
    assert not set(results[0]) & set(results[1])
