"""What the gateway publishes to Sparkplug edge nodes: NCMD/DCMD writes, rebirth requests, its own STATE."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import orjson

from core.errors import PayloadInvalid
from core.sparkplug.metrics import Skipped, infer_datatype, metric_name, set_value, value_of
from core.sparkplug.sparkplug_b_pb2 import DataType, Payload
from core.times import EPOCH

REBIRTH = "Node Control/Rebirth"
MAX_WRITES = 256
_MS = timedelta(milliseconds=1)


def epoch_ms(at: datetime) -> int:
    """An aware datetime as Sparkplug's epoch milliseconds."""
    return (at - EPOCH) // _MS


def rebirth_payload(at: datetime) -> bytes:
    """An NCMD asking an edge node to publish its NBIRTH and every DBIRTH again."""
    payload = Payload(timestamp=epoch_ms(at))
    metric = payload.metrics.add(name=REBIRTH)
    set_value(metric, DataType.Boolean, True)
    encoded: bytes = payload.SerializeToString()
    return encoded


def write_payload(params: Mapping[str, Any], *, names: Mapping[str, str], types: Mapping[str, int],
                  at: datetime) -> tuple[bytes, dict[str, Any]]:
    """An NCMD/DCMD writing `params` (metric → value), and the values a later DATA must report to confirm it.

    A param is named as the dashboard shows the metric (`Inputs.Temperature`) or as the edge node does
    (`Inputs/Temperature`); its datatype is the one the BIRTH declared, else inferred from the value.
    """
    if not params:
        raise PayloadInvalid("bad_command", "a Sparkplug command writes metrics: params must name at least one")
    if len(params) > MAX_WRITES:
        raise PayloadInvalid("bad_command", f"a Sparkplug command writes at most {MAX_WRITES} metrics")
    payload = Payload(timestamp=epoch_ms(at))
    expected: dict[str, Any] = {}
    for name, value in params.items():
        native = names.get(name, name)
        datatype = types.get(native)
        metric = payload.metrics.add(name=native)
        set_value(metric, datatype if datatype is not None else infer_datatype(value), value)
        try:
            expected[metric_name(native)] = value_of(metric, metric.datatype)
        except Skipped:  # a name no sample can carry: the write goes out, but no DATA can confirm it
            expected[native] = value
    return payload.SerializeToString(), expected


def state_payload(*, online: bool, at: datetime) -> bytes:
    """The primary host's STATE (Sparkplug 3.0): `{"online": …, "timestamp": ms}`, published retained."""
    return orjson.dumps({"online": online, "timestamp": epoch_ms(at)})
