"""Many dashboards on one web process share one push subscription: all get everything they may see, in order."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async

from devices.models import Telemetry
from testing.http import http_get
from testing.mqtt import MqttDevice
from testing.waiting import await_until
from testing.ws import Dashboard

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

BASE_TS = 1767225600000


@pytest.fixture
def fleet(registry):
    """One user with four devices (spread over the push buckets) and a token."""
    user = registry.user("watcher")
    return registry.token(user), [registry.device(f"fan{i}", owner=user)[0] for i in range(4)]


def dropped_pushes(web: str) -> float:
    status, body = http_get(web + "/metrics")
    assert status == 200
    line = next(line for line in body.decode().splitlines() if line.startswith("iotgw_ws_push_dropped_total"))
    return float(line.split()[-1])


async def test_fifty_dashboards_on_one_web_process_each_get_every_sample_in_order(stack, fleet):
    token, device_ids = fleet
    await sync_to_async(stack.start_web)()
    await sync_to_async(stack.start_bridge)()
    dashes = await asyncio.gather(*(Dashboard.open(stack.ws, token) for _ in range(50)))
    await asyncio.gather(*(dash.subscribe(device_ids) for dash in dashes))
    devices = [await sync_to_async(MqttDevice)(stack.mqtt_url, d) for d in device_ids]

    per_device = 100

    def publish() -> None:
        for n in range(per_device):
            for device in devices:
                device.telemetry({"ts": BASE_TS + n, "n": n})

    async def collect(dash: Dashboard) -> dict[str, list[int]]:
        got: dict[str, list[int]] = {d: [] for d in device_ids}
        async with asyncio.timeout(60):
            while any(len(v) < per_device for v in got.values()):
                frame = await dash.next(lambda f: f["type"] == "telemetry", timeout=60)
                for item in frame["items"]:
                    got[item["device"]].append(item["data"]["n"])
        return got

    collecting = asyncio.gather(*(collect(dash) for dash in dashes))
    await sync_to_async(publish, thread_sensitive=False)()
    for got in await collecting:
        assert got == {d: list(range(per_device)) for d in device_ids}
    assert await sync_to_async(dropped_pushes)(stack.web) == 0
    for device in devices:
        device.close()
    await asyncio.gather(*(dash.close() for dash in dashes))


async def test_snapshot_comes_before_live_telemetry_and_nothing_pushed_after_it_is_lost(stack, fleet):
    token, device_ids = fleet
    device_id = device_ids[0]
    await sync_to_async(stack.start_web)()
    await sync_to_async(stack.start_bridge)()
    device = await sync_to_async(MqttDevice)(stack.mqtt_url, device_id)
    stop, sent = threading.Event(), []

    def stream() -> None:
        """A device publishing a numbered sample every few milliseconds until told to stop."""
        n = 0
        while not stop.is_set():
            device.telemetry({"ts": BASE_TS + n, "n": n})
            sent.append(n)
            n += 1
            stop.wait(0.004)

    streaming = threading.Thread(target=stream, daemon=True)
    streaming.start()
    await await_until(lambda: Telemetry.objects.filter(device_id=device_id).count() >= 20, what="stream started")

    # Dashboards subscribe at once in mid-stream (their snapshot reads queue up, widening the window
    # in which a push could overtake a snapshot), some to the one device, some to all of them.
    dashes = await asyncio.gather(*(Dashboard.open(stack.ws, token) for _ in range(20)))
    snapshots = await asyncio.gather(*(dash.subscribe([device_id] if i % 2 else "*")
                                       for i, dash in enumerate(dashes)))
    mark = len(sent)
    await await_until(lambda: len(sent) >= mark + 50, what="more samples after the last subscribe")
    stop.set()
    await sync_to_async(streaming.join)(10)
    last = sent[-1]

    for dash, snapshot in zip(dashes, snapshots, strict=True):
        assert not [f for f in dash.frames[:-1] if f["type"] == "telemetry"], "telemetry before the snapshot"
        [entry] = [d for d in snapshot["devices"] if d["id"] == device_id]
        seen: set[int] = set()
        async with asyncio.timeout(30):
            while last not in seen:
                frame = await dash.next(lambda f: f["type"] == "telemetry")
                seen |= {item["data"]["n"] for item in frame["items"] if item["device"] == device_id}
        missing = set(range(entry["latest"]["n"] + 1, last + 1)) - seen
        assert not missing, f"samples after the snapshot never arrived: {sorted(missing)[:10]}"
    device.close()
    for dash in dashes:
        await dash.close()


def seen(dash: Dashboard) -> list[tuple[str, dict]]:
    return [(i["device"], i["data"]) for f in dash.frames if f["type"] == "telemetry" for i in f["items"]]


async def until(dash: Dashboard, device_id: str, data: dict) -> None:
    """Wait for the telemetry item of `device_id` carrying `data`."""
    async with asyncio.timeout(15):
        while (device_id, data) not in seen(dash):
            await dash.next(lambda f: f["type"] == "telemetry")


async def test_dashboards_of_one_process_get_only_what_they_may_see_and_unsubscribe_stops_it(stack, people):
    devices = {name: device_id for name, (device_id, _secret) in people[0].items()}
    tokens = people[1]
    await sync_to_async(stack.start_web)()
    await sync_to_async(stack.start_bridge)()
    alice, bob, quitter = [await Dashboard.open(stack.ws, tokens[n]) for n in ("alice", "bob", "bob")]
    for dash in (alice, bob, quitter):
        await dash.subscribe("*")
    await quitter.send({"type": "unsubscribe", "devices": [devices["blab"]]})
    await quitter.send({"type": "ping"})
    await quitter.next(lambda f: f["type"] == "pong")  # frames of a socket are handled in order
    publishers = {name: await sync_to_async(MqttDevice)(stack.mqtt_url, devices[name]) for name in devices}
    for name in ("bown", "a1", "blab"):
        await sync_to_async(publishers[name].telemetry)({"from": name})
    for dash, names in ((alice, ("a1", "blab")), (bob, ("bown", "blab")), (quitter, ("bown",))):
        for name in names:
            await until(dash, devices[name], {"from": name})

    # Pushes go out one after the other and each socket's are delivered in order: once the
    # last ones arrive, anything a socket should not see would have arrived before them.
    for name in ("a1", "bown"):
        await sync_to_async(publishers[name].telemetry)({"last": name})
    for dash, name in ((alice, "a1"), (bob, "bown"), (quitter, "bown")):
        await until(dash, devices[name], {"last": name})
    assert {d for d, _ in seen(alice)} == {devices["a1"], devices["blab"]}
    assert {d for d, _ in seen(bob)} == {devices["bown"], devices["blab"]}
    assert {d for d, _ in seen(quitter)} == {devices["bown"]}, "unsubscribed device still delivered"
    for publisher in publishers.values():
        publisher.close()
    for dash in (alice, bob, quitter):
        await dash.close()
