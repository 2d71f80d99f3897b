"""History at scale: a synthetic history, a 30-day aggregate, its export in flat memory, an idempotent re-import.

    .venv/bin/python -m bench.export [--quick] [--database-url postgres://…/iotgw_bench_export]
    make bench BENCH_ARGS="--only export"       # the same, as a phase of the benchmark

Works in a database of its own (the bench's name + `_export`), so the other phases' tables stay
small. The history is made by `manage.py synthhistory` (100 devices x 30 days, one sample every
26 s: 9.97 million rows; --quick: 1/10 of it) and kept between runs: a run that finds it already
there says so and reuses it. Every step runs the real command as a subprocess; the export's peak
RSS is sampled with psutil every 50 ms, at two sizes ten times apart. Prints and returns a dict.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.stack import ensure_database, migrate

ROOT = Path(__file__).resolve().parent.parent
DEVICES, DAYS = 100, 30
INTERVAL = {"full": 26.0, "quick": 260.0}
PREFIX = "synth-"


def _db_url(bench_url: str) -> str:
    base, name = bench_url.rsplit("/", 1)
    return f"{base}/{name}_export"


def _manage(env: dict[str, str], *args: str, stdout=subprocess.DEVNULL) -> tuple[float, int, str]:
    """Run a manage.py command; (seconds, peak RSS in bytes of it, its stdout if captured)."""
    began = time.monotonic()
    proc = subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=env, stdout=stdout,
                            stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode not in (0, 1):  # importtelemetry exits 1 when it rejected lines
        raise RuntimeError(f"manage.py {' '.join(args)} failed: {err[-2000:]}")
    return time.monotonic() - began, peak, out or ""


def _rows(url: str, device_ids: list[str] | None = None) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        if device_ids is None:
            return conn.execute("SELECT count(*) FROM devices_telemetry").fetchone()[0]
        return conn.execute("SELECT count(*) FROM devices_telemetry WHERE device_id = ANY(%s)",
                            [device_ids]).fetchone()[0]


# Timed inside a Django process on the export database: telemetry_aggregate as the API calls it.
_AGGREGATE = """
import json, statistics, sys, time
from datetime import timedelta
import django
django.setup()
from django.utils import timezone
from devices.aggregates import bucket_for, telemetry_aggregate
device, repeats = sys.argv[1], int(sys.argv[2])
until = timezone.now()
since = until - timedelta(days=30)
out = {}
for label, bucket in (("hourly", 3600), ("600_points", bucket_for(until - since, 600))):
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        agg = telemetry_aggregate(device_id=device, metric="temp", since=since, until=until, bucket=bucket)
        times.append((time.perf_counter() - began) * 1000)
    out[label] = {"bucket_s": bucket, "tier": agg.tier, "buckets": len(agg.buckets),
                  "samples": sum(b.count for b in agg.buckets), "median_ms": round(statistics.median(times), 1),
                  "min_ms": round(min(times), 1)}
print(json.dumps(out))
"""


def aggregate_ms(env: dict[str, str], device_id: str, repeats: int = 7) -> dict:
    """A 30-day aggregate of one metric of one device (warm; the median of `repeats`), per bucket size."""
    run = subprocess.run([sys.executable, "-c", _AGGREGATE, device_id, str(repeats)], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def measure(*, database_url: str, quick: bool = False, env: dict[str, str] | None = None) -> dict:
    """The whole phase; `database_url` is the bench's, and this phase uses `<its name>_export`."""
    url = _db_url(database_url)
    env = dict(env or os.environ, DATABASE_URL=url, DJANGO_SETTINGS_MODULE="iotgw.settings", DJANGO_DEBUG="0")
    env.setdefault("DJANGO_SECRET_KEY", "bench-export-" + "x" * 40)
    ensure_database(url, url.rsplit("/", 1)[1])
    migrate(env)
    interval = INTERVAL["quick" if quick else "full"]
    expected = DEVICES * round(DAYS * 86400 / interval)
    result: dict = {"database": url.rsplit("/", 1)[1], "devices": DEVICES, "days": DAYS, "interval_s": interval}
    present = _rows(url)
    if present >= 0.99 * expected:
        result["generated"] = {"reused": True, "rows": present}
    else:
        seconds, _, out = _manage(env, "synthhistory", "--devices", str(DEVICES), "--days", str(DAYS),
                                  "--interval", str(interval), "--prefix", PREFIX, "--no-progress",
                                  stdout=subprocess.PIPE)
        written = int(out.split()[0])
        result["generated"] = {"reused": False, "rows": _rows(url), "written": written, "seconds": round(seconds, 1),
                               "rows_per_s": round(written / seconds)}
    print(f"   history: {result['generated']}", flush=True)
    result["aggregate_30d"] = aggregate_ms(env, f"{PREFIX}0000")
    print(f"   30-day aggregate: {result['aggregate_30d']}", flush=True)
    result["export"] = _exports(env, url)
    result["reimport"] = _reimport(env, url)
    return result


def _exports(env: dict[str, str], url: str) -> dict:
    """Export 1/10 of the devices and then all of them to /dev/null; their peak RSS should be alike."""
    out = {}
    for label, ids in (("tenth", [f"{PREFIX}{i:04d}" for i in range(DEVICES // 10)]), ("all", None)):
        args = ["exporttelemetry", "--format", "csv", "-o", os.devnull]
        for device_id in ids or []:
            args += ["--device", device_id]
        seconds, peak, _ = _manage(env, *args)
        rows = _rows(url, ids)
        out[label] = {"rows": rows, "seconds": round(seconds, 1), "rows_per_s": round(rows / seconds),
                      "peak_rss_mib": round(peak / 2**20, 1)}
        print(f"   export {label}: {out[label]}", flush=True)
    out["peak_rss_ratio"] = round(out["all"]["peak_rss_mib"] / out["tenth"]["peak_rss_mib"], 2)
    out["rows_ratio"] = round(out["all"]["rows"] / out["tenth"]["rows"], 1)
    return out


def _reimport(env: dict[str, str], url: str) -> dict:
    """Export 1/10 of the history as NDJSON and import it back: every sample is skipped, none is added."""
    ids = [f"{PREFIX}{i:04d}" for i in range(DEVICES // 10)]
    before = _rows(url)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tenth.ndjson"
        args = ["exporttelemetry", "--format", "ndjson", "-o", str(path)]
        for device_id in ids:
            args += ["--device", device_id]
        _manage(env, *args)
        seconds, peak, out = _manage(env, "importtelemetry", str(path), "--no-progress", stdout=subprocess.PIPE)
    summary = dict(line.strip().split(": ", 1) for line in out.splitlines() if ": " in line)
    result = {"rows_in_file": _rows(url, ids), "seconds": round(seconds, 1), "peak_rss_mib": round(peak / 2**20, 1),
              "imported": int(summary.get("imported", -1)), "skipped": int(summary.get("skipped (already stored)", -1)),
              "rows_added": _rows(url) - before}
    result["rows_per_s"] = round(result["rows_in_file"] / seconds)
    print(f"   re-import: {result}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a tenth of the history (about a million rows)")
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                            "postgres://postgres@127.0.0.1:5432/iotgw_bench"))
    args = p.parse_args(argv)
    print(json.dumps(measure(database_url=args.database_url, quick=args.quick), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
