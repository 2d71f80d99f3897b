"""Commands dashboard → device → dashboard, over real Daphne, bridge, Mosquitto, Redis and the database."""

from __future__ import annotations

import itertools

import pytest
from asgiref.sync import sync_to_async

from devices.models import BridgeHeartbeat, Command
from devices.services.commands import command_issue
from testing.http import json_call
from testing.mqtt import Responder
from testing.registry import command_status
from testing.waiting import wait_until
from testing.ws import Dashboard

call_json = sync_to_async(json_call)

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

_refs = itertools.count(1)


@pytest.fixture
def owner(registry):
    user = registry.user("owner")
    return user, registry.token(user)


@pytest.fixture
async def running(stack):
    """Web and bridge processes up."""
    await sync_to_async(stack.start_web)()
    await sync_to_async(stack.start_bridge)()
    return stack


async def issue(dash: Dashboard, device_id: str, name: str = "reboot", **fields) -> dict:
    """Send a `command` frame; returns the gateway's immediate `command` reply (status queued)."""
    ref = f"r{next(_refs)}"
    await dash.send({"type": "command", "device": device_id, "name": name, "ref": ref, **fields})
    return await dash.next(lambda f: f["type"] in ("command", "error") and f.get("ref") == ref)


async def status_frame(dash: Dashboard, command_id: str, status: str, timeout: float = 15.0) -> dict:
    return await dash.next(lambda f: f["type"] == "command" and f["id"] == command_id and f["status"] == status,
                           timeout=timeout)


async def await_db(predicate, *, timeout: float = 15.0, what: str = "") -> None:
    """Wait on a database condition in the test's one sync thread, whose connection the fixtures close."""
    await sync_to_async(wait_until)(predicate, timeout=timeout, what=what)


def history(command_id: str) -> list[str]:
    return [h["status"] for h in Command.objects.get(pk=command_id).history]


async def online_device(stack, registry, user, name: str, *, answer: str | None) -> tuple[str, Responder]:
    """A device of `user`'s that answers commands with `answer` (None: never), once the gateway sees it online."""
    device_id, _ = await sync_to_async(registry.device)(name, owner=user)
    device = await sync_to_async(Responder)(stack.mqtt_url, device_id, answer=answer)
    await await_db(lambda: command_ready(device_id), what="device online")
    return device_id, device


async def open_dashboard(stack, token: str, device_ids: list[str]) -> Dashboard:
    dash = await Dashboard.open(stack.ws, token)
    await dash.subscribe(device_ids)
    return dash


async def test_command_round_trip_succeeds_with_the_result(running, registry, owner):
    user, token = owner
    device_id, device = await online_device(running, registry, user, "pump", answer="ok")
    dash = await open_dashboard(running, token, [device_id])

    reply = await issue(dash, device_id, params={"delay": 3}, timeout=10)
    assert reply["type"] == "command" and reply["status"] == "queued" and reply["device"] == device_id
    done = await status_frame(dash, reply["id"], "succeeded")
    assert done["result"] == {"echo": {"delay": 3}} and done["error"] is None and done["ref"] == reply["ref"]

    got = device.received[0]
    assert got["id"] == reply["id"] and got["name"] == "reboot" and got["params"] == {"delay": 3}
    assert got["expires_at"].endswith("+00:00")
    props = device.properties[0]
    assert props.ResponseTopic == f"devices/{device_id}/commands/response"
    assert props.CorrelationData == reply["id"].encode()
    assert await sync_to_async(history)(reply["id"]) == ["queued", "sent", "succeeded"]
    status, body = await sync_to_async(json_call)("GET", f"{running.web}/api/commands/{reply['id']}", token)
    assert status == 200 and body["status"] == "succeeded" and body["result"] == {"echo": {"delay": 3}}
    assert [h["status"] for h in body["history"]] == ["queued", "sent", "succeeded"]
    device.close()
    await dash.close()


async def test_error_response_fails_the_command(running, registry, owner):
    user, token = owner
    device_id, device = await online_device(running, registry, user, "valve", answer="error")
    dash = await open_dashboard(running, token, [device_id])

    reply = await issue(dash, device_id, name="open")
    failed = await status_frame(dash, reply["id"], "failed")
    assert failed["error"] == "device says no"
    assert await sync_to_async(history)(reply["id"]) == ["queued", "sent", "failed"]
    device.close()
    await dash.close()


async def test_offline_device_gets_its_command_when_it_comes_online(running, registry, owner):
    user, token = owner
    offline_id, _ = await sync_to_async(registry.device)("sleepy", owner=user)
    awake_id, _ = await sync_to_async(registry.device)("awake", owner=user)
    awake = await sync_to_async(Responder)(running.mqtt_url, awake_id)
    await await_db(lambda: command_ready(awake_id), what="device online")
    dash = await open_dashboard(running, token, [offline_id, awake_id])

    waiting = await issue(dash, offline_id, name="wake")
    # A later command to an online device completing proves the bridge has looked at the queue.
    other = await issue(dash, awake_id)
    await status_frame(dash, other["id"], "succeeded")
    assert await sync_to_async(command_status)(waiting["id"]) == "queued"

    device = await sync_to_async(Responder)(running.mqtt_url, offline_id, answer="ok")
    await status_frame(dash, waiting["id"], "succeeded")
    assert [c["id"] for c in device.received] == [waiting["id"]]
    assert await sync_to_async(history)(waiting["id"]) == ["queued", "sent", "succeeded"]
    device.close()
    awake.close()
    await dash.close()


async def test_command_expires_when_device_never_comes_online(running, registry, owner):
    user, token = owner
    device_id, _ = await sync_to_async(registry.device)("gone", owner=user)
    dash = await open_dashboard(running, token, [device_id])

    reply = await issue(dash, device_id, expires_in=1.5)
    expired = await status_frame(dash, reply["id"], "expired", timeout=10)
    assert expired["error"]
    assert await sync_to_async(history)(reply["id"]) == ["queued", "expired"]
    await dash.close()


async def test_unanswered_command_times_out(running, registry, owner):
    user, token = owner
    device_id, device = await online_device(running, registry, user, "mute", answer=None)
    dash = await open_dashboard(running, token, [device_id])

    reply = await issue(dash, device_id, timeout=1.5)
    await status_frame(dash, reply["id"], "sent")
    await status_frame(dash, reply["id"], "timed_out", timeout=10)
    assert await sync_to_async(history)(reply["id"]) == ["queued", "sent", "timed_out"]
    # A late answer changes nothing.
    await sync_to_async(device.respond)(reply["id"], "ok")
    await await_db(lambda: rejected(running, "response_finished") >= 1, what="late response counted")
    assert await sync_to_async(command_status)(reply["id"]) == "timed_out"
    device.close()
    await dash.close()


async def test_oneway_command_ends_at_sent(running, registry, owner):
    user, token = owner
    device_id, device = await online_device(running, registry, user, "lamp", answer=None)
    dash = await open_dashboard(running, token, [device_id])

    reply = await issue(dash, device_id, name="blink", oneway=True, timeout=1)
    await status_frame(dash, reply["id"], "sent")
    await sync_to_async(device.wait_commands)(1)
    stored = await sync_to_async(Command.objects.get)(pk=reply["id"])
    assert stored.status == "sent" and stored.finished_at is not None and stored.deadline is None
    device.close()
    await dash.close()


async def test_queued_command_is_cancelled_over_http_and_then_conflicts(running, registry, owner):
    user, token = owner
    device_id, _ = await sync_to_async(registry.device)("far", owner=user)
    dash = await open_dashboard(running, token, [device_id])

    status, created = await sync_to_async(json_call)("POST", f"{running.web}/api/devices/{device_id}/commands", token,
                                                {"name": "reboot", "params": {"hard": True}, "ref": "h1"})
    assert status == 202 and created["status"] == "queued" and created["params"] == {"hard": True}
    status, cancelled = await call_json("POST", f"{running.web}/api/commands/{created['id']}/cancel", token)
    assert status == 200 and cancelled["status"] == "cancelled"
    frame = await status_frame(dash, created["id"], "cancelled")
    assert frame["ref"] == "h1"

    status, again = await sync_to_async(json_call)("POST", f"{running.web}/api/commands/{created['id']}/cancel", token)
    assert status == 409 and again["error"]["code"] == "conflict"
    assert await sync_to_async(history)(created["id"]) == ["queued", "cancelled"]
    await dash.close()


async def test_same_idempotency_key_returns_the_first_command(running, registry, owner):
    user, token = owner
    device_id, _ = await sync_to_async(registry.device)("idem", owner=user)
    url = f"{running.web}/api/devices/{device_id}/commands"
    body = {"name": "reboot", "idempotency_key": "reboot-2026-01-01"}

    status, first = await sync_to_async(json_call)("POST", url, token, body)
    assert status == 202
    status, second = await sync_to_async(json_call)("POST", url, token, dict(body, params={"other": 1}))
    assert status == 202 and second["id"] == first["id"] and second["params"] == {}
    dash = await open_dashboard(running, token, [device_id])
    reply = await issue(dash, device_id, idempotency_key="reboot-2026-01-01")
    assert reply["id"] == first["id"]
    count = await sync_to_async(Command.objects.filter(device_id=device_id).count)()
    assert count == 1
    await dash.close()


async def test_commands_need_a_visible_device_and_valid_fields(running, registry, owner):
    user, token = owner
    stranger = await sync_to_async(registry.user)("stranger")
    theirs, _ = await sync_to_async(registry.device)("theirs", owner=stranger)
    dash = await Dashboard.open(running.ws, token)

    # Someone else's device is as unknown as a missing one: its existence is not leaked.
    assert (await issue(dash, theirs))["code"] == "unknown_device"
    assert (await issue(dash, "no-such-device-" + registry.tag))["code"] == "unknown_device"
    assert (await issue(dash, theirs, timeout=-1))["code"] == "bad_request"
    status, body = await sync_to_async(json_call)("POST", f"{running.web}/api/devices/{theirs}/commands", token,
                                             {"name": "reboot"})
    assert status == 404 and body["error"]["code"] == "unknown_device"  # the API does not leak existence
    status, body = await sync_to_async(json_call)("GET", f"{running.web}/api/commands/not-a-uuid", token)
    assert status == 404 and body["error"]["code"] == "unknown_command"
    theirs_command = await sync_to_async(command_issue)(user=stranger, device_id=theirs, name="reboot")
    status, body = await sync_to_async(json_call)("GET", f"{running.web}/api/commands/{theirs_command.id}", token)
    assert status == 404 and body["error"]["code"] == "unknown_command"
    status, body = await call_json("POST", f"{running.web}/api/commands/{theirs_command.id}/cancel", token)
    assert status == 404 and await sync_to_async(command_status)(str(theirs_command.id)) == "queued"
    await dash.close()


async def test_stray_responses_are_ignored_and_counted(running, registry, owner):
    user, token = owner
    a_id, _ = await sync_to_async(registry.device)("a", owner=user)
    b_id, _ = await sync_to_async(registry.device)("b", owner=user)
    a = await sync_to_async(Responder)(running.mqtt_url, a_id, answer=None)
    b = await sync_to_async(Responder)(running.mqtt_url, b_id, answer=None)
    await await_db(lambda: command_ready(a_id) and command_ready(b_id), what="devices online")
    dash = await open_dashboard(running, token, [a_id, b_id])

    reply = await issue(dash, a_id)
    await status_frame(dash, reply["id"], "sent")
    await sync_to_async(b.respond)(reply["id"], "ok")  # another device's command
    await sync_to_async(b.respond)("3b241101-e2bb-4255-8caf-4136c566a962", "ok")  # no such command
    await await_db(lambda: rejected(running, "response_wrong_device") >= 1
                      and rejected(running, "response_unknown") >= 1, what="stray responses counted")
    assert await sync_to_async(command_status)(reply["id"]) == "sent"

    await sync_to_async(a.respond)(reply["id"], "ok", result=1)
    await status_frame(dash, reply["id"], "succeeded")
    await sync_to_async(a.respond)(reply["id"], "error", error="again")  # already finished
    await await_db(lambda: rejected(running, "response_finished") >= 1, what="second answer counted")
    stored = await sync_to_async(Command.objects.get)(pk=reply["id"])
    assert stored.status == "succeeded" and stored.result == 1
    a.close()
    b.close()
    await dash.close()


def command_ready(device_id: str) -> bool:
    """The device is stored online (its `online` status was ingested)."""
    from devices.models import Device

    return Device.objects.filter(pk=device_id, online=True).exists()


def rejected(stack, reason: str) -> int:
    beat = BridgeHeartbeat.objects.filter(client_id=stack.env["MQTT_CLIENT_ID"]).first()
    return beat.counters.get("rejected", {}).get(reason, 0) if beat else 0


async def test_a_burst_of_stored_commands_all_complete(running, registry, owner):
    """Hundreds found by one sweep go out at once: publishes and PUBACKs overlap heavily."""
    user, token = owner
    device_id, device = await online_device(running, registry, user, "burst", answer="ok")

    def store(n: int) -> list[str]:
        return [str(command_issue(user=user, device_id=device_id, name="step", params={"n": i}).id) for i in range(n)]

    ids = await sync_to_async(store)(300)  # no nudge: the bridge's sweep finds them
    await await_db(lambda: Command.objects.filter(device_id=device_id, status="succeeded").count() == len(ids),
                   timeout=60, what="every command succeeded")
    assert sorted(c["id"] for c in device.received) == sorted(ids)
    device.close()


async def test_two_bridges_publish_each_command_once(running, registry, owner):
    """Both bridges sweep the same queue: row locks and leases give every command to one of them."""
    from testing.processes import drop_bridge_sessions

    user, _ = owner
    second = dict(MQTT_CLIENT_ID=running.env["MQTT_CLIENT_ID"] + "-b")
    await sync_to_async(running.start_bridge)(**second)
    device_id, device = await online_device(running, registry, user, "shared", answer="ok")
    try:
        ids = await sync_to_async(lambda: [
            str(command_issue(user=user, device_id=device_id, name="step", params={"n": i}).id) for i in range(200)
        ])()
        await await_db(lambda: Command.objects.filter(device_id=device_id, status="succeeded").count() == len(ids),
                       timeout=60, what="every command succeeded")
        assert sorted(c["id"] for c in device.received) == sorted(ids)  # each published exactly once
        clients = [running.env["MQTT_CLIENT_ID"], second["MQTT_CLIENT_ID"]]

        def sent_by_each() -> list[int]:
            return [b.counters.get("commands_sent", 0) for b in BridgeHeartbeat.objects.filter(client_id__in=clients)]

        await await_db(lambda: sum(sent_by_each()) == len(ids), what="heartbeats count every publish once")
    finally:
        device.close()
        running.bridges[-1].kill()
        await sync_to_async(drop_bridge_sessions)(running.mqtt_url, dict(running.env, **second))
