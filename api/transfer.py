"""Telemetry export and import on the JSON API (docs/history-export.md): streamed, for devices the caller may see."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Literal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, StreamingHttpResponse
from ninja import Field, Query, Router, Schema

from api.devices import _time
from api.errors import errors
from core.errors import DeviceUnknown, PayloadInvalid
from core.ids import DEVICE_ID_RE, METRIC_RE
from core.times import MAX_TS_TEXT
from core.transfer import CONTENT_TYPES, encode, read_rows
from devices.selectors import device_ids_visible_to, telemetry_samples
from devices.services.telemetry_import import telemetry_import

router = Router(tags=["telemetry"])

# Characters of `devices` and `metrics`: percent-encoded (up to 9 bytes a character), both must fit in the
# 16 KiB request line Daphne (Twisted) takes, or the connection is dropped without an answer. For more
# devices, leave `devices` out (all you may see) or use manage.py exporttelemetry.
MAX_LIST = 800


class ExportQuery(Schema):
    format: Literal["csv", "ndjson"] = Field("csv", description="`csv` (device,ts,metric,value) or `ndjson`")
    devices: str | None = Field(None, max_length=MAX_LIST,
                                description="comma-separated device ids; default: every device you may see")
    metrics: str | None = Field(None, max_length=MAX_LIST, description="comma-separated metrics; default: all")
    since: str | None = Field(None, max_length=MAX_TS_TEXT,
                              description="inclusive; ISO-8601 with offset, or epoch s (below 10^10) or ms")
    until: str | None = Field(None, max_length=MAX_TS_TEXT,
                              description="exclusive; ISO-8601 with offset, or epoch s (below 10^10) or ms")


class ImportQuery(Schema):
    format: Literal["csv", "ndjson"] | None = Field(None, description="default: detected from the first line")


class Rejection(Schema):
    line: int
    reason: str = Field(..., description="`bad_device`, `bad_ts`, `bad_metric`, `bad_value`, `non_finite`, `nul`, "
                                         "`too_large`, `not_json`, `not_utf8`, `bad_row`, `unknown_device`")
    message: str


class ImportSummaryOut(Schema):
    imported: int = Field(..., description="samples stored")
    skipped: int = Field(..., description="samples already stored for their (device, ts), left as they were")
    rejected: dict[str, int] = Field(..., description="lines refused, by reason")
    examples: list[Rejection] = Field(..., description="the first rejections (up to 20), with their line")


def _names(text: str | None, pattern, what: str) -> list[str] | None:
    if text is None or not text.strip():
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = next((n for n in names if not pattern.fullmatch(n)), None)
    if bad is not None:
        raise PayloadInvalid("bad_request", f"{what} {bad[:80]!r} is not valid")
    return names


_EXPORT_OPENAPI = {"responses": {200: {"description": "the export, streamed", "content": {
    "text/csv": {"schema": {"type": "string"}}, "application/x-ndjson": {"schema": {"type": "string"}}}}}}


@router.get("/telemetry/export", response={200: None, **errors(400, 401, 404)}, openapi_extra=_EXPORT_OPENAPI,
            summary="Stream the telemetry of devices you may see as CSV or NDJSON")
def export_telemetry(request: HttpRequest, q: Query[ExportQuery]):
    wanted = _names(q.devices, DEVICE_ID_RE, "device")
    metrics = _names(q.metrics, METRIC_RE, "metric")
    since, until = _time("since", q.since), _time("until", q.until)
    visible = device_ids_visible_to(request.auth, wanted)
    if wanted is not None and len(visible) < len(set(wanted)):  # a hidden device is as absent as a missing one
        raise DeviceUnknown(f"no device {next(d for d in wanted if d not in visible)!r}")
    chunks = encode(q.format, telemetry_samples(device_ids=visible, metrics=metrics, since=since, until=until))
    response = StreamingHttpResponse(_async_chunks(chunks), content_type=CONTENT_TYPES[q.format])
    response["Content-Disposition"] = f'attachment; filename="telemetry-{_stamp(since)}.{q.format}"'
    return response


def _stamp(since: datetime | None) -> str:
    return since.strftime("%Y%m%dT%H%M%SZ") if since is not None and since.year >= 1000 else "all"


async def _async_chunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """The export's pages read one at a time on the request's database thread, as the client takes them.

    Django serves a synchronous iterator under ASGI by reading it all into a list first; this keeps
    one chunk in memory, and a client that reads slowly slows the reading down.
    """
    step = sync_to_async(next, thread_sensitive=True)
    try:
        while (chunk := await step(chunks, None)) is not None:
            yield chunk
    finally:
        await sync_to_async(getattr(chunks, "close", lambda: None), thread_sensitive=True)()


_IMPORT_OPENAPI = {"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string"}}, "application/x-ndjson": {"schema": {"type": "string"}}}},
    "description": "The body is an export (`GET /api/telemetry/export`'s formats), up to IOTGW_IMPORT_MAX_BYTES; "
                   "it is read line by line. Samples already stored for their (device, ts) are skipped, so a "
                   "retry is harmless. Lines for devices you may not see are rejected as `unknown_device`."}


class _Limited:
    """The request body, read line by line, up to `limit` bytes (a body without Content-Length may be longer)."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        self.request, self.left, self.cut = request, limit, False

    def readline(self, size: int = -1) -> bytes:
        if self.left <= 0:
            self.cut = self.cut or bool(self.request.read(1))
            return b""
        line = self.request.readline(min(size, self.left) if size >= 0 else self.left)
        self.left -= len(line)
        return line


@router.post("/telemetry/import", response={200: ImportSummaryOut, **errors(400, 401, 413)},
             openapi_extra=_IMPORT_OPENAPI, summary="Import telemetry from a CSV or NDJSON export")
def import_telemetry(request: HttpRequest, q: Query[ImportQuery]):
    limit = settings.IOTGW_IMPORT_MAX_BYTES
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > limit:  # refused before the body is read
        raise PayloadInvalid("too_large", f"body of {declared} bytes is over the {limit}-byte limit")
    body = _Limited(request, limit)
    summary = telemetry_import(rows=read_rows(body, q.format), user=request.auth)  # type: ignore[arg-type]
    answer = summary.as_dict()
    if body.cut:
        answer["rejected"]["too_large"] = answer["rejected"].get("too_large", 0) + 1
        answer["examples"].append({"line": 0, "reason": "too_large",
                                   "message": f"body over {limit} bytes: the rest was not read"})
    return answer
