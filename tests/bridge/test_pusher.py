"""The bridge's pusher: at most one push per interval, except that a command's answer goes out at once."""

import asyncio
from datetime import UTC, datetime

import pytest
from channels.layers import InMemoryChannelLayer

from bridge.ingest import Ingestor
from bridge.stats import BridgeStats
from core.payloads import Sample
from core.push import PushBatch, bucket_group

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def telemetry(device_id: str, value: int) -> PushBatch:
    push = PushBatch()
    push.telemetry(device_id, Sample(ts=T0, data={"v": value}))
    return push


@pytest.fixture
def slow_pushes(settings):
    settings.IOTGW_PUSH_INTERVAL = 30.0  # far longer than any wait below
    settings.IOTGW_PUSH_BUCKETS = 1


async def test_a_command_frame_cuts_the_push_interval_short_and_takes_held_telemetry_along(slow_pushes):
    layer = InMemoryChannelLayer()
    dashboard = await layer.new_channel()
    await layer.group_add(bucket_group(0), dashboard)
    ingestor = Ingestor(layer=layer, stats=BridgeStats(), ack=lambda raws: None, max_batch=100, max_payload=65536)

    await ingestor._push(telemetry("d1", 1))
    first = await asyncio.wait_for(layer.receive(dashboard), 5)
    assert list(first["telemetry"]) == ["d1"]
    for _ in range(20):  # let the pusher finish that send and start waiting out the interval
        await asyncio.sleep(0)

    await ingestor._push(telemetry("d1", 2))  # inside the 30 s interval: held and merged
    answer = PushBatch()
    answer.frame("d1", '{"type":"command","status":"succeeded"}')
    await ingestor._push(answer)
    second = await asyncio.wait_for(layer.receive(dashboard), 5)
    assert second["frames"] == {"d1": ['{"type":"command","status":"succeeded"}']}
    assert len(second["telemetry"]["d1"]) == 1 and '"v":2' in second["telemetry"]["d1"][0]
    ingestor._push_task.cancel()


def test_only_frames_make_a_batch_urgent():
    assert not telemetry("d1", 1).urgent
    batch = telemetry("d1", 1)
    answer = PushBatch()
    answer.frame("d2", "{}")
    batch.merge(answer)
    assert batch.urgent
