"""Properties of the export format: whatever a file holds, each line is a sample or a rejection, never an error;
what the export writes reads back as it was."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.ids import DEVICE_ID_RE, METRIC_RE
from core.payloads import MAX_STRING
from core.transfer import Rejected, Row, csv_header, csv_lines, encode, ndjson_line, read_rows

REASONS = {"bad_device", "bad_ts", "bad_metric", "bad_value", "non_finite", "nul", "too_large", "not_json",
           "not_utf8", "bad_row"}

device_ids = st.from_regex(DEVICE_ID_RE, fullmatch=True)
metric_names = st.from_regex(METRIC_RE, fullmatch=True).filter(lambda m: m != "ts")
values = (st.none() | st.booleans() | st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1)
          | st.floats(allow_nan=False, allow_infinity=False)
          | st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=MAX_STRING))
times = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))
samples = st.tuples(device_ids, times, st.dictionaries(metric_names, values, min_size=1, max_size=4))

junk_fields = (st.text(max_size=40) | st.sampled_from(["nan", "inf", "-Infinity", "1e999", '"a\\u0000b"', "\x00",
                                                       "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                                       "99999999999999999999", "²", "", "ts"]))
csv_junk = st.lists(junk_fields, min_size=0, max_size=6).map(lambda fs: ",".join(fs).encode(errors="surrogateescape"))
json_junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                                     max_size=3), max_leaves=10)
ndjson_junk = (st.fixed_dictionaries({"device": json_junk | device_ids, "ts": json_junk | st.just(1767225600000),
                                      "data": json_junk | st.dictionaries(st.text(max_size=70), json_junk)})
               .map(lambda d: json.dumps(d).encode()))
files = st.lists(st.binary(max_size=80) | csv_junk | ndjson_junk, max_size=8).map(lambda ls: b"\n".join(ls))


def read_all(data: bytes, fmt=None, max_line: int = 256 * 1024) -> list[Row | Rejected]:
    return list(read_rows(io.BytesIO(data), fmt, max_line=max_line))


@settings(max_examples=500, deadline=None)
@given(files, st.sampled_from([None, "csv", "ndjson"]))
@example(b'{"device": "d", "ts": "2026-01-01T00:00:00+00:00", "data": {"x": NaN}}', None)
@example(b"d,2026-01-01T00:00:00+00:00,x,nan", "csv")
@example(b'd,2026-01-01T00:00:00+00:00,x,"""a\\u0000b"""', "csv")
@example(b"d,2026-01-01T00:00:00+00:00,x,\xff", "csv")
@example(b"d,0001-01-01T00:00:00+14:00,x,1", "csv")
def test_every_line_is_a_sample_or_a_rejection_with_a_known_reason(data, fmt):
    for item in read_all(data, fmt):
        if isinstance(item, Rejected):
            assert item.reason in REASONS and item.line >= 1 and item.message
        else:
            assert DEVICE_ID_RE.fullmatch(item.device_id) and item.ts.tzinfo is not None and item.data
            assert all(METRIC_RE.fullmatch(m) for m in item.data)
            assert "\x00" not in json.dumps(item.data, ensure_ascii=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(samples, max_size=6), st.sampled_from(["csv", "ndjson"]))
def test_what_the_export_writes_reads_back_as_it_was(batch, fmt):
    # One sample per (device, ts), as stored; CSV merges the rows of one sample back together.
    unique = list({(d, ts): (d, ts, data) for d, ts, data in batch}.values())
    data = b"".join(encode(fmt, unique, chunk_bytes=50))
    back = read_all(data)
    assert all(isinstance(r, Row) for r in back), [r for r in back if isinstance(r, Rejected)]
    assert [(r.device_id, r.ts, r.data) for r in back] == unique


def test_a_string_that_looks_like_a_number_stays_a_string():
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    data = csv_header() + csv_lines("d1", ts, {"code": "007", "n": 7, "on": True, "none": None})
    (row,) = read_all(data)
    assert row.data == {"code": "007", "n": 7, "on": True, "none": None}


def test_a_hand_written_csv_takes_bare_text_and_epoch_milliseconds():
    (row,) = read_all(b"device,ts,metric,value\nd1,1767225600000,state,on\nd1,1767225600000,t,21.5\n")
    assert row.ts == datetime(2026, 1, 1, tzinfo=UTC) and row.data == {"state": "on", "t": 21.5}


def test_a_line_over_the_limit_is_rejected_and_the_next_one_read():
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    data = b"x" * 5000 + b"\n" + ndjson_line("d1", ts, {"t": 1})
    first, second = read_all(data, "ndjson", max_line=1000)
    assert isinstance(first, Rejected) and first.reason == "too_large" and first.line == 1
    assert isinstance(second, Row) and second.line == 2 and second.data == {"t": 1}


def test_rejections_name_the_rule_broken():
    lines = [b"device,ts,metric,value", b"bad/id,2026-01-01T00:00:00+00:00,t,1", b"d1,yesterday,t,1",
             b"d1,2026-01-01T00:00:00+00:00,t,inf", b'd1,2026-01-01T00:00:00+00:00,t,"""\\u0000"""',
             b"d1,2026-01-01T00:00:00+00:00,t,[1]", b"d1,2026-01-01T00:00:00+00:00,bad metric,1",
             b"d1,2026-01-01T00:00:00+00:00,t", b"d1,2026-01-01T00:00:00+00:00,t," + b'"""' + b"x" * 300 + b'"""']
    reasons = [r.reason for r in read_all(b"\n".join(lines))]
    assert reasons == ["bad_device", "bad_ts", "non_finite", "nul", "bad_value", "bad_metric", "bad_row", "too_large"]
