"""The push hub: ref-counted bucket groups, in-process routing, bounded inboxes, re-joins after a lost layer."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.layers import InMemoryChannelLayer

from core.push import PUSH_TYPE, bucket_group
from protocols.hub import Inbox, Push, Routes, push_hub


def push(bucket: int | None, n: int) -> dict:
    message = {"type": PUSH_TYPE, "telemetry": {"d": [str(n)]}, "status": {}, "frames": {}}
    if bucket is not None:
        message["bucket"] = bucket
    return message


async def received(inbox: Inbox, count: int, timeout: float = 5.0) -> list[dict]:
    async with asyncio.timeout(timeout):
        return [(await inbox.get()).message for _ in range(count)]


def test_a_bucket_is_joined_by_its_first_subscriber_and_left_by_its_last():
    routes = Routes()
    assert routes.set("a", {0, 1}) == ({0, 1}, set())
    assert routes.set("b", {1, 2}) == ({2}, set())
    assert routes.set("a", {0}) == (set(), set())  # b still needs 1
    assert routes.remove("b") == {1, 2}
    assert routes.buckets == {0}
    assert routes.remove("a") == {0}
    assert routes.buckets == set() and len(routes) == 0


def test_routes_name_the_subscribers_of_a_bucket_and_all_for_an_unnamed_one():
    routes = Routes()
    routes.set("a", {0})
    routes.set("b", {1})
    routes.set("idle", ())
    assert routes.targets(0) == ["a"]
    assert routes.targets(3) == []
    assert sorted(routes.targets(None)) == ["a", "b", "idle"]
    assert "idle" in routes and "gone" not in routes


async def test_a_full_inbox_drops_its_oldest_and_keeps_the_order():
    inbox = Inbox(3)
    drops = [inbox.put(Push(push(0, n))) for n in range(5)]
    assert drops == [False, False, False, True, True] and len(inbox) == 3
    assert [m["telemetry"]["d"] for m in await received(inbox, 3)] == [["2"], ["3"], ["4"]]


async def test_hub_delivers_each_bucket_only_to_its_subscribers():
    layer = InMemoryChannelLayer()
    hub = push_hub(layer, rejoin_every=30)
    zero, one, everything = Inbox(10), Inbox(10), Inbox(10)
    for inbox in (zero, one, everything):
        await hub.attach(inbox)
    await hub.want(zero, {0})
    await hub.want(one, {1})
    await hub.want(everything, {0, 1})
    await layer.group_send(bucket_group(0), push(0, 1))
    await layer.group_send(bucket_group(1), push(1, 2))
    assert [m["bucket"] for m in await received(everything, 2)] == [0, 1]
    assert [m["bucket"] for m in await received(zero, 1)] == [0]
    assert [m["bucket"] for m in await received(one, 1)] == [1]
    assert len(zero) == len(one) == 0
    for inbox in (zero, one, everything):
        await hub.detach(inbox)


async def test_hub_leaves_a_bucket_with_its_last_subscriber_and_stops_with_the_last_dashboard():
    layer = InMemoryChannelLayer()
    hub = push_hub(layer, rejoin_every=30)
    a, b = Inbox(10), Inbox(10)
    await hub.attach(a)
    await hub.attach(b)
    await hub.want(a, {0, 1})
    await hub.want(b, {1})
    assert set(layer.groups) == {bucket_group(0), bucket_group(1)}
    await hub.want(a, set())  # an unsubscribe
    assert set(layer.groups) == {bucket_group(1)}
    await hub.detach(b)
    assert not layer.groups and not hub.stopped
    await hub.detach(a)
    assert hub.stopped and all(t.done() for t in hub._tasks)
    assert push_hub(layer, rejoin_every=30) is not hub


async def test_a_dashboard_that_never_drains_does_not_hold_up_the_others():
    layer = InMemoryChannelLayer(capacity=1000)
    drops = []
    hub = push_hub(layer, rejoin_every=30, on_drop=lambda: drops.append(1))
    stuck, live = Inbox(2), Inbox(100)
    for inbox in (stuck, live):
        await hub.attach(inbox)
        await hub.want(inbox, {0})
    for n in range(50):
        await layer.group_send(bucket_group(0), push(0, n))
    assert [m["telemetry"]["d"] for m in await received(live, 50)] == [[str(n)] for n in range(50)]
    assert len(stuck) == 2 and len(drops) == 48
    assert (await stuck.get()).message["telemetry"] == {"d": ["48"]}
    await hub.detach(stuck)
    await hub.detach(live)


@pytest.fixture
async def redis_layer(redis_url):
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[{"address": redis_url, "socket_timeout": 30}],
                              prefix=f"test-hub-{uuid.uuid4().hex[:8]}")
    yield layer
    await layer.flush()


async def test_hub_rejoins_its_groups_periodically_after_the_layer_forgot_them(redis_layer):
    hub = push_hub(redis_layer, rejoin_every=0.2)
    inbox = Inbox(10)
    await hub.attach(inbox)
    await hub.want(inbox, {2})
    await redis_layer.group_send(bucket_group(2), push(2, 1))
    assert (await received(inbox, 1))[0]["telemetry"] == {"d": ["1"]}

    # What group expiry, or a Redis restart the hub's connection did not notice, leaves: no membership.
    redis = redis_layer.connection(0)
    key = redis_layer._group_key(bucket_group(2))
    await redis.delete(key)

    async def rejoined() -> None:
        while not await redis.zcard(key):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(rejoined(), 5)
    await redis_layer.group_send(bucket_group(2), push(2, 2))
    assert (await received(inbox, 1))[0]["telemetry"] == {"d": ["2"]}
    await hub.detach(inbox)


def test_work_shared_by_the_dashboards_of_a_push_is_done_once():
    shared, calls = Push(push(0, 1)), []
    for _ in range(3):
        assert shared.shared("frames", lambda: calls.append(1) or ["frame"]) == ["frame"]
    assert calls == [1]
