"""Every class of bad device input (SPEC §4) is rejected alone, counted, and delays nothing else."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import sync_to_async

from devices.models import Telemetry
from devices.services.devices import device_set_enabled
from testing.http import http_get
from testing.mqtt import MqttDevice
from testing.waiting import wait_until
from testing.ws import Dashboard

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

BAD_INPUTS = [
    # (case, topic suffix or full topic, payload, reason counted)
    ("oversized", "telemetry", b'{"x": "' + b"a" * (64 * 1024) + b'"}', "too_large"),
    ("invalid utf-8", "telemetry", b'{"x": "\xff\xfe"}', "not_utf8"),
    ("invalid json", "telemetry", b'{"x": 1,', "not_json"),
    ("metric name", "telemetry", b'{"bad name!": 1}', "bad_sample"),
    ("nested value", "telemetry", b'{"x": {"y": 1}}', "bad_sample"),
    ("long string", "telemetry", b'{"x": "' + b"s" * 257 + b'"}', "bad_sample"),
    ("naive ts", "telemetry", b'{"ts": "2026-01-01T00:00:00", "x": 1}', "bad_sample"),
    ("no metric", "telemetry", b'{"ts": 1767225600000}', "bad_sample"),
    ("empty array", "telemetry", b"[]", "bad_sample"),
    ("bad status", "status", b"sleeping", "bad_status"),
    ("unknown topic", "config", b'{"x": 1}', "bad_topic"),
    ("unknown device", "devices/ghost-device-zz/telemetry", b'{"x": 1}', "unknown_device"),
]


def rejected(web: str, reason: str) -> float:
    """The sum over bridges of iotgw_messages_rejected_total for a reason, read from /metrics."""
    status, body = http_get(web + "/metrics")
    assert status == 200
    label = re.escape(f'reason="{reason}"')
    pattern = re.compile(r"^iotgw_messages_rejected_total\{[^}]*" + label + r"[^}]*\} (\S+)$", re.M)
    return sum(float(v) for v in pattern.findall(body.decode()))


@pytest.fixture
def fleet(registry):
    """An owner with a token, two enabled devices and a disabled one."""
    user = registry.user("owner")
    ids = {name: registry.device(name, owner=user)[0] for name in ("victim", "on", "off")}
    device_set_enabled(device_id=ids["off"], enabled=False)
    return registry.token(user), ids


async def test_each_bad_input_is_rejected_alone_and_counted(stack, fleet):
    token, ids = fleet
    device_id = ids["victim"]
    await sync_to_async(stack.start_web)()
    await sync_to_async(stack.start_bridge)()
    device = await sync_to_async(MqttDevice)(stack.mqtt_url, device_id)
    dash = await Dashboard.open(stack.ws, token)
    await dash.subscribe([device_id])

    for n, (case, where, payload, reason) in enumerate(BAD_INPUTS):
        before = await sync_to_async(rejected)(stack.web, reason)
        topic = where if "/" in where else f"devices/{device_id}/{where}"
        await sync_to_async(device.publish)("", payload, topic=topic)
        await sync_to_async(device.telemetry)({"ts": 1767225600000 + n, "seq": n})

        items = await dash.telemetry_until(1, device_id)
        assert items[0]["data"] == {"seq": n}, f"{case}: the good message after it did not arrive alone"
        counted = lambda reason=reason, before=before: rejected(stack.web, reason) >= before + 1  # noqa: E731
        await sync_to_async(wait_until)(counted, timeout=10, what=f"{case} counted as {reason}")

    stored = await sync_to_async(lambda: sorted(Telemetry.objects.filter(device_id=device_id)
                                                .values_list("data__seq", flat=True)))()
    assert stored == list(range(len(BAD_INPUTS))), "only the good samples are stored"
    device.close()
    await dash.close()


async def test_disabled_device_is_rejected_and_others_unaffected(stack, fleet):
    token, ids = fleet
    off_id, on_id = ids["off"], ids["on"]
    await sync_to_async(stack.start_web)()
    await sync_to_async(stack.start_bridge)()
    dash = await Dashboard.open(stack.ws, token)
    await dash.subscribe([off_id, on_id])
    off = await sync_to_async(MqttDevice)(stack.mqtt_url, off_id)
    on = await sync_to_async(MqttDevice)(stack.mqtt_url, on_id)

    await sync_to_async(off.telemetry)({"x": 1})
    await sync_to_async(on.telemetry)({"x": 2})
    items = await dash.telemetry_until(1, on_id)
    assert items[0]["data"] == {"x": 2}
    await sync_to_async(wait_until)(lambda: rejected(stack.web, "disabled_device") >= 1, what="disabled counted")
    assert not await sync_to_async(Telemetry.objects.filter(device_id=off_id).exists)()
    off.close()
    on.close()
    await dash.close()
