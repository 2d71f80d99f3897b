"""The telemetry export format, both ways: CSV and NDJSON lines written and parsed, pure (no ORM).

CSV has one row per metric value, `device,ts,metric,value`, with a header; `value` is the value's
JSON text (`21.5`, `true`, `null`, `"on"`), so a string that looks like a number stays a string.
NDJSON has one line per sample, `{"device": …, "ts": …, "data": {metric: value, …}}`. Both write
`ts` as core.times.format_ts does. A reader parses one line at a time and never raises for what a
line holds: a line it cannot take is a `Rejected` with a reason, so an import goes on past it.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Literal

import orjson

from core.errors import PayloadInvalid
from core.ids import DEVICE_ID_RE, METRIC_RE
from core.payloads import MAX_STRING, storable_text
from core.times import format_ts, parse_ts

Format = Literal["csv", "ndjson"]
FORMATS: tuple[Format, ...] = ("csv", "ndjson")
CSV_HEADER = ("device", "ts", "metric", "value")
CONTENT_TYPES: dict[Format, str] = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}
# A line longer than this is rejected unread (a sample's payload is at most IOTGW_MAX_PAYLOAD, 64 KiB).
MAX_LINE = 256 * 1024


@dataclass(frozen=True, slots=True)
class Row:
    """One sample read from a file: device id, time, metrics; `line` is where it started."""

    device_id: str
    ts: datetime
    data: dict[str, Any]
    line: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line the reader could not take, and why (`reason` is a short code, `message` for people)."""

    line: int
    reason: str
    message: str


# --- writing ------------------------------------------------------------------------------


def csv_header() -> bytes:
    """The CSV header line."""
    return (",".join(CSV_HEADER) + "\r\n").encode()


def csv_lines(device_id: str, ts: datetime, data: dict[str, Any]) -> bytes:
    """A sample as CSV rows, one per metric, in the order of `data`."""
    out = io.StringIO()
    writer = csv.writer(out)
    ts_text = format_ts(ts)
    for metric, value in data.items():
        writer.writerow((device_id, ts_text, metric, orjson.dumps(value).decode()))
    return out.getvalue().encode()


def ndjson_line(device_id: str, ts: datetime, data: dict[str, Any]) -> bytes:
    """A sample as one NDJSON line."""
    return orjson.dumps({"device": device_id, "ts": format_ts(ts), "data": data}) + b"\n"


# --- reading ------------------------------------------------------------------------------


def bounded_lines(stream: BinaryIO, *, max_line: int = MAX_LINE) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes without the line break) per line; None for a line over `max_line`, skipped unread."""
    number = 0
    while True:
        line = stream.readline(max_line + 1)
        if not line:
            return
        number += 1
        if len(line) > max_line and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # the rest of the long line, in bounded pieces
                line = stream.readline(max_line + 1)
            yield number, None
            continue
        yield number, line.rstrip(b"\r\n")


def detect_format(first_line: bytes) -> Format:
    """NDJSON when the first line is a JSON object, CSV otherwise."""
    return "ndjson" if first_line.lstrip().startswith(b"{") else "csv"


def read_rows(stream: BinaryIO, fmt: Format | None = None, *, max_line: int = MAX_LINE) -> Iterator[Row | Rejected]:
    """Every sample of an export file, or the rejection of a line; CSV rows of one (device, ts) in a row merge.

    The format is the first line's (detect_format) unless given; blank lines are passed over.
    """
    lines: Iterator[tuple[int, bytes | None]] = (
        (n, line) for n, line in bounded_lines(stream, max_line=max_line) if line is None or line.strip())
    first = next(lines, None)
    if first is None:
        return
    _, line = first
    fmt = fmt or (detect_format(line) if line is not None else "csv")
    if not (fmt == "csv" and line is not None and _is_csv_header(line)):
        lines = itertools.chain([first], lines)
    if fmt == "ndjson":
        for number, line in lines:
            yield parse_ndjson_line(line, number, max_line=max_line)
    else:
        yield from _merge_csv(parse_csv_line(line, number, max_line=max_line) for number, line in lines)


def _is_csv_header(line: bytes) -> bool:
    return line.strip().replace(b" ", b"").lower() == ",".join(CSV_HEADER).encode()


def parse_ndjson_line(line: bytes | None, number: int, *, max_line: int = MAX_LINE) -> Row | Rejected:
    """One NDJSON line: `{"device", "ts", "data": {metric: value}}`."""
    if line is None:
        return Rejected(number, "too_large", f"line over {max_line} bytes")
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return _undecodable(line, number)
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        return Rejected(number, "bad_row", 'a line must be an object {"device", "ts", "data": {metric: value}}')
    try:
        return Row(_device(doc.get("device")), _ts(doc.get("ts")), _data(doc["data"]), number)
    except PayloadInvalid as exc:
        return Rejected(number, exc.reason, str(exc))


def parse_csv_line(line: bytes | None, number: int, *, max_line: int = MAX_LINE) -> Row | Rejected:
    """One CSV line: `device,ts,metric,value` (value as JSON text; text that is not JSON is a string)."""
    if line is None:
        return Rejected(number, "too_large", f"line over {max_line} bytes")
    try:
        text = line.decode()
    except UnicodeDecodeError:
        return Rejected(number, "not_utf8", "line is not valid UTF-8")
    try:
        fields = next(csv.reader([text], strict=True))
    except (csv.Error, StopIteration) as exc:
        return Rejected(number, "bad_row", f"not a CSV row: {str(exc)[:80]}")
    if len(fields) != len(CSV_HEADER):
        return Rejected(number, "bad_row", f"a row has {len(CSV_HEADER)} fields (device,ts,metric,value), "
                                           f"not {len(fields)}")
    device, ts, metric, value = fields
    try:
        return Row(_device(device), _ts(ts), _data({metric: _csv_value(value)}), number)
    except PayloadInvalid as exc:
        return Rejected(number, exc.reason, str(exc))


def _merge_csv(items: Iterable[Row | Rejected]) -> Iterator[Row | Rejected]:
    """Consecutive rows of one (device, ts) are one sample, as the export writes them."""
    pending: Row | None = None
    for item in items:
        if isinstance(item, Row) and pending is not None and (item.device_id, item.ts) == (pending.device_id,
                                                                                          pending.ts):
            pending.data.update(item.data)
            continue
        if pending is not None:
            yield pending
            pending = None
        if isinstance(item, Row):
            pending = item
        else:
            yield item
    if pending is not None:
        yield pending


def _undecodable(line: bytes, number: int) -> Rejected:
    try:
        line.decode()
    except UnicodeDecodeError:
        return Rejected(number, "not_utf8", "line is not valid UTF-8")
    return Rejected(number, "not_json", "line is not valid JSON")


def _device(value: Any) -> str:
    if not isinstance(value, str) or not DEVICE_ID_RE.fullmatch(value):
        raise PayloadInvalid("bad_device", f"device {_shown(value)} is not a valid device id")
    return value


def _ts(value: Any) -> datetime:
    if isinstance(value, str) and value.isascii() and value.isdigit():  # epoch seconds or milliseconds as text
        value = int(value)
    try:
        return parse_ts(value)
    except PayloadInvalid as exc:
        raise PayloadInvalid("bad_ts", str(exc)) from None
    except (ValueError, OverflowError):
        raise PayloadInvalid("bad_ts", f"ts {_shown(value)} is out of range") from None


def _csv_value(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):  # nan, inf: a number a spreadsheet wrote, not a string
        raise PayloadInvalid("non_finite", f"value {_shown(text)} is not a finite number")
    return text


def _data(data: dict[str, Any]) -> dict[str, Any]:
    """The sample rules of SPEC §4 for each metric, with a reason of its own per broken rule."""
    if not data:
        raise PayloadInvalid("bad_row", "a sample needs at least one metric")
    for name, value in data.items():
        if not METRIC_RE.fullmatch(name) or name == "ts":
            raise PayloadInvalid("bad_metric", f"metric name {_shown(name)} is not valid")
        if value is None or isinstance(value, (bool, int)):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
                raise PayloadInvalid("bad_value", f"metric {name!r} is an integer beyond 64 bits")
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                raise PayloadInvalid("non_finite", f"metric {name!r} is not a finite number")
            continue
        if not isinstance(value, str):
            raise PayloadInvalid("bad_value", f"metric {name!r} must be a number, boolean, short string or null")
        if "\x00" in value:  # PostgreSQL refuses it in text and jsonb
            raise PayloadInvalid("nul", f"metric {name!r} holds a NUL character (\\u0000)")
        if not storable_text(value):
            raise PayloadInvalid("bad_value", f"metric {name!r} holds a lone surrogate")
        if len(value) > MAX_STRING:
            raise PayloadInvalid("too_large", f"metric {name!r} is a string over {MAX_STRING} characters")
    return data


def _shown(value: Any) -> str:
    return repr(value)[:80]


def encode(fmt: Format, samples: Iterable[tuple[str, datetime, dict[str, Any]]], *,
           chunk_bytes: int = 64 * 1024) -> Iterator[bytes]:
    """An export as chunks of about `chunk_bytes`: the CSV header first, then the samples as they come."""
    line = csv_lines if fmt == "csv" else ndjson_line
    parts: list[bytes] = [csv_header()] if fmt == "csv" else []
    size = sum(map(len, parts))
    for device_id, ts, data in samples:
        if not data:
            continue
        part = line(device_id, ts, data)
        parts.append(part)
        size += len(part)
        if size >= chunk_bytes:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)
