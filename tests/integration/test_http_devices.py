"""HTTP devices against a real Daphne with a plain HTTP client (requests): telemetry batched and stored, a long
poll answered at once by a command, Hono-style commands in the answer to telemetry, responses, bad input beside good
input, and a killed web process losing no sample it answered 200 for."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from asgiref.sync import sync_to_async

from devices.models import Command, Device, Telemetry
from testing.waiting import wait_until
from testing.ws import Dashboard

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
async def web(stack):
    await sync_to_async(stack.start_web)()
    return stack


@pytest.fixture
async def fleet(registry):
    staff = await sync_to_async(registry.user)("ops", staff=True)
    token = await sync_to_async(registry.token)(staff)
    devices = [await sync_to_async(registry.device)(f"http{i}", owner=staff) for i in range(2)]
    return token, devices


def issue(web, token: str, device_id: str, name: str = "reboot") -> str:
    reply = requests.post(f"{web.web}/api/devices/{device_id}/commands", json={"name": name, "params": {"n": 1}},
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert reply.status_code == 202, reply.text
    return reply.json()["id"]


async def test_posted_telemetry_is_stored_over_http_and_live_on_the_dashboard(web, fleet):
    token, [(device_id, secret), _] = fleet
    dash = await Dashboard.open(web.ws, token)
    await dash.subscribe([device_id])
    reply = await sync_to_async(requests.post)(f"{web.web}/api/ingest/{device_id}/telemetry",
                                               json=[{"v": 1}, {"v": 2}], auth=(device_id, secret), timeout=10)
    assert (reply.status_code, reply.json()) == (200, {"accepted": 2, "command": None})
    assert await sync_to_async(Telemetry.objects.filter(device_id=device_id).count)() == 2, "stored before the 200"
    frame = await dash.next(lambda f: f["type"] == "telemetry")
    assert {i["data"]["v"] for i in frame["items"]} <= {1, 2}
    assert (await sync_to_async(Device.objects.get)(pk=device_id)).transport == "http"
    await dash.close()


def test_a_long_poll_is_answered_as_soon_as_a_command_is_issued_and_the_device_answers_it(web, fleet):
    token, [(device_id, secret), _] = fleet
    url = f"{web.web}/api/ingest/{device_id}/commands/next?wait=20"
    with ThreadPoolExecutor(1) as pool:
        polling = pool.submit(requests.get, url, auth=(device_id, secret), timeout=30)
        wait_until(lambda: Device.objects.get(pk=device_id).online, what="the poll marks the device online")
        time.sleep(0.3)  # the poll is waiting now (what this test is about: it is answered when a command comes)
        started = time.monotonic()
        command_id = issue(web, token, device_id)
        reply = polling.result()
    assert reply.status_code == 200, reply.text
    assert time.monotonic() - started < 5, "answered when the command came, not at the end of the wait"
    assert (reply.json()["id"], reply.json()["name"], reply.json()["params"]) == (command_id, "reboot", {"n": 1})
    wait_until(lambda: Command.objects.get(pk=command_id).status == Command.SENT, what="sent once handed over")
    answer = requests.post(f"{web.web}/api/ingest/{device_id}/commands/{command_id}/response",
                           json={"status": "ok", "result": {"up": True}}, auth=(device_id, secret), timeout=10)
    assert (answer.status_code, answer.json()) == (200, {"id": command_id, "status": "succeeded"})
    assert Command.objects.get(pk=command_id).result == {"up": True}


def test_a_long_poll_without_a_command_ends_with_204(web, fleet):
    _, [(device_id, secret), _] = fleet
    started = time.monotonic()
    reply = requests.get(f"{web.web}/api/ingest/{device_id}/commands/next?wait=1", auth=(device_id, secret),
                         timeout=10)
    assert reply.status_code == 204 and reply.content == b""
    assert 0.9 < time.monotonic() - started < 8


def test_telemetry_that_waits_for_a_command_gets_the_queued_one_in_its_answer(web, fleet):
    token, [(device_id, secret), _] = fleet
    requests.post(f"{web.web}/api/ingest/{device_id}/telemetry", json={"v": 0}, auth=(device_id, secret), timeout=10)
    command_id = issue(web, token, device_id, "calibrate")
    reply = requests.post(f"{web.web}/api/ingest/{device_id}/telemetry", json={"v": 1}, auth=(device_id, secret),
                          headers={"hono-ttd": "10"}, timeout=20)
    assert reply.status_code == 200 and reply.json()["accepted"] == 1
    assert (reply.json()["command"]["id"], reply.json()["command"]["name"]) == (command_id, "calibrate")
    wait_until(lambda: Command.objects.get(pk=command_id).status == Command.SENT, what="sent in the answer")


def test_bad_input_is_refused_clearly_while_another_devices_samples_get_in(web, fleet):
    _, [(bad_id, bad_secret), (good_id, good_secret)] = fleet
    bad_bodies = [b"{", b'{"ts": "yesterday", "v": 1}', b'{"bad name": 1}', b"\xff\xfe"]

    def bad(body: bytes) -> requests.Response:
        return requests.post(f"{web.web}/api/ingest/{bad_id}/telemetry", data=body, auth=(bad_id, bad_secret),
                             headers={"Content-Type": "application/json"}, timeout=10)

    def good(n: int) -> requests.Response:
        return requests.post(f"{web.web}/api/ingest/{good_id}/telemetry", json={"n": n},
                             auth=(good_id, good_secret), timeout=10)

    with ThreadPoolExecutor(8) as pool:
        refused = list(pool.map(bad, bad_bodies))
        accepted = list(pool.map(good, range(8)))
    for reply in refused:
        assert reply.status_code == 400 and reply.json()["error"]["code"] in {"not_json", "bad_sample", "not_utf8"}
        assert reply.json()["error"]["message"]
    assert all(r.status_code == 200 for r in accepted)
    assert Telemetry.objects.filter(device_id=good_id).count() == 8
    assert not Telemetry.objects.filter(device_id=bad_id).exists()
    wrong = requests.post(f"{web.web}/api/ingest/{good_id}/telemetry", json={"n": 1}, auth=(good_id, "nope"),
                          timeout=10)
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Basic")


def test_killing_the_web_process_loses_no_sample_it_answered_200_for(web, fleet):
    _, [(device_id, secret), (other_id, other_secret)] = fleet
    answered: list[int] = []
    stop = threading.Event()

    def post(start: int, who: str, secret_: str) -> None:
        n = start
        while not stop.is_set():
            try:
                reply = requests.post(f"{web.web}/api/ingest/{who}/telemetry",
                                      json={"ts": 1767225600000 + n, "n": n}, auth=(who, secret_), timeout=5)
            except requests.RequestException:
                return
            if reply.status_code == 200:
                answered.append(n)
            n += 2

    threads = [threading.Thread(target=post, args=(0, device_id, secret)),
               threading.Thread(target=post, args=(1, other_id, other_secret))]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(answered) >= 40, timeout=30, what="some samples answered")
    next(p for p in reversed(web.processes.items) if p.name == "web").kill(signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(10)
    stored = set(Telemetry.objects.filter(device_id__in=[device_id, other_id]).values_list("data__n", flat=True))
    assert set(answered) <= stored, f"{len(set(answered) - stored)} answered samples are missing"
