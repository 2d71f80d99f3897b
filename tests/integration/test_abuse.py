"""The abuse battery over HTTP and WebSocket: each attack gets a clear error; nobody else's data or session is touched.

(Bad MQTT input to the bridge is tests/integration/test_bad_input.py; broker-side ACLs are test_broker_auth.py
and test_dynsec.py.)
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone
from websockets.exceptions import ConnectionClosed, InvalidStatus

from devices.models import ApiToken, Command, Device, Telemetry
from devices.services.devices import device_set_enabled
from testing.http import basic, call
from testing.processes import ROOT
from testing.ws import Dashboard

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

BIG = 64 * 1024


@pytest.fixture
def world(registry):
    """Alice owns `a1` (with one stored sample); Bob owns `b1`; Carol shares nothing; tokens for each."""
    alice, bob, carol = registry.user("alice"), registry.user("bob"), registry.user("carol")
    lab = f"lab-{registry.tag}"
    alice.groups.add(Group.objects.get_or_create(name=lab)[0])
    a1, b1 = registry.device("a1", owner=alice), registry.device("b1", owner=bob)
    tokens = {"alice": registry.token(alice), "bob": registry.token(bob), "carol": registry.token(carol)}
    return {"a1": a1, "b1": b1, "tokens": tokens, "users": {"alice": alice, "bob": bob}, "registry": registry}


def rows(device_id: str) -> list[tuple]:
    return list(Telemetry.objects.filter(device_id=device_id).order_by("ts").values_list("ts", "data"))


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def open_socket(url: str, *, token: str | None = None, cookie: str | None = None,
                      origin: str | None = None) -> Dashboard:
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cookie:
        headers["Cookie"] = f"sessionid={cookie}"
    return Dashboard(await websockets.connect(url, additional_headers=headers, origin=origin, max_size=None))


async def alive(dash: Dashboard) -> bool:
    """The socket still answers a ping."""
    await dash.send({"type": "ping"})
    return (await dash.next(lambda f: f["type"] == "pong", timeout=10))["type"] == "pong"


async def closed_with(dash: Dashboard, timeout: float = 15.0) -> int:
    """Read until the server closes the socket; its close code."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                dash.frames.append(json.loads(await dash.ws.recv()))
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else -1


# --- HTTP ingest ------------------------------------------------------------------

BAD_BODIES = [
    ("not json", b'{"x": 1', 400, "not_json"),
    ("not utf-8", b'{"x": "\xff\xfe"}', 400, "not_utf8"),
    ("nan", b'{"x": NaN}', 400, "not_json"),
    ("nested value", b'{"x": {"y": 1}}', 400, "bad_sample"),
    ("metric name", b'{"no spaces": 1}', 400, "bad_sample"),
    ("long string", b'{"x": "' + b"s" * 257 + b'"}', 400, "bad_sample"),
    ("naive ts", b'{"ts": "2026-01-01T00:00:00", "x": 1}', 400, "bad_sample"),
    ("no metric", b'{"ts": 1767225600000}', 400, "bad_sample"),
    ("empty array", b"[]", 400, "bad_sample"),
    ("one bad sample in an array", b'[{"x": 1}, {"x": [1]}]', 400, "bad_sample"),
    ("oversized", b'{"x": "' + b"a" * BIG + b'"}', 413, "too_large"),
]


def test_bad_http_ingest_bodies_are_rejected_alone(stack, world):
    stack.start_web()
    (a1, a1_secret), (b1, b1_secret) = world["a1"], world["b1"]
    ok = call("POST", stack.web + f"/api/ingest/{b1}/telemetry", body={"ts": 1767225600000, "v": 1},
              headers=basic(b1, b1_secret))
    assert ok.status == 200
    bystander_rows, bystander_latest = rows(b1), Device.objects.get(pk=b1).latest

    for case, body, status, code in BAD_BODIES:
        reply = call("POST", stack.web + f"/api/ingest/{a1}/telemetry", raw=body, headers=basic(a1, a1_secret))
        assert (reply.status, reply.error_code) == (status, code), case
    assert rows(a1) == []  # not even the good half of a half-bad array
    good = call("POST", stack.web + f"/api/ingest/{a1}/telemetry", body={"x": 2}, headers=basic(a1, a1_secret))
    assert good.status == 200 and len(rows(a1)) == 1
    assert rows(b1) == bystander_rows and Device.objects.get(pk=b1).latest == bystander_latest


def test_http_ingest_refuses_other_devices_credentials(stack, world):
    stack.start_web()
    (a1, a1_secret), (b1, b1_secret) = world["a1"], world["b1"]
    url = stack.web + f"/api/ingest/{b1}/telemetry"
    attempts = {
        "no credentials": {},
        "a1's secret as bearer": {"Authorization": f"Bearer {a1_secret}"},
        "a1's own basic": basic(a1, a1_secret),
        "b1's id, a1's secret": basic(b1, a1_secret),
        "an API token": {"Authorization": f"Bearer {world['tokens']['bob']}"},
        "garbled basic": {"Authorization": "Basic %%%"},
    }
    for case, headers in attempts.items():
        reply = call("POST", url, body={"spoof": 1}, headers=headers)
        assert (reply.status, reply.error_code) == (401, "unauthorized"), case
        assert reply.headers["www-authenticate"].startswith("Basic"), case
    ghost = call("POST", stack.web + "/api/ingest/ghost-device/telemetry", body={"x": 1}, headers=basic("ghost", "x"))
    assert ghost.status == 401
    device_set_enabled(device_id=b1, enabled=False)
    disabled = call("POST", url, body={"x": 1}, headers=basic(b1, b1_secret))
    assert disabled.status == 401
    assert rows(b1) == []


def test_flooding_http_ingest_gets_429_per_device(stack, world):
    stack.env.update(IOTGW_HTTP_INGEST_RATE="0.2", IOTGW_HTTP_INGEST_BURST="3")
    stack.start_web()
    (a1, a1_secret), (b1, b1_secret) = world["a1"], world["b1"]
    statuses = [call("POST", stack.web + f"/api/ingest/{a1}/telemetry", body={"n": i},
                     headers=basic(a1, a1_secret)).status for i in range(6)]
    assert statuses[:3] == [200, 200, 200] and set(statuses[3:]) == {429}
    reply = call("POST", stack.web + f"/api/ingest/{a1}/telemetry", body={"n": 9}, headers=basic(a1, a1_secret))
    assert reply.error_code == "rate_limited"
    other = call("POST", stack.web + f"/api/ingest/{b1}/telemetry", body={"n": 1}, headers=basic(b1, b1_secret))
    assert other.status == 200  # each device has its own bucket
    assert len(rows(a1)) == 3


# --- seeing and commanding devices that are not yours ----------------------------

async def test_user_cannot_read_subscribe_or_command_a_device_they_may_not_see(stack, world):
    await sync_to_async(stack.start_web)()
    (b1, b1_secret), tokens = world["b1"], world["tokens"]
    for path in (f"/api/devices/{b1}", f"/api/devices/{b1}/telemetry"):
        reply = await sync_to_async(call)("GET", stack.web + path, token=tokens["carol"])
        assert (reply.status, reply.error_code) == (404, "unknown_device")
    issued = await sync_to_async(call)("POST", stack.web + f"/api/devices/{b1}/commands", body={"name": "reboot"},
                                       token=tokens["carol"])
    assert (issued.status, issued.error_code) == (404, "unknown_device")

    bob = await open_socket(stack.ws, token=tokens["bob"])
    await bob.subscribe([b1])
    carol = await open_socket(stack.ws, token=tokens["carol"])
    # Over the WebSocket too, Bob's device is answered exactly like one that does not exist.
    answers = []
    for target in (b1, "ghost-device"):
        await carol.send({"type": "subscribe", "devices": [target], "ref": "peek"})
        answers.append((await carol.next(lambda f: f["type"] == "error"))["message"].replace(target, "ID"))
        assert (await carol.next(lambda f: f["type"] == "snapshot"))["devices"] == []
        await carol.send({"type": "command", "device": target, "name": "reboot", "params": {}, "ref": "cmd"})
        error = await carol.next(lambda f: f["type"] == "error")
        assert (error["code"], error["ref"]) == ("unknown_device", "cmd")
        answers.append(error["message"].replace(target, "ID"))
    assert answers[:2] == answers[2:]
    assert not await sync_to_async(Command.objects.filter(device_id=b1).exists)()

    # Bob's device reports: Bob sees it, Carol's socket gets nothing but her pong.
    await sync_to_async(call)("POST", stack.web + f"/api/ingest/{b1}/telemetry", body={"secret_value": 42},
                              headers=basic(b1, b1_secret))
    assert (await bob.telemetry_until(1, b1))[0]["data"] == {"secret_value": 42}
    assert await alive(carol)
    assert not any(f["type"] in ("telemetry", "status") for f in carol.frames)
    await bob.close()
    await carol.close()


# --- tokens and sessions ------------------------------------------------------------

async def test_missing_wrong_and_revoked_tokens_are_refused_and_revocation_closes_sockets(stack, world):
    await sync_to_async(stack.start_web)()
    tokens, registry = world["tokens"], world["registry"]
    second = await sync_to_async(registry.token)(world["users"]["alice"])
    for headers in ({}, {"Authorization": "Bearer iotgw_wrong"}, {"Authorization": "Bearer"},
                    {"Authorization": "Token " + tokens["alice"]}):
        reply = await sync_to_async(call)("GET", stack.web + "/api/devices", headers=headers)
        assert (reply.status, reply.error_code) == (401, "unauthorized"), headers

    doomed = [await open_socket(stack.ws, token=tokens["alice"]) for _ in range(2)]
    kept = await open_socket(stack.ws, token=second)  # Alice's other token
    bob = await open_socket(stack.ws, token=tokens["bob"])
    for dash in (*doomed, kept, bob):
        assert await alive(dash)

    # Revoked from the command line, as an operator would: the open sockets of that token close with 4401.
    result = await sync_to_async(subprocess.run)(
        [sys.executable, "manage.py", "revoketoken", tokens["alice"]], cwd=ROOT, env=stack.env,
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [await closed_with(d) for d in doomed] == [4401, 4401]
    assert await alive(kept) and await alive(bob)

    reply = await sync_to_async(call)("GET", stack.web + "/api/devices", token=tokens["alice"])
    assert reply.status == 401
    with pytest.raises(InvalidStatus) as refused:
        await open_socket(stack.ws, token=tokens["alice"])
    assert refused.value.response.status_code == 403
    await kept.close()
    await bob.close()


async def test_logout_closes_only_that_sessions_sockets(stack, world):
    await sync_to_async(stack.start_web)()
    alice = world["users"]["alice"]
    first, second = await sync_to_async(session_cookie)(alice), await sync_to_async(session_cookie)(alice)
    origin = stack.web
    ending = await open_socket(stack.ws, cookie=first, origin=origin)
    staying = await open_socket(stack.ws, cookie=second, origin=origin)
    bob = await open_socket(stack.ws, token=world["tokens"]["bob"])
    assert await alive(ending) and await alive(staying)

    csrf = "a" * 32
    reply = await sync_to_async(call)("POST", stack.web + "/logout/", raw=b"",
                                      headers={"Cookie": f"sessionid={first}; csrftoken={csrf}", "X-CSRFToken": csrf},
                                      content_type="application/x-www-form-urlencoded")
    assert reply.status in (200, 302)
    assert await closed_with(ending) == 4401
    assert await alive(staying) and await alive(bob)
    await staying.close()
    await bob.close()


async def test_foreign_origin_with_session_cookie_is_refused(stack, world):
    await sync_to_async(stack.start_web)()
    cookie = await sync_to_async(session_cookie)(world["users"]["alice"])
    with pytest.raises(InvalidStatus) as refused:
        await open_socket(stack.ws, cookie=cookie, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        await open_socket(stack.ws, cookie=cookie)  # no Origin at all
    same_site = await open_socket(stack.ws, cookie=cookie, origin=stack.web)
    assert await alive(same_site)
    await same_site.close()

    # The HTTP API: a cookie alone may read, but a cross-site write is refused (CSRF), in the error shape.
    headers = {"Cookie": f"sessionid={cookie}"}
    assert (await sync_to_async(call)("GET", stack.web + "/api/devices", headers=headers)).status == 200
    forged = await sync_to_async(call)("POST", stack.web + "/api/devices", body={"id": "forged-device"},
                                       headers={**headers, "Origin": "http://evil.example"})
    assert (forged.status, forged.error_code) == (403, "forbidden")
    assert not await sync_to_async(Device.objects.filter(pk="forged-device").exists)()


# --- WebSocket frames -----------------------------------------------------------------

async def test_frame_over_64k_closes_only_that_socket(stack, world):
    await sync_to_async(stack.start_web)()
    big = await open_socket(stack.ws, token=world["tokens"]["alice"])
    other = await open_socket(stack.ws, token=world["tokens"]["bob"])
    await big.ws.send(json.dumps({"type": "ping", "pad": "x" * (BIG - 1024)}))
    assert (await big.next())["type"] == "pong"  # just under the limit is fine
    big.frames.clear()
    await big.ws.send(json.dumps({"type": "ping", "pad": "x" * BIG}))
    # Autobahn (inside Daphne) fails the connection at once: 1009, or a drop without a close frame.
    assert await closed_with(big) in (1009, -1)
    assert not big.frames  # the consumer never saw the frame, so no pong
    assert await alive(other)
    await other.close()


async def test_bad_frames_get_errors_and_the_socket_stays(stack, world):
    await sync_to_async(stack.start_web)()
    dash = await open_socket(stack.ws, token=world["tokens"]["alice"])
    for frame in ("not json", "[]", '{"type": "shout"}', '{"type": "subscribe", "devices": "a1"}',
                  '{"type": "subscribe", "devices": ["../../etc"]}', '"\\ud800"'):
        await dash.ws.send(frame)
        error = await dash.next(lambda f: f["type"] == "error")
        assert error["code"] == "bad_request", frame
    await dash.ws.send(b"\x00\x01binary")
    assert (await dash.next(lambda f: f["type"] == "error"))["code"] == "bad_request"
    assert await alive(dash)
    await dash.close()


async def test_flooding_socket_is_throttled_then_closed(stack, world):
    stack.env.update(IOTGW_WS_RATE="5", IOTGW_WS_BURST="10")
    await sync_to_async(stack.start_web)()
    flood = await open_socket(stack.ws, token=world["tokens"]["alice"])
    bystander = await open_socket(stack.ws, token=world["tokens"]["bob"])
    try:
        for _ in range(200):
            await flood.ws.send('{"type": "ping"}')
    except ConnectionClosed:
        pass
    assert await closed_with(flood) == 4429
    kinds = [f.get("code", f["type"]) for f in flood.frames]
    assert kinds.count("rate_limited") == 1 and kinds.index("rate_limited") >= 10
    assert "pong" in kinds and kinds.count("pong") < 20
    assert await alive(bystander)
    await bystander.close()


async def test_revocation_whose_close_message_was_lost_still_ends_the_socket(stack, world):
    stack.env.update(IOTGW_WS_RECHECK_SECONDS="0.5")
    await sync_to_async(stack.start_web)()
    tokens = world["tokens"]
    dash = await open_socket(stack.ws, token=tokens["alice"])
    bob = await open_socket(stack.ws, token=tokens["bob"])
    assert await alive(dash)
    # Revoked behind the gateway's back (no message on the channel layer): the periodic re-check notices.
    await sync_to_async(ApiToken.objects.filter(user=world["users"]["alice"]).update)(revoked_at=timezone.now())
    assert await closed_with(dash) == 4401
    assert await alive(bob)
    await bob.close()
