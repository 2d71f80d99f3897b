"""The shared ingest pipeline through an in-memory transport: poison isolated in O(log n) transactions, acks after
the commit in order, responses resolved, listeners told what was committed."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import pytest
from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer
from django.db import connection

from devices.dbthread import in_db_thread
from devices.models import Telemetry
from devices.pipeline import Committed, IngestPipeline, Intake
from devices.pusher import Pusher
from devices.services.devices import device_register
from devices.services.telemetry import telemetry_ingest
from devices.stats import IngestStats
from testing.transport import MemoryTransport

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


def telemetry(device_id: str, payload: bytes) -> tuple[str, bytes]:
    return f"devices/{device_id}/telemetry", payload


def pipeline(**kwargs) -> tuple[IngestPipeline, MemoryTransport, IngestStats]:
    intake, stats = Intake(), IngestStats()
    pusher = Pusher(layer=InMemoryChannelLayer(), stats=stats)
    return IngestPipeline(intake=intake, stats=stats, pusher=pusher, **kwargs), MemoryTransport(intake), stats


async def test_poison_among_3000_good_samples_costs_log_n_transactions_and_no_good_sample(refusing_database):
    devices = [(await sync_to_async(device_register)(device_id=f"poison-{i}"))[0].id for i in range(3)]
    messages = [telemetry(devices[n % 3], b'{"ts": %d, "n": %d}' % (BASE_TS + n, n)) for n in range(GOOD)]
    refused_by_parser = [
        b'{"n": 1, "note": "nul \\u0000 inside"}',          # PostgreSQL refuses U+0000 in jsonb
        b'{"ts": "0001-01-01T00:00:00+14:00", "n": 1}',      # its UTC time is before the year 1
        b'{"ts": "9999-12-31T23:59:59-14:00", "n": 1}',      # … after the year 9999
    ]
    refused_by_database = [b'{"ts": %d, "poison": 1}' % (BASE_TS + GOOD + i) for i in range(3)]
    for position, payload in zip((7, 1500, 2999, 10, 1234, 2900), refused_by_parser + refused_by_database,
                                 strict=True):
        messages.insert(position, telemetry(devices[0], payload))
    ingest, transport, stats = pipeline(max_batch=5000)
    runner = asyncio.ensure_future(ingest.run())
    sent = transport.send(*messages)
    acked = await transport.until_acked(len(sent), timeout=120)
    runner.cancel()

    stored = await sync_to_async(lambda: sorted(Telemetry.objects.values_list("data__n", flat=True)))()
    assert stored == list(range(GOOD))
    assert stats.rejected == {"bad_sample": 1, "ts_too_old": 1, "ts_in_future": 1, "internal_error": 3}
    # One batch: its first try, then per bad message at most two halves per level of the bisection.
    bound = 1 + 2 * 3 * math.ceil(math.log2(len(sent)))
    assert stats.counts["transactions"] <= bound, f"{stats.counts['transactions']} transactions for one batch"
    assert Counter(map(id, acked)) == Counter(map(id, sent)), "every message acked once"


async def test_acks_come_after_the_commit_in_the_order_received(transactional_db):
    device, _ = await sync_to_async(device_register)(device_id="order-1")
    events: list[str] = []
    commit = in_db_thread(telemetry_ingest)

    async def store(**kwargs):
        outcome = await commit(**kwargs)
        events.append("commit")
        return outcome

    class Watching(MemoryTransport):
        def ack(self, batch) -> None:
            events.append("ack")
            super().ack(batch)

    intake, stats = Intake(), IngestStats()
    ingest = IngestPipeline(intake=intake, stats=stats, pusher=Pusher(layer=InMemoryChannelLayer(), stats=stats),
                            store=store)
    transport = Watching(intake)
    sent = transport.send(*(telemetry(device.id, b'{"ts": %d, "n": %d}' % (BASE_TS + n, n)) for n in range(5)),
                          ("devices/order-1/nonsense", b"x"))
    runner = asyncio.ensure_future(ingest.run())
    await ingest.idle()
    runner.cancel()
    assert events == ["commit", "ack"], "one batch: committed, then acknowledged"
    assert transport.acked == sent, "all acked once, the bad topic too, in the order received"
    assert stats.rejected == {"bad_topic": 1}
    assert await sync_to_async(Telemetry.objects.filter(device_id=device.id).count)() == 5


async def test_listeners_see_what_the_batch_committed_before_its_acks(transactional_db):
    device, _ = await sync_to_async(device_register)(device_id="told-1")
    seen: list[tuple[Committed, int]] = []

    class Listener:
        async def committed(self, batch: Committed) -> None:
            seen.append((batch, len(transport.acked)))

    ingest, transport, _ = pipeline(listeners=[Listener()])
    transport.send(telemetry(device.id, b'[{"ts": 1767225600000, "t": 1}, {"t": 2}]'),
                   (f"devices/{device.id}/status", b"online"))
    runner = asyncio.ensure_future(ingest.run())
    await transport.until_acked(2)
    runner.cancel()
    [(batch, acked_before)] = seen
    assert acked_before == 0
    assert [s.data for s in batch.samples[device.id]] == [{"t": 1}, {"t": 2}]
    assert batch.came_online == [device.id]


async def test_the_pipeline_records_the_transport_each_device_was_heard_on():
    from devices.models import Device

    first, _ = await sync_to_async(device_register)(device_id="heard-1")
    ingest, transport, _ = pipeline()
    other = MemoryTransport(transport._sink)
    other.name = "ws"
    runner = asyncio.ensure_future(ingest.run())
    transport.send(telemetry(first.id, b'{"n": 1}'))
    other.send(telemetry(first.id, b'{"n": 2}'))
    await ingest.idle()
    await asyncio.sleep(0)
    runner.cancel()
    device = await sync_to_async(Device.objects.get)(pk=first.id)
    assert device.transport == "ws", "the last one it was heard on in the batch"


async def test_a_state_that_would_answer_a_command_is_looked_up_only_while_a_command_can_be_waiting():
    """Firmwares that answer with their new state (`answers`) make every state message an id-less answer;
    the lookup runs only for a device with a two-way command claimed, and then finishes that command."""
    from dataclasses import dataclass
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from core.payloads import Sample
    from core.transport import Said
    from core.wire import CommandResponse
    from devices.models import Command, Device
    from devices.services.commands import command_claim, command_issue, command_resolve_many

    @dataclass
    class Envelope:  # read at its edge already, as a WebSocket device's message is
        topic: str
        decoded: list[Said]
        payload: bytes = b""

    class Recording:
        def __init__(self) -> None:
            self.looked_up: list[list[tuple[str, CommandResponse]]] = []
            self._resolve = in_db_thread(command_resolve_many)

        async def resolve(self, responses, push) -> None:
            self.looked_up.append(responses)
            await self._resolve(responses)

    def state(n: int) -> Envelope:
        sample = Sample(ts=timezone.now(), data={"switch.relay": n % 2 == 0})
        return Envelope("esphome/relay", [Said("relay-1", samples=[sample]),
                                          Said("relay-1", response=CommandResponse(None, True, n, ""))])

    user = await sync_to_async(get_user_model().objects.create_user)("operator")
    await sync_to_async(device_register)(device_id="relay-1", owner=user)
    resolver = Recording()
    ingest, transport, _ = pipeline(responses=resolver)
    runner = asyncio.ensure_future(ingest.run())
    transport._sink.offer(transport, [state(1), state(2)])
    await ingest.idle()
    assert resolver.looked_up == [], "no command out: the states are telemetry only, no lookup"

    await sync_to_async(Device.objects.filter(pk="relay-1").update)(online=True)
    command = await sync_to_async(command_issue)(user=user, device_id="relay-1", name="switch.relay", timeout=5)
    [claimed] = await sync_to_async(command_claim)(owner="bridge-1", device_ids=["relay-1"])
    device = await sync_to_async(Device.objects.get)(pk="relay-1")
    assert device.answer_until >= claimed.lease_until + timedelta(seconds=5)
    # The worst moment: the device answers before the broker's PUBACK is recorded (the command is still queued).
    transport._sink.offer(transport, [state(3)])
    await ingest.idle()
    assert [len(batch) for batch in resolver.looked_up] == [1]
    command = await sync_to_async(Command.objects.get)(pk=command.id)
    assert (command.status, command.result) == ("succeeded", 3)

    await sync_to_async(Device.objects.filter(pk="relay-1").update)(answer_until=timezone.now())
    transport._sink.offer(transport, [state(4)])
    await ingest.idle()
    runner.cancel()
    assert len(resolver.looked_up) == 1, "past the horizon: no lookup again"
    assert await sync_to_async(Telemetry.objects.filter(device_id="relay-1").count)() == 4, "every state stored"
