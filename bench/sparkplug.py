"""The Sparkplug B dialect's decoding cost, in process: DDATA by alias against the iotgw JSON dialect, same metrics.

    .venv/bin/python -m bench.sparkplug [--quick]
    make bench BENCH_ARGS="--only sparkplug"     # the same, as a phase of the benchmark

No services: it times the two pure decoders (core/sparkplug/decoder.py, core/dialect.py) over
pre-built messages of 1, 5 and 20 metrics, the way the pipeline calls them inside a batch.
Prints and returns a dict (messages per second of each, and Sparkplug's cost relative to JSON).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

import orjson

from core.dialect import IotgwDecoder
from core.sparkplug.decoder import SparkplugDecoder
from core.sparkplug.sparkplug_b_pb2 import DataType
from testing.sparkplug import EdgeNode

TOPIC = "spBv1.0/Bench/DDATA/Edge1/Dev1"


def _rate(decode, messages: list[bytes], topic: str, now: datetime) -> float:
    start = time.perf_counter()
    for message in messages:
        decode(topic, message, received_at=now)
    return len(messages) / (time.perf_counter() - start)


def _one(metrics: int, count: int) -> dict:
    now = datetime.now(UTC)
    node = EdgeNode(now_ms=int(now.timestamp() * 1000))
    spb = SparkplugDecoder(max_payload=65536)
    spb("spBv1.0/Bench/NBIRTH/Edge1", node.nbirth([]), received_at=now)
    spb("spBv1.0/Bench/DBIRTH/Edge1/Dev1", node.next(
        [{"name": f"Inputs/m{i}", "alias": i, "datatype": DataType.Double, "value": 0.0} for i in range(metrics)]),
        received_at=now)
    frames = [node.next([{"alias": i, "value": float(k)} for i in range(metrics)]) for k in range(count)]
    docs = [orjson.dumps({f"Inputs.m{i}": float(k) for i in range(metrics)}) for k in range(count)]
    sparkplug = _rate(spb, frames, TOPIC, now)
    assert spb.counts["seq_gap"] == 0 and not spb.counts["skipped_unknown_alias"]
    plain = _rate(IotgwDecoder(max_payload=65536), docs, "devices/d1/telemetry", now)
    return {"metrics": metrics, "sparkplug_msg_s": round(sparkplug), "iotgw_json_msg_s": round(plain),
            "sparkplug_cost": round(plain / sparkplug, 2)}


def measure(*, quick: bool = False) -> dict:
    """Each message size, best of three runs of each decoder."""
    count = 5_000 if quick else 50_000
    results = []
    for metrics in (1, 5, 20):
        runs = [_one(metrics, count // max(1, metrics // 5)) for _ in range(3)]
        results.append(max(runs, key=lambda r: r["sparkplug_msg_s"]))
    return {"messages": count, "sizes": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(measure(quick=parser.parse_args().quick), indent=2))


if __name__ == "__main__":
    main()
