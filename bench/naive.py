"""The naive bridge the benchmark compares against: one ORM insert and one group_send per message.

A paho callback decodes the sample, `Telemetry.objects.create()`s it and
`async_to_sync(group_send)`s a one-item `gateway.push` to the device's bucket,
with paho's auto-ack. Same table, same push groups, same dashboard consumer as
the real bridge; no batching, no coalescing, no back-pressure.

Run: `DATABASE_URL=… REDIS_URL=… MQTT_URL=… python -m bench.naive`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iotgw.settings")
    django.setup()

    import paho.mqtt.client as mqtt
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer
    from django.conf import settings
    from django.db import IntegrityError
    from django.utils import timezone

    from core.broker import BrokerConfig
    from core.errors import PayloadInvalid
    from core.payloads import parse_samples
    from core.push import PUSH_TYPE, bucket_group, bucket_of
    from core.topics import TELEMETRY, parse_topic
    from core.wire import telemetry_fragment
    from devices.models import Telemetry

    layer = get_channel_layer()
    broker = BrokerConfig.from_url(settings.MQTT_URL)
    counts = {"stored": 0, "rejected": 0}

    def on_message(_c, _u, msg) -> None:
        try:
            device_id, kind = parse_topic(msg.topic)
            if kind != TELEMETRY:
                return
            now = timezone.now()
            for sample in parse_samples(msg.payload, received_at=now, max_bytes=settings.IOTGW_MAX_PAYLOAD):
                Telemetry.objects.create(device_id=device_id, ts=sample.ts, data=sample.data, received_at=now)
                counts["stored"] += 1
                bucket = bucket_of(device_id, settings.IOTGW_PUSH_BUCKETS)
                async_to_sync(layer.group_send)(bucket_group(bucket), {
                    "type": PUSH_TYPE, "bucket": bucket, "status": {}, "frames": {},
                    "telemetry": {device_id: [telemetry_fragment(device_id, sample.ts_text, sample.data)]},
                })
        except (PayloadInvalid, IntegrityError):
            counts["rejected"] += 1

    ready = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=os.environ.get("MQTT_CLIENT_ID", "bench-naive"),
                         protocol=mqtt.MQTTv5)
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe("devices/+/telemetry", qos=1)
    client.on_subscribe = lambda *_: ready.set()
    client.connect(broker.host, broker.port, clean_start=True)
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.loop_start()
    if ready.wait(30):
        print("naive bridge ready", flush=True)
    try:
        while client.is_connected() or not ready.is_set():
            threading.Event().wait(0.5)
    finally:
        client.loop_stop()
        print(f"naive bridge stopped: {counts}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
