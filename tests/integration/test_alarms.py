"""Alarms over real processes: MQTT in, PostgreSQL, the bridge's engine, Redis, Daphne, `alarm` frames out."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from alarms.models import Alarm, AlarmEvent, AlarmRule
from alarms.selectors import rule_version
from devices.models import BridgeHeartbeat
from testing.http import json_call
from testing.mqtt import MqttDevice
from testing.waiting import await_until
from testing.ws import Dashboard

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

BASE_TS = 1767225600000  # 2026-01-01, in ms


@pytest.fixture
async def running(stack):
    await sync_to_async(stack.start_web)()
    await sync_to_async(stack.start_bridge)(IOTGW_ALARM_SWEEP_SECONDS="0.5", IOTGW_ALARM_POLL_SECONDS="0.5")
    return stack


def alarm_frame(device_id: str, event: str):
    return lambda f: f["type"] == "alarm" and f["device"] == device_id and f["event"] == event


def rules_applied() -> bool:
    """Every bridge's heartbeat says it evaluates the rules' current version."""
    version = rule_version()
    beats = list(BridgeHeartbeat.objects.values_list("counters", flat=True))
    return bool(beats) and all(c.get("alarm_rules_version") == version for c in beats)


def kinds(device_id: str) -> list[str]:
    return list(AlarmEvent.objects.filter(alarm__device_id=device_id).order_by("pk").values_list("kind", flat=True))


async def test_a_threshold_held_for_its_duration_raises_one_alarm_that_an_ack_and_a_clear_reach_the_dashboard(
        running, registry):
    user = await sync_to_async(registry.user)("oper")
    token = await sync_to_async(registry.token)(user)
    device_id, _ = await sync_to_async(registry.device)("boiler", owner=user)
    await sync_to_async(AlarmRule.objects.create)(name="too hot", kind="above", metric="temp", high=80,
                                                  high_clear=70, duration=60, severity="critical",
                                                  device_id=device_id)
    await await_until(rules_applied, what="the bridge applying the rule")
    dash = await Dashboard.open(running.ws, token)
    await dash.subscribe([device_id])
    device = await sync_to_async(MqttDevice)(running.mqtt_url, device_id)
    # Over 80 for 59 s of sample time: nothing. Then one more sample, at 60 s: one alarm, not one per sample.
    for i in range(61):
        await sync_to_async(device.telemetry)({"ts": BASE_TS + i * 1000, "temp": 85 + i % 3})
    raised = await dash.next(alarm_frame(device_id, "raised"))
    assert raised["severity"] == "critical" and raised["state"] == "active" and raised["value"] >= 85
    assert raised["first_seen"].startswith("2026-01-01T00:01:00")
    # Flapping inside the hysteresis band (70–80) and back over: still one alarm, never cleared.
    for i, temp in enumerate([75, 81, 72, 90, 71, 79] * 3):
        await sync_to_async(device.telemetry)({"ts": BASE_TS + (61 + i) * 1000, "temp": temp})

    status, body = await sync_to_async(json_call)("POST", f"{running.web}/api/alarms/{raised['id']}/acknowledge",
                                                  token, {"note": "crew on the way"})
    assert status == 200, body
    acked = await dash.next(alarm_frame(device_id, "acknowledged"))
    assert acked["acknowledged_by"] == user.username and acked["ack_note"] == "crew on the way"

    await sync_to_async(device.telemetry)({"ts": BASE_TS + 200_000, "temp": 65})  # past the clear threshold
    cleared = await dash.next(alarm_frame(device_id, "cleared"))
    assert cleared["id"] == raised["id"] and cleared["state"] == "cleared"
    assert await sync_to_async(Alarm.objects.filter(device_id=device_id).count)() == 1
    assert await sync_to_async(kinds)(device_id) == ["raised", "acknowledged", "cleared"]
    status, body = await sync_to_async(json_call)("GET", f"{running.web}/api/alarms/{raised['id']}", token)
    assert [e["kind"] for e in body["events"]] == ["raised", "acknowledged", "cleared"]
    device.close()
    await dash.close()


async def test_a_silent_device_raises_an_inactivity_alarm_within_the_configured_time(running, registry):
    user = await sync_to_async(registry.user)("watch")
    token = await sync_to_async(registry.token)(user)
    device_id, _ = await sync_to_async(registry.device)("meter", owner=user)
    await sync_to_async(AlarmRule.objects.create)(name="silent", kind="inactivity", duration=2, device_id=device_id)
    await await_until(rules_applied, what="the bridge applying the rule")
    dash = await Dashboard.open(running.ws, token)
    await dash.subscribe([device_id])
    device = await sync_to_async(MqttDevice)(running.mqtt_url, device_id, will=False)
    await sync_to_async(device.telemetry)({"v": 1})
    # 2 s of silence, a sweep every 0.5 s: well within 10 s.
    frame = await dash.next(alarm_frame(device_id, "raised"), timeout=10)
    assert frame["kind"] == "inactivity"
    await sync_to_async(device.telemetry)({"v": 2})
    await dash.next(alarm_frame(device_id, "cleared"))
    device.close()
    await dash.close()


async def test_a_rule_created_over_the_api_takes_effect_on_the_running_bridge_within_seconds(running, registry):
    staff = await sync_to_async(registry.user)("boss", staff=True)
    token = await sync_to_async(registry.token)(staff)
    device_id, _ = await sync_to_async(registry.device)("tank", owner=staff)
    dash = await Dashboard.open(running.ws, token)
    await dash.subscribe([device_id])
    status, rule = await sync_to_async(json_call)("POST", f"{running.web}/api/alarm-rules", token, {
        "name": "low level", "kind": "below", "metric": "level", "low": 10, "device": device_id})
    assert status == 201, rule
    device = await sync_to_async(MqttDevice)(running.mqtt_url, device_id)

    def low_level_raises() -> bool:
        device.telemetry({"level": 3})
        return Alarm.objects.filter(device_id=device_id).exists()

    await await_until(low_level_raises, timeout=10, what="the new rule applied")
    frame = await dash.next(alarm_frame(device_id, "raised"))
    assert frame["rule"] == rule["id"]
    device.close()
    await dash.close()
