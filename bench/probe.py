"""Does the broker honour a v5 client's Receive Maximum? (The bridge's back-pressure depends on it.)"""

from __future__ import annotations

import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def receive_maximum_probe(host: str, port: int, *, receive_maximum: int = 200, extra: int = 300,
                          share_group: str = "benchprobe") -> dict:
    """Subscribe (shared, manual acks) with a Receive Maximum, ack nothing, publish more: count what arrives."""
    topic = f"benchprobe/{uuid.uuid4().hex[:8]}"
    got = 0

    def on_message(_c, _u, _m) -> None:
        nonlocal got
        got += 1

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:6]}",
                      protocol=mqtt.MQTTv5, manual_ack=True)
    sub.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = receive_maximum
    sub.connect(host, port, clean_start=True, properties=props)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    pub.max_inflight_messages_set(1000)
    try:
        time.sleep(0.2)
        sub.subscribe(f"$share/{share_group}/{topic}", qos=1)
        time.sleep(0.3)
        pub.connect(host, port)
        pub.loop_start()
        infos = [pub.publish(topic, b"x", qos=1) for _ in range(receive_maximum + extra)]
        for info in infos:
            info.wait_for_publish(10)
        time.sleep(1.0)
    finally:
        pub.disconnect()
        pub.loop_stop()
        sub.disconnect()
        sub.loop_stop()
    return {"receive_maximum": receive_maximum, "published": receive_maximum + extra, "in_flight_unacked": got,
            "honoured": got == receive_maximum}
