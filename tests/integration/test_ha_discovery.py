"""Home Assistant discovery, consumed: firmwares' documented configs published retained to the real Mosquitto, a
real bridge reads them, and the API shows the devices' metrics labelled, with units; an empty config removes them."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from devices.models import Device, DeviceMetric, Telemetry
from devices.services.profiles import device_set_profile
from testing.firmware import Firmware
from testing.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def api(registry):
    client = Client()
    token = registry.token(registry.user("ops", staff=True))
    return lambda path: client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}")


def metrics_of(api, device_id: str, **want) -> dict:
    """Wait until the device's API view has these metrics (name → unit, or None: absent), and return them."""

    def found():
        response = api(f"/api/devices/{device_id}")
        assert response.status_code == 200, response.content
        metrics = response.json()["metrics"]
        ok = all((metrics.get(n) or {}).get("unit") == unit if unit is not None else n not in metrics
                 for n, unit in want.items())
        return (metrics,) if ok else None  # a tuple: no metrics left is an answer too

    return wait_until(found, what=f"metrics of {device_id}: {want}")[0]


def tasmota_config(topic: str, field: str, unit: str, cla: str) -> dict:
    """What Tasmota (SetOption19 1) publishes for one field of its AM2301 sensor."""
    mac = topic.rsplit("-", 1)[-1]
    return {"name": f"Tasmota AM2301 {field}", "stat_t": f"tele/{topic}/SENSOR", "avty_t": f"tele/{topic}/LWT",
            "pl_avail": "Online", "pl_not_avail": "Offline", "uniq_id": f"{mac}_AM2301_{field}",
            "dev": {"ids": [mac]}, "unit_of_meas": unit, "dev_cla": cla, "frc_upd": True,
            "val_tpl": "{{value_json['AM2301']." + field + "}}"}


def test_tasmota_and_esphome_configs_label_their_devices_metrics_and_removal_is_honoured(stack, registry, api,
                                                                                        firmwares):
    tasmota_id, _ = registry.device("tasmota")
    esp_id, _ = registry.device("esp")
    device_set_profile(device_id=tasmota_id, profile="tasmota")
    device_set_profile(device_id=esp_id, profile="esphome")
    firmware = Firmware(stack.mqtt_url, f"fw-{tasmota_id}")
    firmwares.append(firmware)
    mac = tasmota_id.rsplit("-", 1)[-1]
    temperature = f"homeassistant/sensor/{mac}_AM2301_Temperature/config"
    humidity = f"homeassistant/sensor/{mac}_AM2301_Humidity/config"
    esp_sensor = f"homeassistant/sensor/{esp_id}/temperature/config"
    esp_odd = f"homeassistant/sensor/{esp_id}/odd/config"
    # Retained before the bridge starts: it reads them when it subscribes, as after any restart.
    firmware.publish(temperature, json.dumps(tasmota_config(tasmota_id, "Temperature", "°C", "temperature")),
                     retain=True)
    firmware.publish(humidity, json.dumps(tasmota_config(tasmota_id, "Humidity", "%", "humidity")), retain=True)
    firmware.publish(esp_sensor, json.dumps({
        "dev_cla": "temperature", "unit_of_meas": "°C", "stat_cla": "measurement", "name": "Living room temperature",
        "stat_t": f"{esp_id}/sensor/temperature/state", "avty_t": f"{esp_id}/status", "uniq_id": "ESPsensortemperature",
        "dev": {"ids": "246f28aabbcc", "name": esp_id, "sw": "esphome v2024.2.0", "mdl": "esp32dev",
                "mf": "espressif"}}),
        retain=True)
    firmware.publish(esp_odd, json.dumps({"name": "Odd", "stat_t": f"{esp_id}/sensor/odd/state",
                                          "val_tpl": "{{ value.split(';')[0] }}", "unit_of_meas": "V"}), retain=True)

    stack.start_bridge(IOTGW_PROFILE_REFRESH="0.5", IOTGW_HA_DISCOVERY="1", IOTGW_HEARTBEAT_SECONDS="0.5")
    firmware.publish(f"tele/{tasmota_id}/SENSOR", '{"Time":"2019-01-01T00:00:00","AM2301":{"Temperature":24.6,'
                                                  '"Humidity":58.2},"TempUnit":"C"}')
    firmware.publish(f"{esp_id}/sensor/temperature/state", "22.4")

    metrics = metrics_of(api, tasmota_id, **{"AM2301.Temperature": "°C", "AM2301.Humidity": "%"})
    assert metrics["AM2301.Temperature"] == {"label": "Tasmota AM2301 Temperature", "unit": "°C",
                                             "device_class": "temperature", "source": "discovery"}
    esp = metrics_of(api, esp_id, **{"sensor.temperature": "°C"})
    assert esp["sensor.temperature"]["label"] == "Living room temperature" and "sensor.odd" not in esp
    wait_until(lambda: Telemetry.objects.filter(device_id=tasmota_id, data__contains={"AM2301.Temperature": 24.6})
               .exists(), what="the Tasmota sample stored")
    wait_until(lambda: Telemetry.objects.filter(device_id=esp_id, data__contains={"sensor.temperature": 22.4})
               .exists(), what="the ESPHome sample stored")
    # The template outside the subset: refused with its reason, on the device's page like any refusal.
    rejection = wait_until(lambda: Device.objects.get(pk=esp_id).last_rejection, what="the refusal recorded")
    assert rejection["reason"] == "template_refused" and "odd" in rejection["message"]

    firmware.publish(temperature, b"", retain=True)  # Tasmota's way to take an entity back
    metrics_of(api, tasmota_id, **{"AM2301.Temperature": None, "AM2301.Humidity": "%"})
    firmware.publish(humidity, b"", retain=True)
    firmware.publish(esp_sensor, b"", retain=True)
    firmware.publish(esp_odd, b"", retain=True)
    metrics_of(api, esp_id, **{"sensor.temperature": None})
    wait_until(lambda: not DeviceMetric.objects.filter(device_id=tasmota_id).exists(), what="all metadata removed")


def test_a_device_no_profile_claims_is_registered_on_a_generated_profile(stack, registry, api, firmwares):
    node = f"kitchen-{registry.tag}"
    firmware = Firmware(stack.mqtt_url, f"fw-{node}")
    firmwares.append(firmware)
    config = f"homeassistant/sensor/{node}/temperature/config"
    firmware.publish(config, json.dumps({
        "~": f"{node}/sensor/temperature", "name": "Kitchen temperature", "stat_t": "~/state",
        "unit_of_meas": "°C", "dev_cla": "temperature", "avty_t": f"{node}/status",
        "dev": {"ids": "a1b2c3", "name": "Kitchen", "mdl": "esp8266"}}), retain=True)
    stack.start_bridge(IOTGW_PROFILE_REFRESH="0.5", IOTGW_HA_DISCOVERY="1", IOTGW_HA_DISCOVERY_REGISTER="1")

    device = wait_until(lambda: Device.objects.filter(pk=node).first(), what="the discovered device registered")
    assert device.name == "Kitchen" and device.profile_id.startswith("ha-") and device.owner_id is None
    assert device.profile.spec["topics"] == [
        {"topic": f"{node}/status", "role": "status", "format": "value", "online": ["online"], "offline": ["offline"]},
        {"topic": f"{node}/sensor/temperature/state", "role": "telemetry", "format": "value", "metric": "temperature"}]

    def published():  # until the bridge follows the new profile and subscribes to its topics
        firmware.publish(f"{node}/sensor/temperature/state", "21.5")
        return Telemetry.objects.filter(device_id=node, data__contains={"temperature": 21.5}).exists()

    wait_until(published, interval=0.5, what="the generated profile's topic read")
    firmware.publish(f"{node}/status", "online", retain=True)
    wait_until(lambda: Device.objects.get(pk=node).online, what="online from its availability topic")
    assert metrics_of(api, node, temperature="°C")["temperature"]["label"] == "Kitchen temperature"

    firmware.publish(config, b"", retain=True)
    metrics_of(api, node, temperature=None)


def test_a_zigbee2mqtt_child_registered_after_its_config_is_labelled_then(stack, registry, api, firmwares):
    base, _ = registry.device("z2m")
    device_set_profile(device_id=base, profile="zigbee2mqtt")
    firmware = Firmware(stack.mqtt_url, f"fw-{base}")
    firmwares.append(firmware)
    ieee = f"0x00158d0001{registry.tag}"
    config = f"homeassistant/sensor/{ieee}/temperature/config"
    firmware.publish(config, json.dumps({
        "availability": [{"topic": f"{base}/bridge/state", "value_template": "{{ value_json.state }}"}],
        "device": {"identifiers": [f"zigbee2mqtt_{ieee}"], "manufacturer": "Aqara", "model": "WSDCGQ11LM",
                   "name": "bedroom sensor"},
        "device_class": "temperature", "name": "Temperature", "state_class": "measurement",
        "state_topic": f"{base}/bedroom sensor", "unique_id": f"{ieee}_temperature_zigbee2mqtt",
        "unit_of_measurement": "°C", "value_template": "{{ value_json.temperature }}"}), retain=True)
    stack.start_bridge(IOTGW_PROFILE_REFRESH="0.5", IOTGW_HA_DISCOVERY="1", IOTGW_HEARTBEAT_SECONDS="0.5")
    wait_until(lambda: Device.objects.get(pk=base).last_rejection, what="the unknown child refused")

    from devices.services.profiles import device_register_child

    child = device_register_child(gateway_id=base, child_name="bedroom sensor").id  # after the config was read
    metrics = metrics_of(api, child, temperature="°C")
    assert metrics["temperature"]["label"] == "Temperature"
    firmware.publish(f"{base}/bedroom sensor", '{"temperature": 19.5, "linkquality": 80}')
    wait_until(lambda: Telemetry.objects.filter(device_id=child, data__contains={"temperature": 19.5}).exists(),
               what="the child's sample stored")
    firmware.publish(config, b"", retain=True)
    metrics_of(api, child, temperature=None)
