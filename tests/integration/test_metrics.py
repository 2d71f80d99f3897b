"""/metrics as Prometheus reads it: parseable, and the bridge's ingest latency is a histogram of what it stored."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devices.stats import LATENCY_BUCKETS
from testing.http import http_get
from testing.mqtt import MqttDevice
from testing.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def families(web: str) -> dict:
    status, body = http_get(web + "/metrics")
    assert status == 200
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def latency_of(web: str, bridge: str) -> dict[str, float]:
    """The bridge's histogram samples by name suffix and `le` (e.g. "_bucket:0.001", "_count", "_sum")."""
    family = families(web).get("iotgw_ingest_latency_seconds")
    if family is None:
        return {}
    assert family.type == "histogram"
    return {s.name.removeprefix(family.name) + (":" + s.labels["le"] if "le" in s.labels else ""): s.value
            for s in family.samples if s.labels["bridge"] == bridge}


def test_ingest_latency_is_a_histogram_of_the_messages_stored(stack, people):
    devices, _, registry = people
    stack.start_web()
    stack.start_bridge()
    bridge = stack.env["MQTT_CLIENT_ID"]
    device = MqttDevice(stack.mqtt_url, devices["a1"][0])
    stranger = MqttDevice(stack.mqtt_url, f"unregistered-{registry.tag}", will=False)
    try:
        stranger.telemetry({"x": 0})  # rejected (unknown device): not in the histogram
        for i in range(7):
            device.telemetry({"ts": 1767225600000 + i, "temp": i})
        wait_until(lambda: latency_of(stack.web, bridge).get("_count") == 7, what="7 messages in the histogram")
        samples = latency_of(stack.web, bridge)
        bounds = [float(k.split(":")[1]) for k in samples if k.startswith("_bucket:")]
        assert bounds == [*LATENCY_BUCKETS, float("inf")]
        counts = [samples[k] for k in samples if k.startswith("_bucket:")]
        assert counts == sorted(counts) and counts[-1] == samples["_count"] == 7
        assert 0 < samples["_sum"] < 7 * 10
        rejected = families(stack.web)["iotgw_messages_rejected"]
        assert any(s.labels.get("reason") == "unknown_device" for s in rejected.samples)
    finally:
        device.close()
        stranger.close()
