"""The JSON API (SPEC §8) over real HTTP against Daphne: devices, history, HTTP ingest, health and metrics."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import sync_to_async

from devices.models import Telemetry
from testing.http import basic, call, http_get
from testing.mqtt import MqttDevice
from testing.waiting import wait_until
from testing.ws import Dashboard

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def web(stack):
    stack.start_web()
    return stack.web


def test_device_list_shows_only_visible_devices(web, people):
    devices, tokens, _ = people
    ids = {name: d[0] for name, d in devices.items()}
    reply = call("GET", web + "/api/devices", token=tokens["alice"])
    assert reply.status == 200
    assert sorted(d["id"] for d in reply.json()) == sorted([ids["a1"], ids["blab"]])
    staff = {d["id"] for d in call("GET", web + "/api/devices", token=tokens["ops"]).json()}
    assert set(ids.values()) <= staff
    one = call("GET", web + f"/api/devices/{ids['a1']}", token=tokens["alice"]).json()
    assert one["id"] == ids["a1"] and one["online"] is False and one["latest"] == {} and "secret" not in one


def test_staff_registers_a_device_and_sees_its_secret_once(web, people):
    _, tokens, registry = people
    new_id = f"new-{registry.tag}"
    reply = call("POST", web + "/api/devices", body={"id": new_id, "name": "Pump"}, token=tokens["ops"])
    assert reply.status == 201, reply.body
    created = reply.json()
    assert created["mqtt_username"] == new_id and len(created["secret"]) >= 24 and created["name"] == "Pump"
    detail = call("GET", web + f"/api/devices/{new_id}", token=tokens["ops"]).json()
    assert "secret" not in detail and "mqtt_username" not in detail

    # The secret works for the device: HTTP ingest with it is accepted.
    ok = call("POST", web + f"/api/ingest/{new_id}/telemetry", body={"x": 1}, headers=basic(new_id, created["secret"]))
    assert ok.status == 200 and ok.json() == {"accepted": 1, "command": None}

    again = call("POST", web + "/api/devices", body={"id": new_id}, token=tokens["ops"])
    assert again.status == 409 and again.error_code == "conflict"
    bad = call("POST", web + "/api/devices", body={"id": "no/slashes"}, token=tokens["ops"])
    assert bad.status == 400 and bad.error_code == "bad_device_id"
    not_staff = call("POST", web + "/api/devices", body={"id": f"x-{registry.tag}"}, token=tokens["alice"])
    assert not_staff.status == 403 and not_staff.error_code == "forbidden"
    missing_field = call("POST", web + "/api/devices", body={"name": "no id"}, token=tokens["ops"])
    assert missing_field.status == 400 and missing_field.error_code == "bad_request"


def test_hidden_device_answers_404_like_a_missing_one(web, people):
    devices, tokens, _ = people
    hidden = call("GET", web + f"/api/devices/{devices['bown'][0]}", token=tokens["alice"])
    missing = call("GET", web + "/api/devices/no-such-device", token=tokens["alice"])
    assert hidden.status == missing.status == 404
    assert hidden.error_code == missing.error_code == "unknown_device"
    history = call("GET", web + f"/api/devices/{devices['bown'][0]}/telemetry", token=tokens["alice"])
    assert history.status == 404


def test_telemetry_history_is_ordered_filtered_and_paged(web, people):
    devices, tokens, _ = people
    device_id, secret = devices["a1"]
    samples = [{"ts": 1767225600000 + i * 1000, "temp": 20 + i} for i in range(5)]
    samples[2] = {"ts": samples[2]["ts"], "door": True}
    # Sent out of order: history comes back ordered by ts.
    reply = call("POST", web + f"/api/ingest/{device_id}/telemetry", body=samples[::-1],
                 headers={"Authorization": f"Bearer {secret}"})
    assert reply.status == 200 and reply.json() == {"accepted": 5, "command": None}

    url = web + f"/api/devices/{device_id}/telemetry"
    page = call("GET", url + "?limit=2", token=tokens["alice"]).json()
    assert [i["data"] for i in page["items"]] == [{"temp": 20}, {"temp": 21}]
    seen = list(page["items"])
    while page["next"]:
        page = call("GET", web + page["next"], token=tokens["alice"]).json()
        seen += page["items"]
    assert [i["ts"] for i in seen] == sorted(i["ts"] for i in seen) and len(seen) == 5

    temps = call("GET", url + "?metric=temp", token=tokens["alice"]).json()["items"]
    assert [i["data"]["temp"] for i in temps] == [20, 21, 23, 24]
    window = call("GET", url + "?since=2026-01-01T00:00:01%2B00:00&until=1767225603000", token=tokens["alice"])
    assert [i["data"] for i in window.json()["items"]] == [{"temp": 21}, {"door": True}]
    bad = call("GET", url + "?since=yesterday", token=tokens["alice"])
    assert bad.status == 400 and bad.error_code == "bad_request"
    too_many = call("GET", url + "?limit=0", token=tokens["alice"])
    assert too_many.status == 400 and too_many.error_code == "bad_request"


async def test_http_ingest_is_stored_and_pushed_to_dashboards(stack, people):
    devices, tokens, _ = people
    device_id, secret = devices["a1"]
    await sync_to_async(stack.start_web)()
    dash = await Dashboard.open(stack.ws, tokens["alice"])
    await dash.subscribe([device_id])

    reply = await sync_to_async(call)("POST", stack.web + f"/api/ingest/{device_id}/telemetry",
                                      body={"ts": "2026-03-01T10:00:00+01:00", "rpm": 900},
                                      headers=basic(device_id, secret))
    assert reply.status == 200
    items = await dash.telemetry_until(1, device_id)
    assert items[0]["data"] == {"rpm": 900} and items[0]["ts"].startswith("2026-03-01T09:00:00")
    status = await dash.next(lambda f: f["type"] == "status")
    assert status["device"] == device_id and status["online"] is True
    row = await sync_to_async(Telemetry.objects.get)(device_id=device_id)
    assert row.data == {"rpm": 900}
    await dash.close()


def test_openapi_schema_is_published(web):
    status, body = http_get(web + "/api/openapi.json")
    assert status == 200
    import json

    paths = json.loads(body)["paths"]
    for path in ("/api/devices", "/api/devices/{device_id}", "/api/devices/{device_id}/telemetry",
                 "/api/ingest/{device_id}/telemetry"):
        assert path in paths


def test_unauthenticated_api_call_is_401_in_the_error_shape(web):
    reply = call("GET", web + "/api/devices")
    assert reply.status == 401 and reply.error_code == "unauthorized"
    assert reply.headers["www-authenticate"].startswith("Bearer")
    post = call("POST", web + "/api/devices", body={"id": "x"})
    assert post.status == 401 and post.error_code == "unauthorized"


def metric(web: str, name: str, *, headers: dict | None = None, **labels: str) -> float | None:
    """One sample of /metrics (the sum over matching label sets), or None when absent."""
    status, body = http_get(web + "/metrics", headers)
    assert status == 200
    values = []
    for line in body.decode().splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            values.append(float(m.group(3)))
    return sum(values) if values else None


def test_health_readiness_and_metrics(stack, people):
    devices, tokens, _ = people
    stack.start_web()
    assert http_get(stack.web + "/healthz")[0] == 200
    stack.start_bridge()
    wait_until(lambda: http_get(stack.web + "/readyz")[0] == 200, what="ready")

    device_id, secret = devices["a1"]
    device = MqttDevice(stack.mqtt_url, device_id)
    device.telemetry({"temp": 1})
    wait_until(lambda: (metric(stack.web, "iotgw_ingest_latency_seconds_count") or 0) >= 1,
               what="latency in heartbeat")
    assert metric(stack.web, "iotgw_bridge_connected") >= 1
    wait_until(lambda: (metric(stack.web, "iotgw_samples_ingested_total") or 0) >= 1, what="ingested")
    call("POST", stack.web + f"/api/ingest/{device_id}/telemetry", raw=b"{", headers=basic(device_id, secret))
    assert metric(stack.web, "iotgw_http_rejected_total", reason="not_json") >= 1
    assert metric(stack.web, "iotgw_commands", status="queued") is not None
    assert metric(stack.web, "iotgw_websockets_open") == 0
    device.close()


def test_unknown_api_path_is_404_in_the_error_shape(stack, people):
    _, tokens, _ = people
    stack.env.update(DJANGO_DEBUG="0", DJANGO_SECRET_KEY="test-" + "k" * 60)
    stack.start_web()
    reply = call("GET", stack.web + "/api/no/such/endpoint", token=tokens["alice"])
    assert (reply.status, reply.error_code) == (404, "not_found")
    assert call("GET", stack.web + "/api/devices", token=tokens["alice"]).status == 200


async def test_open_websockets_gauge_follows_sockets(stack, people):
    _, tokens, _ = people
    await sync_to_async(stack.start_web)()
    dash = await Dashboard.open(stack.ws, tokens["alice"])
    await sync_to_async(wait_until)(lambda: metric(stack.web, "iotgw_websockets_open") == 1, what="gauge at 1")
    await dash.close()
    await sync_to_async(wait_until)(lambda: metric(stack.web, "iotgw_websockets_open") == 0, what="gauge at 0")
