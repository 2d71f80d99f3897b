"""Sparkplug B payloads as an edge node builds them, with the generated protobuf classes (tests and bench)."""

from __future__ import annotations

from typing import Any

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

    def __init__(self, *, bdseq: int = 0, now_ms: int = 1_764_590_400_000) -> None:
        self.bdseq = bdseq
        self.seq = 0
        self.now_ms = now_ms

    def _payload(self, metrics: list[dict[str, Any]], *, seq: int | None) -> bytes:
        payload = Payload(timestamp=self.now_ms)
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
