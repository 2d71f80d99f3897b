"""A fleet-wide command: one `POST /api/commands` to N online devices, timed until every one `succeeded`.

`measure(env=…, token=…)` is the runner's interface (Django set up by the caller, as for
bench/command_rtt.py). It registers N devices, starts its own web and bridge, puts one MQTT
connection online for the whole fleet (testing.mqtt.FleetResponder: it answers every command
at once), then issues the command twice over: once as one fleet request, once the naive way,
one `POST /api/devices/{id}/commands` per device from 8 threads. Each is timed from the first
request to the last `succeeded` in the database. Returns {"devices", "fleet_s", "naive_s",
"ratio", "fleet_transactions", "lost"}.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async

from bench.command_rtt import ROOT, GatewayProcesses


def _register(token: str, count: int) -> list[str]:
    from devices.models import Device
    from devices.selectors import token_user

    owner = token_user(token)
    run = uuid.uuid4().hex[:6]
    ids = [f"fleet-{run}-{i:05d}" for i in range(count)]
    Device.objects.bulk_create([Device(id=d, owner=owner, secret_hash="-") for d in ids], batch_size=2000)
    return ids


def _commits() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def _until_succeeded(ids: list[str], name: str, timeout: float) -> int:
    """Wait until every device's `name` command succeeded; how many did not in time."""
    from devices.models import Command

    deadline = time.monotonic() + timeout
    while True:
        done = Command.objects.filter(device_id__in=ids, name=name, status="succeeded").count()
        if done == len(ids) or time.monotonic() > deadline:
            return len(ids) - done
        time.sleep(0.02)


def _run(stack: GatewayProcesses, token: str, ids: list[str], timeout: float) -> dict[str, Any]:
    from testing.http import call

    web = f"http://127.0.0.1:{stack.port}"
    before = _commits()
    t0 = time.monotonic()
    reply = call("POST", web + "/api/commands", token=token, body={"devices": ids, "name": "fleet"})
    assert reply.status == 202, reply.body[:300]
    lost = _until_succeeded(ids, "fleet", timeout)
    fleet_s = time.monotonic() - t0
    transactions = _commits() - before

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda d: call("POST", f"{web}/api/devices/{d}/commands", token=token,
                                              body={"name": "single"}).status, ids))
    assert set(replies) == {202}, set(replies)
    lost += _until_succeeded(ids, "single", timeout)
    naive_s = time.monotonic() - t0
    return {"devices": len(ids), "fleet_s": round(fleet_s, 3), "naive_s": round(naive_s, 3),
            "ratio": round(naive_s / fleet_s, 1), "fleet_transactions": transactions, "lost": lost}


async def measure(*, env: dict[str, str], token: str, logdir: Path | None = None, devices: int = 1000,
                  timeout: float = 60.0) -> dict[str, Any]:
    """Time a fleet-wide command against one command per device (see above)."""
    from testing.mqtt import FleetResponder
    from testing.waiting import wait_until

    logdir = logdir or ROOT / "bench" / "results" / "logs"
    ids = await sync_to_async(_register)(token, devices)
    stack = GatewayProcesses(env, logdir)
    fleet = None
    try:
        await sync_to_async(stack.wait_ready)()
        fleet = await sync_to_async(FleetResponder, thread_sensitive=False)(env["MQTT_URL"], ids)

        def online() -> bool:
            from devices.models import Device

            return Device.objects.filter(pk__in=ids, online=True).count() == len(ids)

        await sync_to_async(wait_until)(online, timeout=60, what="the fleet online")
        return await sync_to_async(_run)(stack, token, ids, timeout)
    finally:
        if fleet is not None:
            await sync_to_async(fleet.close, thread_sensitive=False)()
        await sync_to_async(stack.stop, thread_sensitive=False)()
