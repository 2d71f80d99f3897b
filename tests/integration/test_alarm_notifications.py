"""End to end: a threshold alarm raised by MQTT telemetry in the bridge reaches a webhook, and so does its clear."""

from __future__ import annotations

import sys
import time

import pytest

from alarms.models import Alarm, AlarmRule
from alarms.selectors import rule_version
from devices.models import BridgeHeartbeat
from notify.models import Channel, Subscription
from notify.signing import new_secret, verify
from testing.mqtt import MqttDevice
from testing.waiting import wait_until
from testing.webhook import Receiver

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

BASE_TS = 1767225600000  # 2026-01-01, in ms


def rules_applied() -> bool:
    version = rule_version()
    beats = list(BridgeHeartbeat.objects.values_list("counters", flat=True))
    return bool(beats) and all(c.get("alarm_rules_version") == version for c in beats)


def test_a_threshold_alarm_from_mqtt_telemetry_and_its_clear_reach_the_subscribed_webhook(stack, registry):
    receiver = Receiver().start()
    try:
        owner = registry.user("oper")
        device_id, _ = registry.device("boiler", owner=owner)
        hook = Channel.objects.create(name=f"ops-{registry.tag}", kind="webhook", target=receiver.url,
                                      secret=new_secret())
        Subscription.objects.create(channel=hook, user=owner, min_severity="major")
        AlarmRule.objects.create(name="too hot", kind="above", metric="temp", high=80, high_clear=70, duration=2,
                                 severity="critical", device_id=device_id)
        stack.start_bridge(IOTGW_ALARM_SWEEP_SECONDS="0.5", IOTGW_ALARM_POLL_SECONDS="0.5")
        stack.processes.start("notify", [sys.executable, "manage.py", "notify"],
                              dict(stack.env, IOTGW_NOTIFY_INTERVAL="0.2"))
        wait_until(rules_applied, timeout=30, what="the bridge applying the rule")
        device = MqttDevice(stack.mqtt_url, device_id)
        try:
            for i in range(4):  # over 80 for 3 s of sample time: past the rule's 2 s, one alarm
                device.telemetry({"ts": BASE_TS + i * 1000, "temp": 85 + i})
            wait_until(lambda: len(receiver.received) >= 1, timeout=30, what="the raise at the webhook")
            device.telemetry({"ts": BASE_TS + 10_000, "temp": 65})  # under the clear threshold
            wait_until(lambda: len(receiver.received) >= 2, timeout=30, what="the clear at the webhook")
        finally:
            device.close()
        alarm = Alarm.objects.get(device_id=device_id)
        events = [b["event"] for b in receiver.bodies()]
        assert [(e["kind"], e["key"], e["severity"], e["device"]) for e in events] == [
            ("raised", f"alarm:{alarm.pk}", "critical", device_id), ("cleared", f"alarm:{alarm.pk}", "critical",
                                                                      device_id)]
        assert events[0]["title"] == f"too hot on {device_id}" and events[0]["data"]["value"] >= 85
        for r in receiver.received:
            assert verify(hook.secret, timestamp=r.headers["x-iotgw-timestamp"], body=r.body,
                          header=r.headers["x-iotgw-signature"], now=time.time())
        assert len({r.headers["x-iotgw-delivery"] for r in receiver.received}) == 2
    finally:
        receiver.stop()


def test_an_alarm_raised_by_a_bridge_killed_right_after_is_still_notified(stack, registry):
    receiver = Receiver().start()
    try:
        owner = registry.user("oper")
        device_id, _ = registry.device("pump", owner=owner)
        hook = Channel.objects.create(name=f"ops-{registry.tag}", kind="webhook", target=receiver.url, secret="s")
        Subscription.objects.create(channel=hook, user=owner)
        AlarmRule.objects.create(name="no pressure", kind="below", metric="bar", low=1, severity="major",
                                 device_id=device_id)
        bridge = stack.start_bridge(IOTGW_ALARM_POLL_SECONDS="0.5")
        wait_until(rules_applied, timeout=30, what="the bridge applying the rule")
        device = MqttDevice(stack.mqtt_url, device_id)
        device.telemetry({"ts": BASE_TS, "bar": 0.2})
        device.close()
        wait_until(lambda: Alarm.objects.filter(device_id=device_id).exists(), timeout=30, what="the alarm")
        bridge.kill()  # SIGKILL: whatever it held in memory is gone; the outbox row committed with the alarm
        stack.processes.start("notify", [sys.executable, "manage.py", "notify"], stack.env)
        wait_until(lambda: receiver.bodies(), timeout=30, what="the notification, sent by the sender alone")
        (body,) = receiver.bodies()
        assert body["event"]["kind"] == "raised" and body["event"]["device"] == device_id
    finally:
        receiver.stop()
