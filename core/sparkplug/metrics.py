"""Sparkplug B metric values both ways: a protobuf Metric to a sample value, and a command value to a Metric."""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from core.errors import PayloadInvalid
from core.ids import METRIC_RE
from core.payloads import MAX_STRING, storable_text
from core.sparkplug.sparkplug_b_pb2 import DataType, Payload
from core.times import EPOCH, format_ts

Metric = Payload.Metric

# The datatypes as plain ints, read once (an attribute of the generated enum wrapper is a slow lookup).
INT8, INT16, INT32, INT64 = DataType.Int8, DataType.Int16, DataType.Int32, DataType.Int64
UINT8, UINT16, UINT32, UINT64 = DataType.UInt8, DataType.UInt16, DataType.UInt32, DataType.UInt64
FLOAT, DOUBLE, BOOLEAN, DATETIME = DataType.Float, DataType.Double, DataType.Boolean, DataType.DateTime
STRING, TEXT, UUID, UNKNOWN = DataType.String, DataType.Text, DataType.UUID, DataType.Unknown
SIGNED_BITS: dict[int, int] = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}
UNSIGNED_BITS: dict[int, int] = {UINT8: 8, UINT16: 16, UINT32: 32, UINT64: 64}
INTEGER_TYPES: dict[int, int] = {**SIGNED_BITS, **UNSIGNED_BITS}
TEXT_TYPES = frozenset((STRING, TEXT, UUID))
# A metric without a declared datatype: the type its value field implies.
FIELD_TYPES = {"int_value": UINT32, "long_value": UINT64, "float_value": FLOAT, "double_value": DOUBLE,
               "boolean_value": BOOLEAN, "string_value": STRING}
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

_NOT_METRIC_CHAR = re.compile(r"[^A-Za-z0-9_.:-]")


class Skipped(Exception):
    """A metric the gateway cannot store as a sample; `why` is what it is counted under."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def text(value: str | bytes) -> str:
    """A protobuf string field's text: proto2 hands invalid UTF-8 over as bytes, which is skipped."""
    if isinstance(value, bytes):
        raise Skipped("not_utf8")
    return value


def metric_name(name: str) -> str:
    """A Sparkplug metric name as an iotgw metric: folders `/` become `.`, other characters `_`."""
    mapped = _NOT_METRIC_CHAR.sub("_", name.replace("/", "."))
    if not METRIC_RE.match(mapped):
        raise Skipped("name_invalid")
    return mapped


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds (Sparkplug's timestamps) as an aware UTC datetime."""
    return EPOCH + timedelta(milliseconds=ms)


def _signed(value: int, bits: int) -> int:
    # Senders put Int8..Int32 in the uint32 field width-wrapped (Tahu: -1 → 255) or sign-extended (-1 → 2**32-1).
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _integer(datatype: int, field: str, raw: Any) -> Any:
    if field != "int_value" and field != "long_value":
        raise Skipped("type_mismatch")
    bits = INTEGER_TYPES[datatype]
    return _signed(raw, bits) if datatype in SIGNED_BITS else raw & ((1 << bits) - 1)


def _real(_datatype: int, field: str, raw: Any) -> Any:
    if field != "float_value" and field != "double_value":
        raise Skipped("type_mismatch")
    if not math.isfinite(raw):
        raise Skipped("not_finite")
    return raw


def _boolean(_datatype: int, field: str, raw: Any) -> Any:
    if field != "boolean_value":
        raise Skipped("type_mismatch")
    return raw


def _datetime(_datatype: int, field: str, raw: Any) -> Any:
    if field != "long_value":
        raise Skipped("type_mismatch")
    if raw > MAX_MS:
        raise Skipped("bad_timestamp")
    return format_ts(ms_to_datetime(raw))


def _text(_datatype: int, field: str, raw: Any) -> Any:
    if field != "string_value":
        raise Skipped("type_mismatch")
    raw = text(raw)
    if len(raw) > MAX_STRING or not storable_text(raw):
        raise Skipped("string_unstorable")
    return raw


# The types a sample can hold, and how each is read; the rest (DataSet, Bytes, File, Template, PropertySet,
# the arrays) are skipped.
READERS: dict[int, Callable[[int, str, Any], Any]] = {
    **dict.fromkeys(INTEGER_TYPES, _integer), FLOAT: _real, DOUBLE: _real, BOOLEAN: _boolean, DATETIME: _datetime,
    **dict.fromkeys(TEXT_TYPES, _text)}


def value_of(metric: Metric, datatype: int) -> Any:
    """The value a sample stores for this metric of this datatype; raises Skipped."""
    reader = READERS.get(datatype)
    if reader is None:
        raise Skipped("unsupported_type")
    if metric.is_null:
        return None
    field = metric.WhichOneof("value")
    if field is None:
        raise Skipped("no_value")
    return reader(datatype, field, getattr(metric, field))


def datatype_of(metric: Metric, declared: int | None) -> int:
    """The metric's datatype: its own, else the one its BIRTH declared, else what its value field implies."""
    if metric.HasField("datatype"):
        return metric.datatype
    if declared is not None:
        return declared
    field = metric.WhichOneof("value")
    return FIELD_TYPES.get(field or "", UNKNOWN)


def infer_datatype(value: Any) -> int:
    """The datatype a command value is sent as when the BIRTH declared none."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INT64 if value < 2**63 else UINT64
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, str):
        return STRING
    raise PayloadInvalid("bad_command", f"a {type(value).__name__} cannot be a Sparkplug metric value")


def set_value(metric: Metric, datatype: int, value: Any) -> None:
    """Put a command value into `metric` as `datatype`; PayloadInvalid (`bad_command`) when it does not fit."""
    metric.datatype = datatype
    if value is None:
        metric.is_null = True
        return
    if datatype in INTEGER_TYPES:
        _set_integer(metric, datatype, value)
    elif datatype in (FLOAT, DOUBLE):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PayloadInvalid("bad_command", f"{metric.name!r} takes a finite number")
        if datatype == FLOAT:
            try:
                struct.pack("<f", value)
            except OverflowError:
                raise PayloadInvalid("bad_command", f"{metric.name!r} is out of a Float's range") from None
            metric.float_value = float(value)
        else:
            metric.double_value = float(value)
    elif datatype == BOOLEAN:
        if not isinstance(value, bool):
            raise PayloadInvalid("bad_command", f"{metric.name!r} takes true or false")
        metric.boolean_value = value
    elif datatype in TEXT_TYPES:
        if not isinstance(value, str):
            raise PayloadInvalid("bad_command", f"{metric.name!r} takes a string")
        metric.string_value = value
    else:
        raise PayloadInvalid("bad_command", f"{metric.name!r} is of a type commands cannot write ({datatype})")


def _set_integer(metric: Metric, datatype: int, value: Any) -> None:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadInvalid("bad_command", f"{metric.name!r} takes an integer")
    bits = INTEGER_TYPES[datatype]
    low, high = (-(1 << (bits - 1)), 1 << (bits - 1)) if datatype in SIGNED_BITS else (0, 1 << bits)
    if not low <= value < high:
        raise PayloadInvalid("bad_command", f"{metric.name!r} takes an integer in [{low}, {high})")
    wrapped = value % (1 << bits)  # two's complement in the field's width, as Tahu writes it
    if bits == 64:
        metric.long_value = wrapped
    else:
        metric.int_value = wrapped
