"""The engine in one process on the real database: thresholds per batch, restarts, rule reloads, sweeps, commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer
from django.utils import timezone

from alarms.engine import AlarmEngine
from alarms.models import Alarm, AlarmEvent, AlarmRule
from core.payloads import Sample
from core.push import bucket_group
from devices.models import Command, Device
from devices.pipeline import Committed
from devices.pusher import Pusher
from devices.services.devices import device_register
from devices.stats import IngestStats

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def batch(device_id: str, *values: float, start: float = 0.0, step: float = 1.0, metric: str = "temp") -> Committed:
    samples = [Sample(ts=T0 + timedelta(seconds=start + i * step), data={metric: v}) for i, v in enumerate(values)]
    return Committed(received_at=timezone.now(), samples={device_id: samples})


async def engine(layer=None) -> AlarmEngine:
    stats = IngestStats()
    e = AlarmEngine(pusher=Pusher(layer=layer or InMemoryChannelLayer(), stats=stats), stats=stats, touch_every=0)
    await e.start()
    return e


def events() -> list[tuple[str, str, float | None]]:
    return list(AlarmEvent.objects.order_by("pk").values_list("alarm__device_id", "kind", "value"))


@pytest.fixture
def hot():
    device_register(device_id="d1")
    return AlarmRule.objects.create(name="hot", kind="above", metric="temp", high=30, high_clear=25, duration=60,
                                    severity="critical")


async def test_a_threshold_held_for_its_duration_raises_one_alarm_not_one_per_sample(hot):
    e = await engine()
    await e.committed(batch("d1", *[35] * 30, step=1))  # 29 s over: not yet
    assert await sync_to_async(events)() == []
    await e.committed(batch("d1", *[35] * 100, start=30, step=1))
    assert await sync_to_async(events)() == [("d1", "raised", 35.0)]
    alarm = await sync_to_async(Alarm.objects.get)()
    assert alarm.severity == "critical" and alarm.last_seen == T0 + timedelta(seconds=129)


async def test_a_dip_below_the_raise_threshold_restarts_the_duration(hot):
    e = await engine()
    await e.committed(batch("d1", *([35] * 50 + [29] + [35] * 50)))
    assert await sync_to_async(events)() == []


async def test_hysteresis_holds_the_alarm_in_the_band_and_clears_only_past_the_clear_threshold(hot):
    e = await engine()
    await e.committed(batch("d1", *[40] * 61))
    # Flapping around the raise threshold, never down to the clear one: one alarm, no clear.
    await e.committed(batch("d1", *[29, 31, 28, 32, 26, 31] * 10, start=61))
    assert [k for _, k, _ in await sync_to_async(events)()] == ["raised"]
    await e.committed(batch("d1", 25, start=200))
    assert [k for _, k, _ in await sync_to_async(events)()] == ["raised", "cleared"]


async def test_a_restarted_engine_neither_raises_again_nor_retriggers_a_condition_that_persists(hot):
    first = await engine()
    await first.committed(batch("d1", *[40] * 61))
    # A new process: its memory is gone, the alarm is in the database; the same batch redelivered, then more.
    second = await engine()
    await second.committed(batch("d1", *[40] * 61))
    await second.committed(batch("d1", *[40] * 100, start=61))
    assert [k for _, k, _ in await sync_to_async(events)()] == ["raised"]


async def test_a_condition_that_persists_across_a_restart_before_its_duration_still_raises(hot):
    first = await engine()
    await first.committed(batch("d1", *[40] * 30))
    second = await engine()  # the pending 30 s are forgotten: it raises one duration after the restart
    await second.committed(batch("d1", *[40] * 61, start=30))
    assert [k for _, k, _ in await sync_to_async(events)()] == ["raised"]


async def test_two_engines_seeing_the_same_samples_raise_once(hot):
    a, b = await engine(), await engine()
    await a.committed(batch("d1", *[40] * 61))
    await b.committed(batch("d1", *[40] * 61))
    assert len(await sync_to_async(events)()) == 1


async def test_a_rule_change_is_picked_up_by_the_next_refresh(hot):
    e = await engine()
    await sync_to_async(AlarmRule.objects.create)(name="cold", kind="below", metric="temp", low=0, device_id="d1")
    await e.refresh()
    await e.committed(batch("d1", -5))
    assert await sync_to_async(events)() == [("d1", "raised", -5.0)]


async def test_an_alarm_cleared_elsewhere_can_be_raised_again_after_a_refresh(hot):
    e = await engine()
    await e.committed(batch("d1", *[40] * 61))
    await sync_to_async(Alarm.objects.update)(state=Alarm.CLEARED)
    alarm = await sync_to_async(Alarm.objects.get)()
    await sync_to_async(AlarmEvent.objects.create)(alarm=alarm, kind="cleared", at=timezone.now())
    await e.refresh()
    await e.committed(batch("d1", 41, start=70))
    assert await sync_to_async(Alarm.objects.filter(state=Alarm.ACTIVE).count)() == 1


async def test_a_transition_is_pushed_as_an_alarm_frame_to_the_devices_bucket(hot):
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add(bucket_group(0), channel)
    e = await engine(layer)
    await e.committed(batch("d1", *[40] * 61))
    message = await layer.receive(channel)
    assert '"type":"alarm"' in message["frames"]["d1"][0] and '"event":"raised"' in message["frames"]["d1"][0]


async def test_the_sweep_raises_inactivity_for_a_silent_device_and_clears_it_when_it_speaks():
    await sync_to_async(device_register)(device_id="quiet")
    await sync_to_async(device_register)(device_id="chatty")
    now = timezone.now()
    await sync_to_async(Device.objects.filter(pk="quiet").update)(last_seen=now - timedelta(seconds=120))
    await sync_to_async(Device.objects.filter(pk="chatty").update)(last_seen=now)
    await sync_to_async(AlarmRule.objects.create)(name="silent", kind="inactivity", duration=60)
    e = await engine()
    await e.sweep()
    await e.sweep()  # once
    assert await sync_to_async(events)() == [("quiet", "raised", None)]
    await e.committed(Committed(received_at=timezone.now(), samples={"quiet": [Sample(ts=now, data={"v": 1})]}))
    assert [k for _, k, _ in await sync_to_async(events)()] == ["raised", "cleared"]


async def test_a_device_going_offline_raises_and_coming_back_clears():
    await sync_to_async(device_register)(device_id="flaky")
    await sync_to_async(AlarmRule.objects.create)(name="gone", kind="offline", device_id="flaky", severity="major")
    e = await engine()
    now = timezone.now()
    await e.committed(Committed(received_at=now, status_changes=[("flaky", False, now)]))
    await e.committed(Committed(received_at=now, status_changes=[("flaky", True, now)]))
    assert [k for _, k, _ in await sync_to_async(events)()] == ["raised", "cleared"]


async def test_failed_commands_raise_then_retrigger_and_a_success_clears():
    await sync_to_async(device_register)(device_id="pump")
    await sync_to_async(AlarmRule.objects.create)(name="reboot failed", kind="command_failed", command="reboot")
    e = await engine()

    def command(status: str, name: str = "reboot") -> Command:
        now = timezone.now()
        return Command(device_id="pump", name=name, status=status, finished_at=now, error="boom", timeout=5,
                       created_at=now, updated_at=now, expires_at=now)

    await e.commands_finished([command(Command.FAILED), command(Command.FAILED, "other")])
    await e.commands_finished([command(Command.TIMED_OUT)])
    await e.commands_finished([command(Command.SUCCEEDED)])
    assert [k for _, k, _ in await sync_to_async(events)()] == ["raised", "retriggered", "cleared"]
    assert (await sync_to_async(Alarm.objects.get)()).retriggers == 1
