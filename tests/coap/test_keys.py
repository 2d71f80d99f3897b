"""Device credentials for the CoAP edge: one query for many devices at once, none while a verdict is fresh."""

from __future__ import annotations

import asyncio

from coap.keys import DeviceKeys
from devices.secrets import secret_hash

STORED = {f"d{i}": secret_hash(f"secret-{i}") for i in range(200)}


class Registry:
    def __init__(self) -> None:
        self.queries: list[list[str]] = []

    async def fetch(self, ids: list[str]) -> dict[str, str]:
        self.queries.append(ids)
        await asyncio.sleep(0.01)  # a query takes a while: requests arriving meanwhile wait for the next
        return {d: STORED[d] for d in ids if d in STORED}


async def test_two_hundred_devices_starting_at_once_cost_a_query_or_two_not_two_hundred():
    registry = Registry()
    keys = DeviceKeys(fetch=registry.fetch)
    verdicts = await asyncio.gather(*(keys.opens(f"d{i}", f"secret-{i}") for i in range(200)),
                                    keys.opens("d1", "wrong"), keys.opens("nobody", "secret-1"))
    assert verdicts == [True] * 200 + [False, False]
    assert len(registry.queries) <= 2 and sum(map(len, registry.queries)) == 201


async def test_a_fresh_verdict_asks_nothing_and_an_old_one_asks_again():
    now = [0.0]
    registry = Registry()
    keys = DeviceKeys(fetch=registry.fetch, ttl=10, clock=lambda: now[0])
    assert await keys.opens("d7", "secret-7")
    assert not await keys.opens("d7", "guess")  # a wrong secret costs no query either
    assert len(registry.queries) == 1
    now[0] = 11.0
    assert await keys.opens("d7", "secret-7") and len(registry.queries) == 2


async def test_a_database_outage_fails_the_waiting_requests_and_caches_nothing():
    calls = []

    async def away(ids: list[str]) -> dict[str, str]:
        calls.append(ids)
        if len(calls) == 1:
            raise ConnectionError("database away")
        return {d: STORED[d] for d in ids}

    keys = DeviceKeys(fetch=away)
    results = await asyncio.gather(keys.opens("d1", "secret-1"), return_exceptions=True)
    assert isinstance(results[0], ConnectionError)
    assert await keys.opens("d1", "secret-1")
