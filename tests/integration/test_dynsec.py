"""Mosquitto dynamic security kept in step with the registry: a real Mosquitto with the plugin, real paho clients."""

from __future__ import annotations

import io
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command

from devices.models import Telemetry
from devices.services.commands import command_issue
from devices.services.devices import device_rotate_secret, device_set_enabled
from testing.mqtt import MqttProbe as Client
from testing.processes import free_port
from testing.waiting import wait_until
from tests.conftest import need_dynsec

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
ADMIN_PASSWORD = "admin-" + uuid.uuid4().hex[:12]


@pytest.fixture
def dynsec_broker(tmp_path, processes, settings):
    """A Mosquitto of our own on a free port, with the dynamic-security plugin; settings point the services at it."""
    need_dynsec()
    state = tmp_path / "dynsec.json"
    subprocess.run(["mosquitto_ctrl", "dynsec", "init", str(state), "admin", ADMIN_PASSWORD], check=True,
                   capture_output=True)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npersistence false\n"
        f"plugin {PLUGIN}\nplugin_opt_config_file {state}\n"
        # Started as root, mosquitto would drop to its own user, which cannot read pytest's tmp_path.
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    proc = processes.start("mosquitto", ["mosquitto", "-c", str(conf)], {"PATH": "/usr/sbin:/usr/bin:/bin"})
    url = f"mqtt://admin:{ADMIN_PASSWORD}@127.0.0.1:{port}"
    settings.MQTT_DYNSEC = True
    settings.MQTT_DYNSEC_URL = url
    probe = Client(port)
    wait_until(lambda: probe.try_connect("admin", ADMIN_PASSWORD) == 0 or not proc.alive(), what="mosquitto up")
    assert proc.alive(), proc.output()
    probe.close()
    return port


from testing.mqtt import NOT_AUTHORIZED  # noqa: E402


def test_registered_device_is_confined_to_its_own_topics(dynsec_broker, registry):
    port = dynsec_broker
    (mine, secret), (other, _) = registry.device("ds-mine"), registry.device("ds-other")
    observer = Client(port)
    assert observer.try_connect("admin", ADMIN_PASSWORD) == 0
    assert observer.subscribe("devices/#") < 0x80

    device = Client(port)
    assert device.try_connect(mine, secret) == 0
    assert device.publish(f"devices/{mine}/telemetry", b'{"t": 1}') == 0
    assert observer.got(f"devices/{mine}/telemetry", b'{"t": 1}')
    # As another device: refused by the broker, and nothing reaches subscribers.
    assert device.publish(f"devices/{other}/telemetry", b'{"spoof": 1}') == NOT_AUTHORIZED
    assert device.publish(f"devices/{mine}/commands", b'{"forged": 1}') == NOT_AUTHORIZED
    assert device.publish(f"devices/{mine}/status", b"online") == 0
    assert observer.got(f"devices/{mine}/status", b"online")
    assert not any(m.topic == f"devices/{other}/telemetry" for m in observer.received)
    assert device.subscribe(f"devices/{other}/commands") == NOT_AUTHORIZED
    assert device.subscribe("devices/#") == NOT_AUTHORIZED
    assert device.subscribe(f"devices/{mine}/commands") == 1

    intruder = Client(port)
    assert intruder.try_connect(other, secret) != 0  # someone else's secret
    device.close()
    observer.close()


def test_disabled_device_is_dropped_and_refused(dynsec_broker, registry):
    port = dynsec_broker
    mine, secret = registry.device("ds-off")
    device = Client(port)
    assert device.try_connect(mine, secret) == 0

    device_set_enabled(device_id=mine, enabled=False)
    device.wait("disconnected")
    device.client.loop_stop()
    assert Client(port).try_connect(mine, secret) != 0

    device_set_enabled(device_id=mine, enabled=True)
    again = Client(port)
    assert again.try_connect(mine, secret) == 0
    again.close()


def test_rotated_secret_replaces_the_old_one(dynsec_broker, registry):
    port = dynsec_broker
    mine, old_secret = registry.device("ds-rot")
    device = Client(port)
    assert device.try_connect(mine, old_secret) == 0

    new_secret = device_rotate_secret(device_id=mine)
    device.wait("disconnected")  # a connection made with the old secret does not outlive it
    device.client.loop_stop()
    assert Client(port).try_connect(mine, old_secret) != 0
    fresh = Client(port)
    assert fresh.try_connect(mine, new_secret) == 0
    assert fresh.publish(f"devices/{mine}/telemetry", b"{}") < 0x80  # 0x10: accepted, no subscribers
    fresh.close()


def test_rotatesecret_command_updates_the_broker(dynsec_broker, registry):
    port = dynsec_broker
    mine, old_secret = registry.device("ds-cli")
    device = Client(port)
    assert device.try_connect(mine, old_secret) == 0
    out = io.StringIO()
    call_command("rotatesecret", mine, stdout=out)
    new_secret = re.search(r"secret:\s+(\S+)", out.getvalue())[1]
    device.wait("disconnected")
    device.client.loop_stop()
    assert Client(port).try_connect(mine, old_secret) != 0
    fresh = Client(port)
    assert fresh.try_connect(mine, new_secret) == 0
    fresh.close()


def test_dynsecsetup_gives_a_real_bridge_what_it_needs(dynsec_broker, stack, registry, settings):
    port = dynsec_broker
    password = f"bridge-{uuid.uuid4().hex[:8]}"
    settings.MQTT_BRIDGE_USERNAME, settings.MQTT_BRIDGE_PASSWORD = "iotgw-bridge", password
    out = io.StringIO()
    call_command("dynsecsetup", stdout=out)
    call_command("dynsecsetup", stdout=out)  # idempotent: a deployment runs it at every start
    assert "ready" in out.getvalue()

    stack.env.update(MQTT_URL=f"mqtt://iotgw-bridge:{password}@127.0.0.1:{port}")
    stack.start_bridge()  # its shared subscription is granted: it reports itself connected
    device_id, secret = registry.device("ds-bridged")
    device = Client(port)
    assert device.try_connect(device_id, secret) == 0
    assert device.subscribe(f"devices/{device_id}/commands") == 1
    assert device.publish(f"devices/{device_id}/telemetry", b'{"kw": 3}') == 0
    wait_until(lambda: Telemetry.objects.filter(device_id=device_id, data={"kw": 3}).exists(), what="stored")
    command = command_issue(user=registry.user("ds-ops", staff=True), device_id=device_id, name="ping")
    assert device.got(f"devices/{device_id}/commands", match=lambda m: str(command.id).encode() in m.payload)
    device.close()


def test_a_device_put_on_a_profile_gets_exactly_its_profiles_topics(dynsec_broker, registry):
    from devices.services.profiles import device_set_profile

    port = dynsec_broker
    mine, secret = registry.device("ds-tasmota")
    device_set_profile(device_id=mine, profile="tasmota")
    device = Client(port)
    assert device.try_connect(mine, secret) == 0
    # 0x10: accepted, no subscriber
    wait_until(lambda: device.publish(f"tele/{mine}/SENSOR", b'{"x": 1}') in (0, 0x10), what="the profile's rights")
    assert device.subscribe(f"cmnd/{mine}/#") == 1
    assert device.publish("tele/someone-else/SENSOR", b"{}") == NOT_AUTHORIZED
    assert device.publish(f"devices/{mine}/telemetry", b"{}") == NOT_AUTHORIZED
    device.close()
