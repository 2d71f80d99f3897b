"""Metric labels and units as the API and the dashboard's device page serve them (no broker, no browser)."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth import get_user_model

from core.errors import Conflict
from core.hadiscovery import parse_config
from devices.models import Device, DeviceMetric, DeviceProfile
from devices.services.devices import device_register
from devices.services.discovery import discovery_device_register, discovery_entity_remove, discovery_metric_save
from devices.services.profiles import device_set_profile, profile_save
from devices.services.tokens import token_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(client):
    user = get_user_model().objects.create_user("alice", password="pw-123456", is_staff=True)
    client.force_login(user)
    return user


def plug(owner) -> Device:
    """A Tasmota plug that has sent its energy readings and a sensor temperature."""
    device, _ = device_register(device_id="plug", owner=owner)
    device_set_profile(device_id="plug", profile="tasmota")
    Device.objects.filter(pk="plug").update(latest={
        "ENERGY.Power": {"value": 8.2, "ts": "2026-01-01T00:00:00Z"},
        "AM2301.Temperature": {"value": 24.6, "ts": "2026-01-01T00:00:00Z"}})
    return Device.objects.get(pk="plug")


def test_the_device_api_shows_declared_and_discovered_units(client, alice):
    plug(alice)
    discovery_metric_save(key="sensor/ABC_AM2301_Temperature", device_id="plug", metric="AM2301.Temperature",
                          label="Tasmota AM2301 Temperature", unit="°C", device_class="temperature")
    token = token_create(user=alice)
    body = client.get("/api/devices/plug", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert body["metrics"] == {
        "ENERGY.Power": {"label": "Power", "unit": "W", "device_class": "", "source": "profile"},
        "AM2301.Temperature": {"label": "Tasmota AM2301 Temperature", "unit": "°C", "device_class": "temperature",
                               "source": "discovery"}}


def test_the_openapi_schema_describes_the_metrics(client):
    schema = client.get("/api/openapi.json").json()
    detail = schema["paths"]["/api/devices/{device_id}"]["get"]["responses"]["200"]["content"]["application/json"]
    ref = detail["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "metrics" in schema["components"]["schemas"][ref]["properties"]
    assert set(schema["components"]["schemas"]["MetricOut"]["properties"]) == {"label", "unit", "device_class",
                                                                               "source"}


def test_the_device_page_carries_labels_and_units_for_its_charts(client, alice):
    plug(alice)
    discovery_metric_save(key="sensor/ABC_AM2301_Temperature", device_id="plug", metric="AM2301.Temperature",
                          label="</script><b>x</b>", unit="°C", device_class="temperature")
    page = client.get("/devices/plug/").content.decode()
    found = re.search(r'<script id="metric-meta" type="application/json">(.*?)</script>', page, re.S)
    assert found is not None, "the page embeds the metrics' metadata for device.js"
    meta = json.loads(found.group(1))
    assert meta["AM2301.Temperature"]["unit"] == "°C" and meta["ENERGY.Power"] == {
        "label": "Power", "unit": "W", "device_class": "", "source": "profile"}
    assert "</script><b>" not in found.group(1), "a label cannot close the script element"


def test_a_metric_set_by_hand_is_not_overwritten_by_discovery(alice):
    plug(alice)
    DeviceMetric.objects.create(device_id="plug", name="AM2301.Temperature", label="Room", unit="K", source="manual")
    discovery_metric_save(key="sensor/k", device_id="plug", metric="AM2301.Temperature", label="x", unit="°C",
                          device_class="")
    assert DeviceMetric.objects.get(device_id="plug").unit == "K"
    assert discovery_entity_remove(key="sensor/k") == [] and DeviceMetric.objects.filter(device_id="plug").exists()


def test_metadata_for_an_unregistered_device_is_not_stored():
    assert discovery_metric_save(key="sensor/k", device_id="ghost", metric="t", label="", unit="", device_class="") \
        is False


def test_a_discovered_device_gets_a_profile_without_a_usable_secret_and_loses_the_entity_on_removal():
    config = {"name": "Temperature", "stat_t": "kitchen/t", "unit_of_meas": "°C", "dev": {"ids": "k1"}}
    entity = parse_config("homeassistant", "homeassistant/sensor/kitchen/t/config", json.dumps(config).encode())
    profile = discovery_device_register(entity=entity, device_id="kitchen", config=config)
    device = Device.objects.get(pk="kitchen")
    assert device.profile_id == profile == "ha-kitchen" and device.owner_id is None and device.secret_hash
    assert DeviceMetric.objects.get(device=device).unit == "°C"
    assert discovery_entity_remove(key="sensor/kitchen/t") == ["kitchen"]
    assert not DeviceMetric.objects.filter(device=device).exists()


def test_discovery_never_rewrites_a_profile_it_did_not_generate():
    spec = {"topics": [{"topic": "mine/{device}", "role": "telemetry"}]}
    profile_save(name="ha-kitchen", spec=spec)
    config = {"name": "Temperature", "stat_t": "kitchen/t", "unit_of_meas": "°C"}
    entity = parse_config("homeassistant", "homeassistant/sensor/kitchen/t/config", json.dumps(config).encode())
    with pytest.raises(Conflict):
        discovery_device_register(entity=entity, device_id="kitchen", config=config)
    assert DeviceProfile.objects.get(name="ha-kitchen").spec == spec
    assert not Device.objects.filter(pk="kitchen").exists()
