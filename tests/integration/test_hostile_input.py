"""Nothing a client sends yields a 500, a dead socket or a half-done command (real Daphne, the real database).

PostgreSQL refuses NUL in text and jsonb, and Python's datetime overflows near years 1 and 9999: input
that reaches either unchecked used to be a 500 over HTTP and a killed, leaked socket over WebSocket.
"""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from websockets.exceptions import InvalidStatus

from devices.models import Command, Device
from testing.http import basic, call
from testing.mqtt import Responder
from testing.waiting import wait_until
from testing.ws import Dashboard
from tests.integration.test_api import metric

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

NUL = "\u0000"


@pytest.fixture
def tenant(registry):
    """A user with a token and a device, and a staff token."""
    user, staff = registry.user("owner"), registry.user("ops", staff=True)
    device_id, secret = registry.device("d", owner=user)
    return {"user": user, "token": registry.token(user), "staff": registry.token(staff), "device": device_id,
            "secret": secret, "registry": registry}


def web_queries(seconds: float) -> int:
    """Queries other sessions started on the test database during `seconds` (PostgreSQL's live view)."""
    seen: set[tuple[int, object]] = set()
    deadline = time.monotonic() + seconds
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT pid, query_start FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid() AND query_start IS NOT NULL")
            seen.update(cursor.fetchall())
            time.sleep(0.05)
    first = {pid for pid, _ in seen}
    return len(seen) - len(first)  # new query starts beyond each session's first sighting


# --- WebSocket: an error frame, the socket stays, and nothing leaks -------------------------------------

async def test_nul_in_command_fields_is_an_error_frame_and_closed_sockets_leave_nothing(stack, tenant):
    if connection.vendor != "postgresql":
        pytest.skip("NUL is refused by PostgreSQL only")
    stack.env.update(IOTGW_WS_RECHECK_SECONDS="0.3")
    await sync_to_async(stack.start_web)()
    baseline = await sync_to_async(metric)(stack.web, "iotgw_websockets_open")
    fields = [{"params": {"note": f"a{NUL}b"}}, {"params": {f"k{NUL}": 1}}, {"idempotency_key": f"key{NUL}"},
              {"ref": f"ref{NUL}"}]
    sockets = [await Dashboard.open(stack.ws, tenant["token"]) for _ in range(12)]
    for n, dash in enumerate(sockets):
        await dash.send({"type": "command", "device": tenant["device"], "name": "reboot", **fields[n % 4]})
        error = await dash.next(lambda f: f["type"] == "error")
        assert error["code"] == "bad_request", error
        await dash.send({"type": "ping"})
        assert (await dash.next(lambda f: f["type"] in ("pong", "error")))["type"] == "pong"
    assert not await sync_to_async(Command.objects.exists)()

    for dash in sockets:
        await dash.close()
    await sync_to_async(wait_until)(lambda: metric(stack.web, "iotgw_websockets_open") == baseline,
                                    what="the open-sockets gauge back at its baseline")
    # A leaked credential re-check would query every 0.3 s per socket: 12 of them, ~40 queries a second.
    assert await sync_to_async(web_queries)(3.0) <= 2


async def test_a_ref_the_wire_cannot_carry_is_refused_before_anything_is_stored(stack, tenant):
    await sync_to_async(stack.start_web)()
    url = stack.web + f"/api/devices/{tenant['device']}/commands"
    for ref in (2**70, 2**53, -(2**53), f"r{NUL}"):
        reply = await sync_to_async(call)("POST", url, body={"name": "reboot", "ref": ref}, token=tenant["token"])
        assert (reply.status, reply.error_code) == (400, "bad_request"), ref
    dash = await Dashboard.open(stack.ws, tenant["token"])
    await dash.ws.send(f'{{"type": "command", "device": "{tenant["device"]}", "name": "reboot", "ref": {2**64 - 1}}}')
    error = await dash.next(lambda f: f["type"] == "error")
    assert error["code"] == "bad_request" and error["ref"] == 2**64 - 1
    assert not await sync_to_async(Command.objects.exists)()
    await dash.close()


async def test_the_largest_ref_is_stored_answered_and_published_once(stack, tenant):
    await sync_to_async(stack.start_web)()
    await sync_to_async(stack.start_bridge)()
    device = await sync_to_async(Responder)(stack.mqtt_url, tenant["device"], answer="ok")
    await sync_to_async(wait_until)(lambda: Device.objects.get(pk=tenant["device"]).online, what="device online")
    dash = await Dashboard.open(stack.ws, tenant["token"])
    await dash.subscribe([tenant["device"]])

    ref = 2**53 - 1
    reply = await sync_to_async(call)("POST", stack.web + f"/api/devices/{tenant['device']}/commands",
                                      body={"name": "reboot", "ref": ref, "params": {"big": 2**63 - 1}},
                                      token=tenant["token"])
    assert reply.status == 202 and reply.json()["ref"] == ref
    done = await dash.next(lambda f: f["type"] == "command" and f["status"] == "succeeded")
    assert done["ref"] == ref and done["id"] == reply.json()["id"]
    received = await sync_to_async(lambda: [c["id"] for c in device.received])()
    assert received == [reply.json()["id"]]
    assert (await sync_to_async(Command.objects.get)(pk=done["id"])).ref == ref
    device.close()
    await dash.close()


async def test_a_socket_sending_nothing_but_bad_frames_stays_open(stack, tenant):
    await sync_to_async(stack.start_web)()
    dash = await Dashboard.open(stack.ws, tenant["token"])
    device = tenant["device"]
    frames = [
        '{"type": "subscribe", "devices": ["a\\u0000"]}',
        '{"type": "subscribe", "devices": ["abc\\n"]}',
        '{"type": "command", "device": "x\\u0000", "name": "reboot"}',
        f'{{"type": "command", "device": "{device}", "name": "reboot\\n"}}',
        f'{{"type": "command", "device": "{device}", "name": "reboot", "ref": {"[" * 300 + "]" * 300}}}',
        '{"type": "unsubscribe", "devices": ["\\u0000"]}',
    ]
    for text in frames:
        await dash.ws.send(text)
        error = await dash.next(lambda f: f["type"] == "error")
        assert error["code"] == "bad_request", text
    await dash.send({"type": "ping"})
    assert (await dash.next(lambda f: f["type"] in ("pong", "error")))["type"] == "pong"
    await dash.close()


# --- HTTP: a 4xx in the API's error shape, never a 500 ---------------------------------------------------

def test_hostile_paths_and_queries_get_4xx(stack, tenant):
    stack.start_web()
    device, token = tenant["device"], tenant["token"]
    cases = [
        ("GET", "/api/devices/%00", None, 404),
        ("GET", "/api/devices/a%00b/telemetry", None, 404),
        ("GET", "/api/devices/abc%0A", None, 404),
        ("POST", "/api/devices/%00/commands", {"name": "reboot"}, 404),
        ("GET", "/api/commands/%00", None, 404),
        ("POST", "/api/commands/%00/cancel", None, 404),
        ("GET", f"/api/devices/{device}/telemetry?since=%C2%B2", None, 400),
        ("GET", f"/api/devices/{device}/telemetry?since=0001-01-01T00:00:00%2B14:00", None, 400),
        ("GET", f"/api/devices/{device}/telemetry?until=9999-12-31T23:59:59-14:00", None, 400),
        ("GET", f"/api/devices/{device}/telemetry?after=9999-12-31T23:59:59-14:00", None, 400),
        ("GET", f"/api/devices/{device}/telemetry?since=%00", None, 400),
        ("GET", f"/api/devices/{device}/telemetry?metric=t%00", None, 400),
        ("GET", f"/api/devices/{device}/telemetry?limit=%00", None, 400),
    ]
    for method, path, body, status in cases:
        reply = call(method, stack.web + path, body=body, token=token)
        assert reply.status == status and reply.error_code, (path, reply.status, reply.body[:200])


def test_hostile_bodies_get_4xx(stack, tenant):
    stack.start_web()
    device, token, staff = tenant["device"], tenant["token"], tenant["staff"]
    commands = stack.web + f"/api/devices/{device}/commands"
    bad_commands = [
        {"name": "reboot", "params": {"x": NUL}},
        {"name": "reboot", "params": {NUL: 1}},
        {"name": "reboot", "idempotency_key": NUL},
        {"name": "reboot", "ref": NUL},
        {"name": "reboot", "ref": 2**70},
        {"name": "reboot", "params": {"x": 2**70}},
        {"name": NUL},
    ]
    for body in bad_commands:
        reply = call("POST", commands, body=body, token=token)
        assert (reply.status, reply.error_code) == (400, "bad_request"), body
    for raw in (b'{"name": "reboot", "params": {"x": NaN}}', b'{"name": "reboot", "params": {"x": Infinity}}',
                b'{"name": "reboot", "ref": "\\ud800"}', b'{"name": "reboot", "idempotency_key": "\\udfff"}',
                b'{"name": "reboot", "params": {"\\ud800": 1}}'):
        reply = call("POST", commands, raw=raw, token=token)
        assert (reply.status, reply.error_code) == (400, "bad_request"), raw

    register = stack.web + "/api/devices"
    bad_devices = [
        {"id": f"x{NUL}"}, {"id": "dev\n"}, {"id": "ok-1", "name": NUL}, {"id": "ok-2", "name": "n" * 201},
        {"id": "ok-3", "groups": [NUL]}, {"id": "ok-4", "groups": ["g" * 151]}, {"id": "ok-5", "groups": [""]},
        {"id": "ok-6", "owner": NUL},
    ]
    for body in bad_devices:
        reply = call("POST", register, body=body, token=staff)
        assert (reply.status, reply.error_code) in ((400, "bad_request"), (400, "bad_device_id")), body
    assert not Device.objects.filter(pk__startswith="ok-").exists()
    assert not Command.objects.exists()


def test_ingest_and_broker_hooks_refuse_hostile_ids_without_a_500(stack, tenant):
    stack.start_web()
    reply = call("POST", stack.web + "/api/ingest/%00/telemetry", body={"x": 1},
                 headers={"Authorization": "Bearer whatever"})
    assert reply.status == 401
    reply = call("POST", stack.web + "/api/ingest/a%00/telemetry", body={"x": 1}, headers=basic("a\x00", "s"))
    assert reply.status == 401
    for fields in ({"username": NUL, "password": "x"}, {"username": tenant["device"], "password": NUL},
                   {"username": f"{tenant['device']}{NUL}", "password": tenant["secret"]}):
        reply = call("POST", stack.web + "/mqtt/auth", body=fields)
        assert (reply.status, reply.json()["result"]) == (200, "deny"), fields
    acl = {"username": tenant["device"], "topic": f"devices/{tenant['device']}/telemetry{NUL}", "action": "publish"}
    reply = call("POST", stack.web + "/mqtt/acl", body=acl)
    assert (reply.status, reply.json()["result"]) == (200, "deny")


async def test_a_session_cookie_no_session_can_have_is_no_session(stack, tenant):
    """Django's cookie parser turns `\\000` into NUL; the session lookup then reached PostgreSQL: 500 everywhere."""
    await sync_to_async(stack.start_web)()
    cookie = {"Cookie": 'sessionid="abcdefgh\\000x"'}
    for path, status in (("/api/devices", 401), ("/", 200), ("/login/", 200)):  # "/" redirects to the login
        reply = await sync_to_async(call)("GET", stack.web + path, headers=cookie)
        assert reply.status == status, (path, reply.status)
    with pytest.raises(InvalidStatus) as refused:
        await Dashboard.open(stack.ws, additional_headers=cookie, origin=stack.web)
    assert refused.value.response.status_code == 403
