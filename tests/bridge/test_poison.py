"""A message the database refuses costs O(log n) transactions of its batch, not n; every other one is stored."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import pytest
from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer
from django.db import connection

from bridge.ingest import Ingestor
from bridge.mqtt.codec import Raw
from bridge.stats import BridgeStats
from devices.models import Telemetry
from devices.services.devices import device_register

pytestmark = pytest.mark.django_db(transaction=True)

BASE_TS = 1767225600000
GOOD = 3000


@pytest.fixture
def refusing_database(transactional_db):
    """The real database refuses any sample with a `poison` metric, as it refuses what it cannot store."""
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            cur.execute("ALTER TABLE devices_telemetry ADD CONSTRAINT test_no_poison CHECK (NOT (data ? 'poison'))")
        else:
            cur.execute("CREATE TRIGGER test_no_poison BEFORE INSERT ON devices_telemetry "
                        "WHEN json_extract(NEW.data, '$.poison') IS NOT NULL BEGIN SELECT RAISE(ABORT, 'poison'); END")
    yield
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            cur.execute("ALTER TABLE devices_telemetry DROP CONSTRAINT test_no_poison")
        else:
            cur.execute("DROP TRIGGER test_no_poison")


def telemetry(device_id: str, n: int, payload: bytes) -> Raw:
    return Raw(f"devices/{device_id}/telemetry", payload, 1, n + 1, 1)


async def test_poison_among_3000_good_samples_costs_log_n_transactions_and_no_good_sample(refusing_database):
    devices = [(await sync_to_async(device_register)(device_id=f"poison-{i}"))[0].id for i in range(3)]
    raws = [telemetry(devices[n % 3], n, b'{"ts": %d, "n": %d}' % (BASE_TS + n, n)) for n in range(GOOD)]
    refused_by_parser = [
        b'{"n": 1, "note": "nul \\u0000 inside"}',          # PostgreSQL refuses U+0000 in jsonb
        b'{"ts": "0001-01-01T00:00:00+14:00", "n": 1}',      # its UTC time is before the year 1
        b'{"ts": "9999-12-31T23:59:59-14:00", "n": 1}',      # … after the year 9999
    ]
    refused_by_database = [b'{"ts": %d, "poison": 1}' % (BASE_TS + GOOD + i) for i in range(3)]
    for position, payload in zip((7, 1500, 2999, 10, 1234, 2900), refused_by_parser + refused_by_database,
                                 strict=True):
        raws.insert(position, telemetry(devices[0], GOOD + position, payload))
    acked: list[Raw] = []
    stats = BridgeStats()
    ingestor = Ingestor(layer=InMemoryChannelLayer(), stats=stats, ack=acked.extend, max_batch=5000,
                        max_payload=65536)
    runner = asyncio.ensure_future(ingestor.run())
    ingestor.offer_many(raws)
    async with asyncio.timeout(120):
        while len(acked) < len(raws):
            await asyncio.sleep(0.05)
    runner.cancel()

    stored = await sync_to_async(lambda: sorted(Telemetry.objects.values_list("data__n", flat=True)))()
    assert stored == list(range(GOOD))
    assert stats.rejected == {"bad_sample": 1, "ts_too_old": 1, "ts_in_future": 1, "internal_error": 3}
    # One batch: its first try, then per bad message at most two halves per level of the bisection.
    bound = 1 + 2 * 3 * math.ceil(math.log2(len(raws)))
    assert stats.counts["transactions"] <= bound, f"{stats.counts['transactions']} transactions for one batch"
    assert Counter(raw.mid for raw in acked) == Counter(raw.mid for raw in raws), "every message acked once"
