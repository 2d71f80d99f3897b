"""Sparkplug B payloads as an edge node builds them, with the generated protobuf classes (tests and bench)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from core.broker import BrokerConfig
from core.sparkplug.sparkplug_b_pb2 import DataType, Payload

# (name, datatype, value[, alias]) → a Metric; a value of None is sent as is_null.
MetricSpec = tuple[Any, ...]

_FIELDS = {
    DataType.Float: "float_value", DataType.Double: "double_value", DataType.Boolean: "boolean_value",
    DataType.String: "string_value", DataType.Text: "string_value", DataType.UUID: "string_value",
    DataType.DateTime: "long_value", DataType.Int64: "long_value", DataType.UInt64: "long_value",
}


def metric(payload: Payload, *, name: str | None = None, alias: int | None = None, datatype: int | None = None,
           value: Any = None, timestamp: int | None = None, null: bool = False) -> Payload.Metric:
    """Add one metric, its value put in the field its datatype uses (integers width-wrapped, as Tahu does)."""
    m = payload.metrics.add()
    if name is not None:
        m.name = name
    if alias is not None:
        m.alias = alias
    if datatype is not None:
        m.datatype = datatype
    if timestamp is not None:
        m.timestamp = timestamp
    if null:
        m.is_null = True
    elif value is not None:
        field = _FIELDS.get(datatype, "int_value") if datatype is not None else _field_of(value)
        if field in ("int_value", "long_value") and isinstance(value, int) and value < 0:
            value += 1 << (64 if field == "long_value" else {1: 8, 2: 16, 3: 32}.get(datatype or 3, 32))
        setattr(m, field, value)
    return m


def _field_of(value: Any) -> str:
    """The field a DATA message without a datatype puts a value in (the BIRTH declared its type)."""
    if isinstance(value, bool):
        return "boolean_value"
    if isinstance(value, float):
        return "double_value"
    if isinstance(value, str):
        return "string_value"
    return "int_value" if -(2**31) <= value < 2**32 else "long_value"


class EdgeNode:
    """Builds an edge node's payloads: `seq` counts 0–255 across its node and device messages, as the spec says."""

    def __init__(self, *, bdseq: int = 0, now_ms: int | None = 1_764_590_400_000) -> None:
        self.bdseq = bdseq
        self.seq = 0
        self.now_ms = now_ms  # None: the clock, a millisecond later at least per message (samples never share a time)
        self._last_ms = 0

    def _timestamp(self) -> int:
        if self.now_ms is not None:
            return self.now_ms
        self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
        return self._last_ms

    def _payload(self, metrics: list[dict[str, Any]], *, seq: int | None) -> bytes:
        payload = Payload(timestamp=self._timestamp())
        if seq is not None:
            payload.seq = seq
        for spec in metrics:
            metric(payload, **spec)
        return payload.SerializeToString()

    def nbirth(self, metrics: list[dict[str, Any]]) -> bytes:
        """NBIRTH: seq starts again at 0; bdSeq and Node Control/Rebirth come first."""
        self.seq = 0
        head = [{"name": "bdSeq", "datatype": DataType.Int64, "value": self.bdseq},
                {"name": "Node Control/Rebirth", "datatype": DataType.Boolean, "value": False}]
        return self._payload(head + metrics, seq=0)

    def next(self, metrics: list[dict[str, Any]]) -> bytes:
        """NDATA, DBIRTH, DDATA or DDEATH: the next seq."""
        self.seq = (self.seq + 1) % 256
        return self._payload(metrics, seq=self.seq)

    def skip(self, n: int = 1) -> None:
        """Lose `n` messages: the next one shows a gap."""
        self.seq = (self.seq + n) % 256

    def ndeath(self) -> bytes:
        """NDEATH (the MQTT will): no seq, the bdSeq of its NBIRTH."""
        return self._payload([{"name": "bdSeq", "datatype": DataType.Int64, "value": self.bdseq}], seq=None)


class MqttEdgeNode:
    """A real paho client acting as a Sparkplug edge node: its NDEATH is its will, it records NCMD and DCMD."""

    def __init__(self, url: str, *, group: str, edge: str, bdseq: int = 0, now_ms: int | None = None) -> None:
        config = BrokerConfig.from_url(url)
        self.group, self.edge = group, edge
        self.node = EdgeNode(bdseq=bdseq, now_ms=now_ms)
        self.commands: list[tuple[str, Payload]] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-{edge}-{uuid.uuid4().hex[:4]}",
                                  protocol=mqtt.MQTTv311, clean_session=True)
        # Sparkplug: the NDEATH is registered as the will, with the bdSeq the NBIRTH will carry.
        self.client.will_set(self.topic("NDEATH"), self.node.ndeath(), qos=1, retain=False)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect(config.host, config.port)
        self.client.loop_start()
        self.client.subscribe([(f"spBv1.0/{group}/NCMD/{edge}", 0), (f"spBv1.0/{group}/DCMD/{edge}/+", 0)])
        assert subscribed.wait(10), "the edge node could not subscribe to its commands"

    def topic(self, kind: str, device: str = "") -> str:
        return f"spBv1.0/{self.group}/{kind}/{self.edge}" + (f"/{device}" if device else "")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._cond:
            self.commands.append((msg.topic, Payload.FromString(msg.payload)))
            self._cond.notify_all()

    def publish(self, kind: str, payload: bytes, device: str = "") -> None:
        """Publish at QoS 0 as Sparkplug edge nodes do (the broker keeps the order of one client's messages)."""
        self.client.publish(self.topic(kind, device), payload, qos=0).wait_for_publish(10)

    def wait_command(self, topic: str, match: Any = None, timeout: float = 15.0) -> Payload:
        """Wait for an NCMD or DCMD on `topic` (that `match` accepts, if given)."""
        def found() -> Payload | None:
            return next((p for t, p in self.commands if t == topic and (match is None or match(p))), None)

        with self._cond:
            assert self._cond.wait_for(lambda: found() is not None, timeout), f"no command on {topic}"
            return found()  # type: ignore[return-value]

    def die(self) -> None:
        """Drop the connection without a DISCONNECT, so that the broker publishes the will (the NDEATH)."""
        self.client.loop_stop()
        self.client.socket().close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
