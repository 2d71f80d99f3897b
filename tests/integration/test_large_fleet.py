"""A fleet whose snapshot is larger than the 64 KiB client frame limit still reaches a dashboard."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from devices.models import Device
from testing.ws import Dashboard

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

FLEET = 800


@pytest.fixture
def big_fleet(registry):
    staff = registry.user("ops", staff=True)
    Device.objects.bulk_create(
        Device(id=f"fleet-{registry.tag}-{i:04d}", name=f"A rather descriptive device name number {i}",
               secret_hash="x" * 64, latest={"temperature": {"value": 21.5, "ts": "2026-01-01T00:00:00.000000+00:00"}})
        for i in range(FLEET)
    )
    return registry.token(staff), registry.tag


async def test_snapshot_of_a_large_fleet_is_delivered_whole(stack, big_fleet):
    token, tag = big_fleet
    await sync_to_async(stack.start_web)()
    dash = await Dashboard.open(stack.ws, token)
    snapshot = await dash.subscribe("*")
    ours = [d for d in snapshot["devices"] if d["id"].startswith(f"fleet-{tag}-")]
    assert len(ours) == FLEET
    await dash.send({"type": "ping"})
    assert (await dash.next(lambda f: f["type"] == "pong"))["type"] == "pong"
    await dash.close()
