"""Command services: the lifecycle's rules, in the database, without processes."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from core.errors import Conflict, DeviceDisabled, DeviceUnknown, PayloadInvalid
from devices.models import Command, Device
from devices.services.commands import (
    command_cancel,
    command_claim,
    command_expire_due,
    command_issue,
    command_mark_sent,
    command_resolve,
    command_time_out_due,
)
from devices.services.devices import device_register, device_set_enabled

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner():
    return get_user_model().objects.create_user("owner")


@pytest.fixture
def device(owner):
    device, _ = device_register(device_id="d1", owner=owner)
    Device.objects.filter(pk="d1").update(online=True)
    return device


def statuses(command: Command) -> list[str]:
    command.refresh_from_db()
    return [h["status"] for h in command.history]


def test_issue_checks_the_device_and_the_user(owner, device):
    stranger = get_user_model().objects.create_user("stranger")
    with pytest.raises(DeviceUnknown) as hidden:
        command_issue(user=stranger, device_id="d1", name="reboot")
    with pytest.raises(DeviceUnknown) as missing:
        command_issue(user=stranger, device_id="d2", name="reboot")
    # Someone else's device is answered exactly like a missing one: ids cannot be probed.
    assert str(hidden.value).replace("d1", "ID") == str(missing.value).replace("d2", "ID")
    with pytest.raises(DeviceUnknown):
        command_issue(user=owner, device_id="nope", name="reboot")
    with pytest.raises(PayloadInvalid):
        command_issue(user=owner, device_id="d1", name="reboot", timeout=0)
    device_set_enabled(device_id="d1", enabled=False)
    with pytest.raises(DeviceDisabled):
        command_issue(user=owner, device_id="d1", name="reboot")
    assert not Command.objects.exists()


def test_idempotency_key_is_per_device(owner, device):
    device_register(device_id="d2", owner=owner)
    first = command_issue(user=owner, device_id="d1", name="reboot", idempotency_key="k")
    assert command_issue(user=owner, device_id="d1", name="other", idempotency_key="k").id == first.id
    assert command_issue(user=owner, device_id="d2", name="reboot", idempotency_key="k").id != first.id


def test_claim_leases_once_and_skips_offline_devices(owner, device):
    device_register(device_id="off", owner=owner)
    online = command_issue(user=owner, device_id="d1", name="a")
    command_issue(user=owner, device_id="off", name="b")
    assert [c.id for c in command_claim(owner="bridge-1")] == [online.id]
    assert command_claim(owner="bridge-2") == []  # bridge-1's lease holds
    # bridge-1 restarted: it takes its own stale leases back, except publishes still in flight.
    assert command_claim(owner="bridge-1", exclude=[online.id]) == []
    assert [c.id for c in command_claim(owner="bridge-1")] == [online.id]


def test_sent_then_response_ends_the_command(owner, device):
    command = command_issue(user=owner, device_id="d1", name="reboot")
    command_claim(owner="b")
    assert command_mark_sent(command_id=command.id).status == "sent"
    done, reason = command_resolve(device_id="d1", command_id=command.id, ok=False, error="busy")
    assert reason is None and done.status == "failed" and done.error == "busy"
    assert statuses(command) == ["queued", "sent", "failed"]
    assert command_resolve(device_id="d1", command_id=command.id, ok=True) == (None, "response_finished")


def test_response_before_the_puback_is_recorded_counts_as_sent(owner, device):
    command = command_issue(user=owner, device_id="d1", name="reboot")
    command_claim(owner="b")
    done, reason = command_resolve(device_id="d1", command_id=command.id, ok=True, result=[1])
    assert reason is None and done.status == "succeeded"
    assert command_mark_sent(command_id=command.id) is None
    assert statuses(command) == ["queued", "sent", "succeeded"]


def test_stray_responses_change_nothing(owner, device):
    device_register(device_id="d2", owner=owner)
    command = command_issue(user=owner, device_id="d1", name="reboot")
    assert command_resolve(device_id="d1", command_id=command.id, ok=True) == (None, "response_unknown")  # unsent
    command_claim(owner="b")
    command_mark_sent(command_id=command.id)
    assert command_resolve(device_id="d2", command_id=command.id, ok=True) == (None, "response_wrong_device")
    assert command_resolve(device_id="d1", command_id=uuid.uuid4(), ok=True) == (None, "response_unknown")
    assert statuses(command) == ["queued", "sent"]


def test_oneway_ends_at_sent_and_never_times_out(owner, device):
    command = command_issue(user=owner, device_id="d1", name="blink", oneway=True, timeout=0.001)
    command_claim(owner="b")
    sent = command_mark_sent(command_id=command.id)
    assert sent.finished_at is not None and sent.deadline is None
    assert command_time_out_due() == []
    assert command_resolve(device_id="d1", command_id=command.id, ok=True) == (None, "response_finished")


def test_due_commands_time_out_and_expire(owner, device):
    device_register(device_id="off", owner=owner)
    waiting = command_issue(user=owner, device_id="off", name="a", expires_in=60)
    sent = command_issue(user=owner, device_id="d1", name="b", timeout=60)
    command_claim(owner="b")
    command_mark_sent(command_id=sent.id)
    assert command_time_out_due() == [] and command_expire_due() == []
    past = timezone.now() - timedelta(seconds=1)
    Command.objects.filter(pk=sent.id).update(deadline=past)
    Command.objects.filter(pk=waiting.id).update(expires_at=past)
    assert [c.id for c in command_time_out_due()] == [sent.id]
    assert [c.id for c in command_expire_due()] == [waiting.id]
    assert statuses(sent) == ["queued", "sent", "timed_out"]
    assert statuses(waiting) == ["queued", "expired"]


def test_cancel_only_a_queued_command_not_being_published(owner, device):
    device_register(device_id="off", owner=owner)
    waiting = command_issue(user=owner, device_id="off", name="a")
    assert command_cancel(user=owner, command_id=waiting.id).status == "cancelled"
    with pytest.raises(Conflict):
        command_cancel(user=owner, command_id=waiting.id)
    leased = command_issue(user=owner, device_id="d1", name="b")
    command_claim(owner="b")
    with pytest.raises(Conflict):
        command_cancel(user=owner, command_id=leased.id)


def test_oneway_answered_before_its_puback_is_sent_and_the_answer_ignored(owner, device):
    command = command_issue(user=owner, device_id="d1", name="blink", oneway=True)
    command_claim(owner="b")
    changed, reason = command_resolve(device_id="d1", command_id=command.id, ok=True)
    assert changed.status == "sent" and reason == "response_finished"
    assert statuses(command) == ["queued", "sent"]


def test_a_transport_claims_only_devices_last_heard_on_it(owner, device):
    from devices.models import Device

    device_register(device_id="on-ws", owner=owner)
    Device.objects.filter(pk="on-ws").update(online=True, transport="ws")
    mqtt_or_new = command_issue(user=owner, device_id="d1", name="a")
    over_ws = command_issue(user=owner, device_id="on-ws", name="b")
    assert [c.id for c in command_claim(owner="bridge", transports=("mqtt", ""))] == [mqtt_or_new.id]
    assert [c.id for c in command_claim(owner="web", transports=("ws",))] == [over_ws.id]


def test_a_fleet_command_is_stored_for_every_device_the_user_may_command(owner, device):
    from devices.services.commands import command_issue_many

    device_register(device_id="d2", owner=owner)
    device_register(device_id="off", owner=owner)
    device_set_enabled(device_id="off", enabled=False)
    stranger = get_user_model().objects.create_user("stranger")
    device_register(device_id="theirs", owner=stranger)
    commands, refused = command_issue_many(user=owner, device_ids=["d2", "d1", "theirs", "off", "nope", "bad id", "d1"],
                                           name="reboot", params={"delay": 1})
    assert [c.device_id for c in commands] == ["d2", "d1"]
    assert all(c.status == Command.QUEUED and c.params == {"delay": 1} for c in commands)
    # Someone else's device is refused exactly like a missing one.
    assert refused == {"theirs": "unknown_device", "nope": "unknown_device", "bad id": "unknown_device",
                       "off": "device_disabled"}
    assert Command.objects.count() == 2


def test_a_retried_fleet_command_with_a_key_stores_nothing_twice(owner, device):
    from devices.services.commands import command_issue_many

    device_register(device_id="d2", owner=owner)
    single = command_issue(user=owner, device_id="d1", name="reboot", idempotency_key="k1")
    first, _ = command_issue_many(user=owner, device_ids=["d1", "d2"], name="reboot", idempotency_key="k1")
    again, _ = command_issue_many(user=owner, device_ids=["d1", "d2"], name="reboot", idempotency_key="k1")
    assert first[0].id == single.id and [c.id for c in again] == [c.id for c in first]
    assert Command.objects.count() == 2


def test_sent_is_written_for_many_at_once_and_only_for_queued_ones(owner, device):
    from devices.services.commands import command_mark_sent_many

    device_register(device_id="d2", owner=owner)
    a = command_issue(user=owner, device_id="d1", name="a")
    b = command_issue(user=owner, device_id="d2", name="b")
    cancelled = command_issue(user=owner, device_id="d1", name="c")
    command_cancel(user=owner, command_id=cancelled.id)
    sent = command_mark_sent_many(command_ids=[a.id, b.id, cancelled.id, uuid.uuid4()])
    assert set(sent) == {a.id, b.id} and statuses(a) == statuses(b) == ["queued", "sent"]
    assert statuses(cancelled) == ["queued", "cancelled"]
    assert command_mark_sent_many(command_ids=[a.id]) == {}, "sent once"


def test_a_batch_of_responses_is_applied_in_order_as_one_at_a_time_would(owner, device):
    from core.wire import CommandResponse
    from devices.services.commands import command_resolve_many

    device_register(device_id="d2", owner=owner)
    Device.objects.filter(pk="d2").update(online=True)
    a = command_issue(user=owner, device_id="d1", name="a")
    b = command_issue(user=owner, device_id="d2", name="b")
    never_sent = command_issue(user=owner, device_id="d1", name="c")
    claimed = {c.id for c in command_claim(owner="bridge-1", device_ids=["d1", "d2"])}
    assert {a.id, b.id} <= claimed
    Command.objects.filter(pk=never_sent.id).update(lease_until=None)
    outcomes = command_resolve_many([
        ("d1", CommandResponse(a.id, True, {"x": 1}, "")),
        ("d1", CommandResponse(a.id, False, None, "late")),  # the same command again in the batch
        ("d1", CommandResponse(b.id, True, None, "")),  # b is d2's
        ("d2", CommandResponse(b.id, False, None, "no")),
        ("d1", CommandResponse(never_sent.id, True, None, "")),
        ("d1", CommandResponse(uuid.uuid4(), True, None, "")),
    ])
    assert [reason for _, reason in outcomes] == [None, "response_finished", "response_wrong_device", None,
                                                  "response_unknown", "response_unknown"]
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.status, a.result) == ("succeeded", {"x": 1}) and (b.status, b.error) == ("failed", "no")
    assert statuses(a) == ["queued", "sent", "succeeded"], "answered before its PUBACK was recorded: sent, then done"


def test_answers_without_ids_in_one_batch_take_the_devices_waiting_commands_oldest_first(owner, device):
    from core.wire import CommandResponse
    from devices.services.commands import command_resolve_many

    first = command_issue(user=owner, device_id="d1", name="a")
    second = command_issue(user=owner, device_id="d1", name="b")
    command_claim(owner="bridge-1", device_ids=["d1"])
    command_mark_sent(command_id=first.id)
    outcomes = command_resolve_many([("d1", CommandResponse(None, True, "A", "")),
                                     ("d1", CommandResponse(None, False, None, "B")),
                                     ("d1", CommandResponse(None, True, None, ""))])
    assert [reason for _, reason in outcomes] == [None, None, "response_unmatched"]
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.result, second.status, second.error) == ("succeeded", "A", "failed", "B")


def test_a_claim_tells_ingest_until_when_the_device_may_answer_without_an_id(owner, device):
    command_issue(user=owner, device_id="d1", name="blink", oneway=True)
    command_claim(owner="bridge-1", device_ids=["d1"])
    device.refresh_from_db()
    assert device.answer_until is None, "a one-way command is never answered"
    long = command_issue(user=owner, device_id="d1", name="reboot", timeout=600)
    [claimed] = command_claim(owner="bridge-2", device_ids=["d1"])  # bridge-1's lease on the one-way one holds
    device.refresh_from_db()
    assert device.answer_until == claimed.lease_until + timedelta(seconds=600)
    short = command_issue(user=owner, device_id="d1", name="ping", timeout=1)
    command_claim(owner="bridge-2", device_ids=["d1"], exclude=[long.id])
    device.refresh_from_db()
    assert device.answer_until == claimed.lease_until + timedelta(seconds=600), "the horizon never shrinks"
    assert Command.objects.get(pk=short.id).lease_owner == "bridge-2"


@pytest.mark.parametrize("result", [None, {"x": [1, 2.5, "é"]}, [1, None], "text", 0, True, 2**70])
def test_a_result_is_stored_as_the_device_sent_it(owner, device, result):
    # On PostgreSQL the group writes travel as one JSON document (devices/commands_sql.py); a value orjson
    # cannot write (an integer past 64 bits) goes the ORM's way instead, and reads back the same.
    command = command_issue(user=owner, device_id="d1", name="reboot")
    command_claim(owner="b")
    command_mark_sent(command_id=command.id)
    done, reason = command_resolve(device_id="d1", command_id=command.id, ok=True, result=result)
    assert reason is None
    stored = Command.objects.get(pk=command.id)
    assert (stored.status, stored.result, stored.error) == ("succeeded", result, "")
    assert stored.sent_at == done.sent_at and stored.deadline == done.sent_at + timedelta(seconds=stored.timeout)
    assert (stored.lease_owner, stored.lease_until, stored.finished_at) == ("", None, done.finished_at)
    assert stored.history == done.history and statuses(command) == ["queued", "sent", "succeeded"]


def test_a_fleet_command_racing_another_with_its_key_takes_the_stored_ones(owner, device, monkeypatch):
    from devices.services import commands

    device_register(device_id="d2", owner=owner)
    queued = commands._queued
    raced: list[Command] = []

    def racing(*args):  # the other issue stores d1's between our lookup and our insert
        if not raced:
            monkeypatch.setattr(commands, "_queued", queued)
            raced.append(command_issue(user=owner, device_id="d1", name="other", idempotency_key="k"))
        return queued(*args)

    monkeypatch.setattr(commands, "_queued", racing)
    stored, _ = commands.command_issue_many(user=owner, device_ids=["d1", "d2"], name="reboot", idempotency_key="k")
    assert [c.id for c in stored][0] == raced[0].id and [c.name for c in stored] == ["other", "reboot"]
    assert Command.objects.count() == 2
