"""The benchmark's load generator: payloads the gateway accepts, and a lean publisher the broker acks."""

import threading
import uuid
from datetime import UTC, datetime

import orjson
import paho.mqtt.client as mqtt

from bench.dashboards import slices
from bench.load import LeanPublisher, message
from core.payloads import parse_samples
from testing.waiting import wait_until


def test_a_batched_message_is_an_array_the_gateway_accepts_with_one_sample_per_ts():
    payload = message([1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_002], 7)
    samples = parse_samples(payload, received_at=datetime.now(UTC), max_bytes=64 * 1024)
    assert [s.ts for s in samples] == [datetime.fromtimestamp(1_700_000_000 + i / 1000, UTC) for i in range(3)]
    assert [s.data["seq"] for s in samples] == [7, 8, 9]


def test_a_single_sample_message_is_a_bare_object_of_about_100_bytes():
    payload = message([1_700_000_000_000], 1)
    assert isinstance(orjson.loads(payload), dict)
    assert 80 <= len(payload) <= 130


def test_slices_cover_the_fleet_once():
    fleet = [f"d{i}" for i in range(1003)]
    parts = slices(fleet, 100)
    assert len(parts) == 100
    assert sorted(d for part in parts for d in part) == sorted(fleet)
    assert {len(p) for p in parts} <= {10, 11}


def test_lean_publisher_is_acked_per_message_and_delivers_every_payload(private_broker):
    # A broker of the test's own: the system one queues at most 1000 messages for a subscriber.
    host, port = "127.0.0.1", private_broker.port
    topic = f"benchtest/{uuid.uuid4().hex[:8]}"
    got: list[bytes] = []
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    sub.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.on_message = lambda _c, _u, msg: got.append(msg.payload)
    sub.connect(host, int(port))
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        pub = LeanPublisher(host, int(port), f"benchtest-{uuid.uuid4().hex[:6]}")
        payloads = [message([1_700_000_000_000 + i], i) for i in range(70_000)]  # wraps the 16-bit packet id
        for start in range(0, len(payloads), 5000):
            pub.publish_many([(topic.encode(), p) for p in payloads[start:start + 5000]])
        wait_until(lambda: pub.acked == len(payloads), timeout=30, what="a PUBACK per publish")
        assert len(pub.puback_ms) == len(payloads)
        wait_until(lambda: len(got) == len(payloads), timeout=30, what="every payload delivered")
        assert got == payloads
        pub.close()
    finally:
        sub.disconnect()
        sub.loop_stop()
