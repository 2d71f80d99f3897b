"""A fleet-wide command (POST /api/commands) through real Daphne, bridge and Mosquitto: every device answers."""

from __future__ import annotations

import pytest
from django.db import connection

from devices.models import Command, Device
from testing.http import call
from testing.mqtt import FleetResponder
from testing.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

FLEET = 300


def commits() -> int | None:
    """Transactions committed in this database so far (PostgreSQL's statistics), or None elsewhere."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_a_fleet_command_reaches_every_device_and_each_succeeds(stack, registry):
    user = registry.user("fleet-owner")
    token = registry.token(user)
    ids = [f"fleet-{registry.tag}-{i:04d}" for i in range(FLEET)]
    Device.objects.bulk_create([Device(id=d, owner=user, secret_hash="-") for d in ids])
    stack.start_web()
    stack.start_bridge()
    fleet = FleetResponder(stack.mqtt_url, ids)
    wait_until(lambda: Device.objects.filter(pk__in=ids, online=True).count() == FLEET, timeout=30,
               what="the fleet online")

    before = commits()
    reply = call("POST", stack.web + "/api/commands", token=token,
                 body={"devices": [*ids, "not-mine"], "name": "reboot", "params": {"delay": 0}})
    assert reply.status == 202, reply.body
    assert [c["device"] for c in reply.json()["commands"]] == ids and reply.json()["refused"] == {
        "not-mine": "unknown_device"}
    wait_until(lambda: Command.objects.filter(device_id__in=ids, status="succeeded").count() == FLEET, timeout=30,
               what="every device's command succeeded")
    assert Command.objects.filter(device_id__in=ids).count() == FLEET, "one command per device, none twice"
    assert len(fleet.answered) == FLEET
    after = commits()
    if before is not None:
        # Stored, sent and resolved in group writes: a few transactions per batch, not two or three per device.
        assert after - before < FLEET, f"{after - before} transactions for {FLEET} commands"
    fleet.close()
