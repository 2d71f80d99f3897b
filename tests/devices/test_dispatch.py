"""The command dispatcher in one process, through an in-memory transport and the real database: `sent`, answers."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer
from django.contrib.auth import get_user_model

from core.transport import Outbound
from devices import dispatch
from devices.dispatch import CommandDispatcher
from devices.models import Command, Device
from devices.pipeline import IngestPipeline, Intake
from devices.pusher import Pusher
from devices.services.commands import command_issue
from devices.services.devices import device_register
from devices.stats import IngestStats
from testing.transport import MemoryTransport
from testing.waiting import await_until

pytestmark = pytest.mark.django_db(transaction=True)


class AnsweringTransport(MemoryTransport):
    """A device that answers each command as soon as it is delivered, as the benchmark's do."""

    async def deliver(self, command: Outbound) -> None:
        await super().deliver(command)
        self.send((f"devices/{command.device_id}/commands/response",
                   json.dumps({"id": str(command.command_id), "status": "ok", "result": 1}).encode()))


def queued(device_id: str) -> Command:
    owner = get_user_model().objects.create_user(f"owner-{device_id}")
    device_register(device_id=device_id, owner=owner)
    Device.objects.filter(pk=device_id).update(online=True)
    return command_issue(user=owner, device_id=device_id, name="reboot")


def started(transport_type: type[MemoryTransport], **options) -> tuple[MemoryTransport, CommandDispatcher, list]:
    intake, stats = Intake(), IngestStats()
    pusher = Pusher(layer=InMemoryChannelLayer(), stats=stats)
    transport = transport_type(intake)
    dispatcher = CommandDispatcher(outlet=transport, owner="bridge-1", stats=stats, pusher=pusher, **options)
    pipeline = IngestPipeline(intake=intake, stats=stats, pusher=pusher, responses=dispatcher, listeners=[dispatcher])
    return transport, dispatcher, [asyncio.ensure_future(dispatcher.run()), asyncio.ensure_future(pipeline.run())]


def status(command: Command) -> str:
    return Command.objects.get(pk=command.pk).status


@pytest.fixture
def sent_writes(monkeypatch) -> list[list]:
    """The ids of every `sent` group write the dispatchers built from here on make."""
    writes: list[list] = []
    real = dispatch.command_mark_sent_many

    def counted(*, command_ids):
        writes.append(list(command_ids))
        return real(command_ids=command_ids)

    monkeypatch.setattr(dispatch, "command_mark_sent_many", counted)
    return writes


async def test_an_answer_before_the_sent_write_records_sent_in_its_own_transaction(sent_writes):
    command = await sync_to_async(queued)("quick-1")
    transport, _, tasks = started(AnsweringTransport)
    await await_until(lambda: status(command) == "succeeded", timeout=10, what="the answer stored")
    for task in tasks:
        task.cancel()
    stored = await sync_to_async(Command.objects.get)(pk=command.pk)
    assert [h["status"] for h in stored.history] == ["queued", "sent", "succeeded"]
    assert stored.sent_at is not None and stored.result == 1
    assert not any(command.id in ids for ids in sent_writes), "sent was written with the answer, not before it"
    assert len(transport.delivered) == 1


async def test_sent_is_still_recorded_when_the_answers_transaction_fails(sent_writes, monkeypatch):
    def broken(responses):
        raise RuntimeError("the answers' transaction failed")

    monkeypatch.setattr(dispatch, "command_resolve_many", broken)
    command = await sync_to_async(queued)("quick-2")
    _, _, tasks = started(AnsweringTransport)
    await await_until(lambda: status(command) == "sent", timeout=10, what="sent recorded without the answer")
    for task in tasks:
        task.cancel()
    assert any(command.id in ids for ids in sent_writes)


async def test_a_bridge_that_dies_while_sent_lingers_delivers_again_after_its_restart():
    command = await sync_to_async(queued)("quiet-1")
    first, before, tasks = started(MemoryTransport, sent_linger=60.0)
    await await_until(lambda: first.delivered, timeout=10, what="the first delivery")
    for task in [*tasks, *before._tasks]:  # killed between the PUBACK and recording `sent`
        task.cancel()
    assert await sync_to_async(status)(command) == "queued"
    again, _, tasks = started(MemoryTransport)  # the same client id, restarted: its own stale lease is taken back
    await await_until(lambda: status(command) == "sent", timeout=10, what="sent after the restart")
    for task in tasks:
        task.cancel()
    assert [c.command_id for c in first.delivered + again.delivered] == [command.id, command.id], "at least once"


class SlowBroker(MemoryTransport):
    """A broker whose PUBACK takes as long as the test says."""

    def __init__(self, sink) -> None:
        super().__init__(sink)
        self.puback = asyncio.Event()

    async def deliver(self, command: Outbound) -> None:
        self.delivered.append(command)
        await self.puback.wait()


async def test_a_delivery_waiting_longer_than_its_lease_keeps_it():
    command = await sync_to_async(queued)("slow-1")
    slow, _, tasks = started(SlowBroker, lease=0.6, interval=0.1)
    await await_until(lambda: slow.delivered, timeout=10, what="the delivery under way")
    other = MemoryTransport(Intake())
    rival = CommandDispatcher(outlet=other, owner="bridge-2", stats=IngestStats(), interval=0.1,
                              pusher=Pusher(layer=InMemoryChannelLayer(), stats=IngestStats()))
    tasks.append(asyncio.ensure_future(rival.run()))
    # Five leases long, the other bridge sweeping ten times a second: the lease is renewed, never taken over.
    with pytest.raises(AssertionError):
        await await_until(lambda: other.delivered, timeout=3, what="a second delivery")
    slow.puback.set()
    await await_until(lambda: status(command) == "sent", timeout=10, what="sent at the PUBACK")
    for task in tasks:
        task.cancel()
    assert [c.command_id for c in slow.delivered] == [command.id] and not other.delivered
