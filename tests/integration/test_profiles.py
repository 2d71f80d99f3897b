"""Stock firmwares through their profiles: each publishes its documented payloads in its own topics to the real
Mosquitto, a real bridge stores them, and a command goes out and comes back in the firmware's own format."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from devices.models import Command, Device, Telemetry
from devices.services.commands import command_issue
from devices.services.profiles import device_register_child, device_set_profile, profile_save
from testing.firmware import Firmware
from testing.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def ops(registry):
    return registry.user("ops", staff=True)


def start(stack, firmwares, url_name: str, **kwargs) -> Firmware:
    """The bridge (profiles re-read every half second), then the firmware's client."""
    if not stack.bridges:
        stack.start_bridge(IOTGW_PROFILE_REFRESH="0.5")
    firmware = Firmware(stack.mqtt_url, url_name, **kwargs)
    firmwares.append(firmware)
    return firmware


def stored(device_id: str, **data) -> Telemetry:
    """Wait for a sample of the device holding these metric values."""

    def found():
        for row in Telemetry.objects.filter(device_id=device_id).order_by("ts"):
            if all(row.data.get(k) == v for k, v in data.items()):
                return row
        return None

    return wait_until(found, what=f"a sample of {device_id} with {data}")


def online(device_id: str, state: bool = True) -> None:
    wait_until(lambda: Device.objects.get(pk=device_id).online is state, what=f"{device_id} online={state}")


def finished(command: Command) -> Command:
    wait_until(lambda: Command.objects.get(pk=command.pk).status in ("succeeded", "failed"),
               what=f"command {command.name} answered")
    return Command.objects.get(pk=command.pk)


def test_tasmota(stack, registry, ops, firmwares):
    device_id, _ = registry.device("tasmota")
    device_set_profile(device_id=device_id, profile="tasmota")
    tasmota = start(stack, firmwares, device_id, will=(f"tele/{device_id}/LWT", b"Offline"))
    tasmota.answer(f"cmnd/{device_id}/+", lambda topic, payload: [
        (f"stat/{device_id}/RESULT", json.dumps({topic.rsplit("/", 1)[1].upper(): payload.decode()}).encode())])

    tasmota.publish(f"tele/{device_id}/LWT", "Online", retain=True)
    tasmota.publish(f"tele/{device_id}/SENSOR", '{"Time":"2019-01-01T00:00:00","AM2301":{"Temperature":24.6,'
                                                '"Humidity":58.2},"TempUnit":"C"}')
    row = stored(device_id, **{"AM2301.Temperature": 24.6})
    assert row.ts == datetime(2019, 1, 1, tzinfo=UTC) and row.data == {"AM2301.Temperature": 24.6,
                                                                        "AM2301.Humidity": 58.2}
    online(device_id)

    command = finished(command_issue(user=ops, device_id=device_id, name="Power", params={"value": "ON"}))
    assert (f"cmnd/{device_id}/Power", b"ON") in tasmota.received
    assert command.status == "succeeded" and command.result == {"POWER": "ON"}

    tasmota.publish(f"tele/{device_id}/LWT", "Offline", retain=True)
    online(device_id, False)


def test_zigbee2mqtt_coordinator_speaks_for_its_children(stack, registry, ops, firmwares):
    base, _ = registry.device("z2m")
    device_set_profile(device_id=base, profile="zigbee2mqtt")
    lamp = device_register_child(gateway_id=base, child_name="living room lamp").id
    z2m = start(stack, firmwares, base, will=(f"{base}/bridge/state", b'{"state":"offline"}'))
    z2m.answer(f"{base}/+/set", lambda topic, payload: [(topic.rsplit("/", 1)[0], payload)])

    z2m.publish(f"{base}/bridge/state", '{"state":"online"}', retain=True)
    z2m.publish(f"{base}/living room lamp/availability", '{"state":"online"}', retain=True)
    z2m.publish(f"{base}/living room lamp", '{"state":"OFF","brightness":120,"linkquality":96,'
                                            '"update":{"state":"idle"}}')
    assert stored(lamp, brightness=120).data["update.state"] == "idle"
    online(lamp)
    online(base)

    command = finished(command_issue(user=ops, device_id=lamp, name="set", params={"state": "ON", "brightness": 200}))
    assert command.status == "succeeded" and command.result["state"] == "ON"
    stored(lamp, state="ON", brightness=200)

    z2m.publish(f"{base}/living room lamp/availability", "offline")  # the legacy plain payload
    online(lamp, False)


def test_shelly_gen2(stack, registry, ops, firmwares):
    device_id, _ = registry.device("shellyplus1pm")
    device_set_profile(device_id=device_id, profile="shelly-gen2")
    shelly = start(stack, firmwares, device_id, will=(f"{device_id}/online", b"false"))

    def rpc(topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        request = json.loads(payload)
        answer = {"id": request["id"], "src": device_id, "dst": request["src"], "result": {"was_on": False}}
        return [(f"{request['src']}/rpc", json.dumps(answer).encode())]

    shelly.answer(f"{device_id}/rpc", rpc)
    shelly.publish(f"{device_id}/online", "true", retain=True)
    shelly.publish(f"{device_id}/events/rpc", json.dumps({
        "src": device_id, "dst": f"{device_id}/events", "method": "NotifyStatus",
        "params": {"ts": 1708179956.30, "switch:0": {"id": 0, "apower": 8.2, "output": True}}}))
    row = stored(device_id, **{"switch:0.apower": 8.2})
    assert row.ts == datetime(2024, 2, 17, 14, 25, 56, 300000, tzinfo=UTC) and row.data["switch:0.output"] is True
    online(device_id)

    command = finished(command_issue(user=ops, device_id=device_id, name="Switch.Set", params={"id": 0, "on": True}))
    assert command.status == "succeeded" and command.result == {"was_on": False}
    [(topic, request)] = [(t, json.loads(p)) for t, p in shelly.received if t == f"{device_id}/rpc"]
    assert request == {"id": str(command.id), "src": f"{device_id}/iotgw", "method": "Switch.Set",
                       "params": {"id": 0, "on": True}}


def test_esphome(stack, registry, ops, firmwares):
    device_id, _ = registry.device("esp")
    device_set_profile(device_id=device_id, profile="esphome")
    esp = start(stack, firmwares, device_id, will=(f"{device_id}/status", b"offline"))
    esp.answer(f"{device_id}/switch/+/command", lambda topic, payload: [(topic.rsplit("/", 1)[0] + "/state", payload)])

    esp.publish(f"{device_id}/status", "online", retain=True)
    esp.publish(f"{device_id}/sensor/temperature/state", "22.4")
    esp.publish(f"{device_id}/switch/relay/state", "OFF")
    stored(device_id, **{"sensor.temperature": 22.4})
    stored(device_id, **{"switch.relay": False})
    online(device_id)

    command = finished(command_issue(user=ops, device_id=device_id, name="switch",
                                     params={"entity": "relay", "value": "ON"}))
    assert (f"{device_id}/switch/relay/command", b"ON") in esp.received
    assert command.status == "succeeded" and command.result == {"switch.relay": True}

    esp.publish(f"{device_id}/status", "offline", retain=True)
    online(device_id, False)


def test_gateway_api(stack, registry, ops, firmwares):
    gateway, _ = registry.device("tbgw")
    device_set_profile(device_id=gateway, profile="gateway-api")
    child = device_register_child(gateway_id=gateway, child_name="Device A").id
    tb = start(stack, firmwares, gateway)

    def rpc(topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        request = json.loads(payload)
        if "method" not in request.get("data", {}):
            return []  # its own answer, seen again
        answer = {"device": request["device"], "id": request["data"]["id"], "data": {"success": True}}
        return [("v1/gateway/rpc", json.dumps(answer).encode())]

    tb.answer("v1/gateway/rpc", rpc)
    tb.publish("v1/gateway/connect", '{"device":"Device A"}')
    tb.publish("v1/gateway/telemetry", '{"Device A":[{"ts":1483228800000,"values":{"temperature":42}}]}')
    row = stored(child, temperature=42)
    assert row.ts == datetime(2017, 1, 1, tzinfo=UTC)
    online(child)

    command = finished(command_issue(user=ops, device_id=child, name="toggle", params={"on": True}))
    assert command.status == "succeeded" and command.result == {"success": True}

    tb.publish("v1/gateway/disconnect", '{"device":"Device A"}')
    online(child, False)


def test_a_custom_profile_made_over_the_api_ingests_a_made_up_dialect(stack, registry, ops, firmwares):
    from django.test import Client

    token = registry.token(ops)
    spec = {
        "topics": [
            {"topic": "acme/{device}/up", "role": "telemetry", "select": "m", "time": {"field": "t", "unit": "s"}},
            {"topic": "acme/{device}/hello", "role": "status", "format": "value", "online": ["hi"],
             "offline": ["bye"]},
            {"topic": "acme/{device}/ack", "role": "response", "match": "id", "id": "ref", "result": "out"},
        ],
        "command": {"topic": "acme/{device}/do", "payload": {"ref": "{id}", "op": "{name}", "args": "{params}"}},
    }
    client = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    created = client.post("/api/profiles", {"name": "acme", "spec": spec}, content_type="application/json", **auth)
    assert created.status_code == 201, created.content
    device_id, _ = registry.device("acme")
    assigned = client.put(f"/api/devices/{device_id}/profile", {"profile": "acme"}, content_type="application/json",
                          **auth)
    assert assigned.status_code == 200 and assigned.json()["profile"] == "acme"
    acme = start(stack, firmwares, device_id)
    acme.answer(f"acme/{device_id}/do", lambda topic, payload: [
        (f"acme/{device_id}/ack", json.dumps({"ref": json.loads(payload)["ref"], "out": "done"}).encode())])

    acme.publish(f"acme/{device_id}/hello", "hi")
    acme.publish(f"acme/{device_id}/up", '{"t": 1700000000, "m": {"rpm": 1200, "temp": {"oil": 81.5}}}')
    row = stored(device_id, rpm=1200)
    assert row.ts == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC) and row.data == {"rpm": 1200, "temp.oil": 81.5}
    online(device_id)
    command = finished(command_issue(user=ops, device_id=device_id, name="spin", params={"rpm": 900}))
    assert command.status == "succeeded" and command.result == "done"


def test_a_profile_changed_while_the_bridge_runs_takes_effect(stack, registry, ops, firmwares):
    device_id, _ = registry.device("late")
    firmware = start(stack, firmwares, device_id)
    profile_save(name="late", spec={"topics": [{"topic": "late/{device}/v", "role": "telemetry",
                                                "format": "value", "metric": "v"}]})
    device_set_profile(device_id=device_id, profile="late")

    def published() -> bool:  # until the bridge has subscribed to the new profile's topic
        firmware.publish(f"late/{device_id}/v", "7")
        return Telemetry.objects.filter(device_id=device_id).exists()

    wait_until(published, interval=0.5, what="the new profile's topic subscribed and read")
    assert Telemetry.objects.filter(device_id=device_id).first().data == {"v": 7}


def test_children_are_created_on_first_sight_only_when_the_profile_says_so(stack, registry, ops, firmwares):
    from devices.builtin_profiles import ZIGBEE2MQTT

    profile_save(name="z2m-open", spec={**ZIGBEE2MQTT, "create_children": True})
    open_base, _ = registry.device("z2mopen")
    closed_base, _ = registry.device("z2mclosed")
    device_set_profile(device_id=open_base, profile="z2m-open")
    device_set_profile(device_id=closed_base, profile="zigbee2mqtt")
    z2m = start(stack, firmwares, open_base)

    z2m.publish(f"{closed_base}/0x00158d0001a2b3c4", '{"temperature":20}')
    z2m.publish(f"{open_base}/0x00158d0001a2b3c4", '{"temperature":21}')
    child = stored(f"{open_base}.0x00158d0001a2b3c4", temperature=21).device
    assert child.gateway_id == open_base and child.child_name == "0x00158d0001a2b3c4"
    assert child.profile_id == "z2m-open" and child.owner_id == Device.objects.get(pk=open_base).owner_id
    assert not Device.objects.filter(pk=f"{closed_base}.0x00158d0001a2b3c4").exists()


def test_a_device_on_the_wrong_profile_shows_why_on_its_page(stack, registry, ops, firmwares):
    from django.test import Client

    device_id, _ = registry.device("misfit")  # left on the default profile, but it speaks Tasmota
    other, _ = registry.device("tasmota-real")
    device_set_profile(device_id=other, profile="tasmota")
    tasmota = start(stack, firmwares, device_id)
    tasmota.publish(f"tele/{device_id}/SENSOR", '{"Time":"2019-01-01T00:00:00","AM2301":{"Temperature":1}}')
    wait_until(lambda: Device.objects.get(pk=device_id).last_rejection, what="the refusal noted on the device")
    assert Device.objects.get(pk=device_id).last_rejection["reason"] == "wrong_profile"
    browser = Client()
    browser.force_login(ops)
    page = browser.get(f"/devices/{device_id}/").content.decode()
    assert "wrong_profile" in page and "<code>iotgw</code>" in page
