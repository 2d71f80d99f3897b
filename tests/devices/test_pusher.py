"""The pusher: at most one push per interval, merged and in order, except that a command's answer goes out at once."""

import asyncio
from datetime import UTC, datetime

import orjson
from channels.layers import InMemoryChannelLayer

from core.payloads import Sample
from core.push import PushBatch, bucket_group
from devices.pusher import Pusher
from devices.stats import IngestStats

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def telemetry(device_id: str, value: int) -> PushBatch:
    push = PushBatch()
    push.telemetry(device_id, Sample(ts=T0, data={"v": value}))
    return push


async def test_a_command_frame_cuts_the_push_interval_short_and_takes_held_telemetry_along():
    layer = InMemoryChannelLayer()
    dashboard = await layer.new_channel()
    await layer.group_add(bucket_group(0), dashboard)
    pusher = Pusher(layer=layer, stats=IngestStats(), interval=30.0)  # far longer than any wait below

    await pusher.offer(telemetry("d1", 1))
    first = await asyncio.wait_for(layer.receive(dashboard), 5)
    assert list(first["telemetry"]) == ["d1"]

    await pusher.offer(telemetry("d1", 2))  # inside the 30 s interval: held and merged
    answer = PushBatch()
    answer.frame("d1", '{"type":"command","status":"succeeded"}')
    await pusher.offer(answer)
    second = await asyncio.wait_for(layer.receive(dashboard), 5)
    assert second["frames"] == {"d1": ['{"type":"command","status":"succeeded"}']}
    assert len(second["telemetry"]["d1"]) == 1 and '"v":2' in second["telemetry"]["d1"][0]


async def test_pushes_that_arrive_while_one_is_sent_go_out_merged_and_in_order():
    sent: list[dict] = []
    sending, release = asyncio.Event(), asyncio.Event()

    class Layer:
        async def group_send(self, group: str, message: dict) -> None:
            sent.append(message)
            sending.set()
            await release.wait()  # the first send takes a while: what comes meanwhile merges

    pusher = Pusher(layer=Layer(), stats=IngestStats(), interval=0.0)
    await pusher.offer(telemetry("d1", 1))
    await asyncio.wait_for(sending.wait(), 5)
    await pusher.offer(telemetry("d1", 2))
    await pusher.offer(telemetry("d1", 3))
    release.set()
    async with asyncio.timeout(5):
        await pusher.flushed()
    assert [[orjson.loads(f)["data"]["v"] for f in m["telemetry"]["d1"]] for m in sent] == [[1], [2, 3]]


def test_only_frames_make_a_batch_urgent():
    assert not telemetry("d1", 1).urgent
    batch = telemetry("d1", 1)
    answer = PushBatch()
    answer.frame("d2", "{}")
    batch.merge(answer)
    assert batch.urgent
