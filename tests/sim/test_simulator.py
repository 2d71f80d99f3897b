"""The simulator's pure parts: value generation, command answers, scheduling."""

from __future__ import annotations

import random
import re
import statistics

import pytest

from sim.simulator import Sensor, Stats, command_answer, progress_line, spread

METRIC_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def run(sensor: Sensor, steps: int, dt: float = 1.0) -> list[dict]:
    return [sensor.step(dt) for _ in range(steps)]


def test_samples_follow_the_wire_rules():
    sample = Sensor(random.Random(1)).step(1.0)
    assert set(sample) == {"temperature", "humidity", "battery", "rssi"}
    assert all(METRIC_NAME.match(k) and isinstance(v, int | float) for k, v in sample.items())


def test_same_seed_gives_the_same_values():
    assert run(Sensor(random.Random(7)), 50) == run(Sensor(random.Random(7)), 50)
    assert run(Sensor(random.Random(7)), 50) != run(Sensor(random.Random(8)), 50)


def test_temperature_drifts_but_stays_near_its_setpoint():
    sensor = Sensor(random.Random(3))
    temps = [s["temperature"] for s in run(sensor, 20_000)]
    assert len(set(temps)) > 100, "it should wander"
    assert all(abs(t - sensor.setpoint) < 6 for t in temps)
    assert abs(statistics.mean(temps) - sensor.setpoint) < 1.0


def test_consecutive_temperatures_change_smoothly():
    temps = [s["temperature"] for s in run(Sensor(random.Random(4)), 2_000)]
    assert max(abs(a - b) for a, b in zip(temps, temps[1:], strict=False)) < 1.0


def test_humidity_stays_a_percentage():
    assert all(0 <= s["humidity"] <= 100 for s in run(Sensor(random.Random(5)), 20_000, dt=5.0))


def test_battery_drains_slowly_and_is_replaced_when_flat():
    sensor = Sensor(random.Random(6))
    start = sensor.battery
    hour = [s["battery"] for s in run(sensor, 3600)]
    assert all(b >= a for a, b in zip(hour[1:], hour, strict=False)), "never charges by itself"
    assert 0 < start - hour[-1] < 20
    sensor.battery = 5.5
    assert max(s["battery"] for s in run(sensor, 3600)) > 90


def test_a_zero_or_negative_step_changes_nothing():
    sensor = Sensor(random.Random(9))
    before = (sensor.temperature, sensor.battery, sensor.uptime)
    sensor.step(0.0)
    sensor.step(-5.0)
    assert (sensor.temperature, sensor.battery, sensor.uptime) == before


def test_resume_carries_on_from_the_last_known_values():
    sensor = Sensor(random.Random(2))
    sensor.resume({"temperature": 30.5, "battery": 12, "humidity": True, "other": 1})
    assert sensor.temperature == 30.5 and sensor.battery == 12.0
    assert sensor.humidity != 1.0, "a boolean is not a reading"


@pytest.mark.parametrize(
    ("name", "params", "status"),
    [("ping", {}, "ok"), ("reboot", {}, "ok"), ("set_setpoint", {"value": 25}, "ok"),
     ("set_setpoint", {"value": "hot"}, "error"), ("set_setpoint", {"value": 99}, "error"),
     ("self_destruct", {}, "error")],
)
def test_commands_are_answered_by_name(name, params, status):
    answer = command_answer(Sensor(random.Random(1)), {"id": "c1", "name": name, "params": params}, failed=False)
    assert answer["id"] == "c1" and answer["status"] == status
    assert ("error" in answer) == (status == "error")


def test_commands_act_on_the_sensor():
    sensor = Sensor(random.Random(1))
    run(sensor, 10)
    command_answer(sensor, {"id": "a", "name": "set_setpoint", "params": {"value": 30}}, failed=False)
    assert sensor.setpoint == 30.0
    command_answer(sensor, {"id": "b", "name": "reboot"}, failed=False)
    assert command_answer(sensor, {"id": "c", "name": "ping"}, failed=False)["result"]["uptime"] == 0


def test_a_simulated_failure_is_an_error_response():
    answer = command_answer(Sensor(random.Random(1)), {"id": "x", "name": "ping"}, failed=True)
    assert answer == {"id": "x", "status": "error", "error": "simulated failure"}


def test_devices_start_spread_over_one_period():
    starts = spread(4, rate=2.0, start=100.0)  # each device publishes every 2 s
    assert starts == [100.0, 100.5, 101.0, 101.5]
    assert spread(0, 1.0, 0.0) == [] and spread(3, 0.0, 0.0) == []


def test_progress_line_shows_the_counters():
    stats = Stats(sent=120, acked=118, commands=2, command_errors=1, connected=3)
    line = progress_line(stats)
    assert "sent 120" in line and "acked 118" in line and "commands 2 (1 failed)" in line and "3 connected" in line


# --- on the wire: one simulated device against the real broker (Mosquitto, MQTT v5) --------------


@pytest.mark.services
def test_a_simulated_device_says_online_publishes_answers_commands_and_says_offline(mqtt_url):
    import json
    import threading
    import uuid

    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from core.broker import BrokerConfig
    from sim.simulator import Simulator
    from testing.waiting import wait_until

    device_id = f"simtest-{uuid.uuid4().hex[:6]}"
    config = BrokerConfig.from_url(mqtt_url)
    seen: list[tuple[str, bytes, object]] = []
    observer = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"obs-{device_id}", protocol=mqtt.MQTTv5)
    observer.on_message = lambda _c, _u, m: seen.append((m.topic, m.payload, m.properties))
    observer.on_connect = lambda c, *_: c.subscribe(f"devices/{device_id}/#", qos=1)
    observer.connect(config.host, config.port)
    observer.loop_start()
    sim = Simulator(broker=config, devices={device_id: None}, rate=5.0, latency=0.05, seed=1)
    runner = threading.Thread(target=sim.run, daemon=True)
    try:
        runner.start()
        status = f"devices/{device_id}/status"
        wait_until(lambda: (status, b"online") in [(t, p) for t, p, _ in seen], what="online")
        wait_until(lambda: sum(t.endswith("/telemetry") for t, _, _ in seen) >= 3, what="telemetry")
        sample = json.loads(next(p for t, p, _ in seen if t.endswith("/telemetry")))
        assert sample["ts"].endswith("+00:00") and "temperature" in sample

        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"devices/{device_id}/commands/response"
        props.CorrelationData = b"corr-1"
        command = {"id": "c-1", "name": "ping", "params": {}, "expires_at": "2099-01-01T00:00:00+00:00"}
        observer.publish(f"devices/{device_id}/commands", json.dumps(command), qos=1, properties=props)
        answer = wait_until(lambda: next((m for m in seen if m[0].endswith("/commands/response")), None),
                            what="the command response")
        assert json.loads(answer[1])["status"] == "ok" and json.loads(answer[1])["id"] == "c-1"
        assert answer[2].CorrelationData == b"corr-1"
    finally:
        sim.stop()
        runner.join(10)
        wait_until(lambda: (status, b"offline") in [(t, p) for t, p, _ in seen], what="offline")
        observer.publish(status, b"", qos=1, retain=True).wait_for_publish(5)  # leave no retained message behind
        observer.loop_stop()
        observer.disconnect()
    assert sim.stats.acked == sim.stats.sent >= 3


@pytest.mark.services
def test_simulate_registers_missing_devices_for_their_owner_and_reports(mqtt_url, registry):
    import io

    from django.core.management import call_command

    from devices.models import Device

    owner = registry.user("owner")
    out = io.StringIO()
    call_command("simulate", devices=2, rate=20, duration=1.5, prefix=f"cmd{registry.tag}", owner=owner.username,
                 mqtt_url=mqtt_url, stdout=out)
    devices = Device.objects.filter(pk__startswith=f"cmd{registry.tag}-")
    assert sorted(d.id for d in devices) == [f"cmd{registry.tag}-1", f"cmd{registry.tag}-2"]
    assert all(d.owner_id == owner.id for d in devices)
    assert "done: sent" in out.getvalue()
