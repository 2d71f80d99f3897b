"""The dashboard consumer in-process (WebsocketCommunicator, in-memory layer): failures, clean-up, tenancy,
Origin and the outbound budget. The same promises over real Daphne are in tests/integration/."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.urls import path
from prometheus_client import REGISTRY

from core.channels import user_group
from core.payloads import Sample
from core.push import PushBatch, push_send
from devices.models import Command
from devices.services.devices import device_register
from devices.services.tokens import token_create
from protocols import consumers
from protocols.auth import BearerOrSessionAuthMiddleware
from protocols.consumers import CLOSE_NOT_READING, DashboardConfig, DashboardConsumer
from protocols.outbound import SCOPE_KEY

pytestmark = pytest.mark.django_db(transaction=True)


class FakeOutbound:
    """Stands in for Daphne's transport probe: the test says how many bytes wait unsent."""

    def __init__(self) -> None:
        self.waiting = 0

    def pending(self) -> int:
        return self.waiting


def application(outbound: FakeOutbound | None = None, config: DashboardConfig | None = None):
    consumer = DashboardConsumer.as_asgi(config=config)
    inner = BearerOrSessionAuthMiddleware(URLRouter([path("ws/dashboard/", consumer)]))
    if outbound is None:
        return inner

    async def with_probe(scope, receive, send):
        return await inner(dict(scope, **{SCOPE_KEY: outbound}), receive, send)

    return with_probe


@pytest.fixture
def alice():
    """Alice with a token and device a1; Bob's device b1 exists but is not hers."""
    users = get_user_model()
    alice, bob = users.objects.create_user("alice"), users.objects.create_user("bob")
    device_register(device_id="a1", owner=alice)
    device_register(device_id="b1", owner=bob)
    return alice, token_create(user=alice)


async def connect(token: str | None = None, *, headers: list | None = None, outbound=None, config=None):
    headers = list(headers or [])
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    socket = WebsocketCommunicator(application(outbound, config), "/ws/dashboard/", headers=headers)
    connected, _ = await socket.connect()
    return socket, connected


async def frame(socket, kind: str | None = None, timeout: float = 5) -> dict:
    """The next frame (of a kind), skipping others."""
    async with asyncio.timeout(timeout):
        while True:
            got = json.loads(await socket.receive_from(timeout))
            if kind is None or got["type"] == kind:
                return got


async def alive(socket) -> bool:
    await socket.send_to(text_data='{"type": "ping"}')
    return (await frame(socket, "pong"))["type"] == "pong"


async def until(predicate, *, what: str, timeout: float = 5.0) -> None:
    """Wait on the loop itself (no threads: the tasks to watch live on it) until `predicate()` holds."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting until {what}") from None


def recheck_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if "_recheck_credentials" in repr(t.get_coro()) and not t.done()]


def open_gauge() -> float:
    return REGISTRY.get_sample_value("iotgw_websockets_open")


# --- an unexpected failure is an error frame, and clean-up runs on every exit path ---------------

async def test_an_unexpected_error_in_a_handler_is_an_error_frame_and_the_socket_stays(alice, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(consumers, "command_issue", broken)
    socket, _ = await connect(alice[1])
    await socket.send_json_to({"type": "command", "device": "a1", "name": "reboot", "ref": "r1"})
    error = await frame(socket, "error")
    assert (error["code"], error["ref"]) == ("internal_error", "r1")
    assert "a bug" not in error["message"]  # nothing of the server's insides
    assert await alive(socket)
    await socket.disconnect()


async def test_a_stray_message_on_the_sockets_groups_does_not_end_it(alice):
    socket, _ = await connect(alice[1])
    await get_channel_layer().group_send(user_group(alice[0].pk), {"type": "no.such.handler"})
    assert await alive(socket)
    await socket.disconnect()


async def test_a_socket_ended_by_the_server_leaves_no_gauge_or_recheck_task_behind(alice):
    baseline, tasks = open_gauge(), len(recheck_tasks())
    sockets = [(await connect(alice[1]))[0] for _ in range(5)]
    assert open_gauge() == baseline + 5 and len(recheck_tasks()) == tasks + 5
    for socket in sockets:
        # As Daphne does to an application that outlives its connection (or at shutdown): cancel it.
        socket.future.cancel()
        with pytest.raises(asyncio.CancelledError):
            await socket.future
    assert open_gauge() == baseline
    await until(lambda: len(recheck_tasks()) == tasks, what="the cancelled recheck tasks finished")


async def test_a_failing_group_discard_still_cleans_up(alice, monkeypatch):
    baseline = open_gauge()
    socket, _ = await connect(alice[1])
    layer = get_channel_layer()

    async def failing(group, channel):
        raise ConnectionError("redis away")

    monkeypatch.setattr(layer, "group_discard", failing)
    await socket.disconnect()
    assert open_gauge() == baseline
    await until(lambda: not recheck_tasks(), what="the cancelled recheck tasks finished")


@pytest.mark.parametrize("field", [{"params": {"x": "a\u0000b"}}, {"params": {"k\u0000": 1}},
                                   {"idempotency_key": "k\u0000"}, {"ref": "r\u0000"}, {"ref": 2**70},
                                   {"params": {"deep": json.loads("[" * 40 + "]" * 40)}}])
async def test_command_fields_the_database_would_refuse_are_bad_requests(alice, field):
    socket, _ = await connect(alice[1])
    await socket.send_json_to({"type": "command", "device": "a1", "name": "reboot", **field})
    error = await frame(socket, "error")
    assert error["code"] == "bad_request"
    assert await alive(socket)
    assert not await sync_to_async(Command.objects.exists)()
    await socket.disconnect()


# --- no enumeration ----------------------------------------------------------------------

async def test_someone_elses_device_is_answered_like_a_missing_one(alice):
    socket, _ = await connect(alice[1])
    answers = {}
    for device in ("b1", "ghost"):
        await socket.send_json_to({"type": "subscribe", "devices": [device], "ref": "s"})
        answers["subscribe", device] = await frame(socket, "error")
        assert (await frame(socket, "snapshot"))["devices"] == []
        await socket.send_json_to({"type": "command", "device": device, "name": "reboot", "ref": "c"})
        answers["command", device] = await frame(socket, "error")
    for kind in ("subscribe", "command"):
        hidden, missing = answers[kind, "b1"], answers[kind, "ghost"]
        assert hidden["code"] == missing["code"] == "unknown_device"
        assert json.dumps(hidden).replace("b1", "ID") == json.dumps(missing).replace("ghost", "ID")
    await socket.disconnect()


# --- Origin, as Django's CSRF check reads it --------------------------------------------------

SITE = "127.0.0.1:8000"


@pytest.fixture
def cookie(alice):
    client = Client()
    client.force_login(alice[0])
    return client.cookies["sessionid"].value


async def cookie_socket(cookie: str, origin: str | None, *, host: str = SITE, extra: list | None = None) -> bool:
    headers = [(b"cookie", f"sessionid={cookie}".encode()), (b"host", host.encode()), *(extra or [])]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    socket, connected = await connect(headers=headers)
    await socket.disconnect()
    return connected


@pytest.mark.parametrize("origin, allowed", [
    ("http://127.0.0.1:8000", True),
    ("http://127.0.0.1:9999", False),  # another port
    ("https://localhost", False),  # another scheme and host
    ("https://127.0.0.1:8000", False),  # another scheme
    ("http://localhost:8000", False),  # another host, though allowed
    ("http://127.0.0.1", False),  # the default port is another port
    ("null", False),
    (None, False),
])
async def test_a_cookie_socket_needs_the_sites_own_scheme_host_and_port(cookie, origin, allowed):
    assert await cookie_socket(cookie, origin) is allowed


async def test_a_host_outside_allowed_hosts_is_no_own_origin(cookie):
    assert not await cookie_socket(cookie, "http://evil.example:8000", host="evil.example:8000")


@override_settings(CSRF_TRUSTED_ORIGINS=["https://dash.example.com", "https://*.corp.example"])
@pytest.mark.parametrize("origin, allowed", [
    ("https://dash.example.com", True),
    ("http://dash.example.com", False),
    ("https://a.corp.example", True),
    ("https://corp.example.evil", False),
])
async def test_csrf_trusted_origins_are_honoured(cookie, origin, allowed):
    assert await cookie_socket(cookie, origin) is allowed


@override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
async def test_behind_a_tls_proxy_the_own_origin_is_https(cookie):
    forwarded = [(b"x-forwarded-proto", b"https")]
    assert await cookie_socket(cookie, "https://127.0.0.1:8000", extra=forwarded)
    assert not await cookie_socket(cookie, "http://127.0.0.1:8000", extra=forwarded)


async def test_a_token_socket_needs_no_origin(alice):
    socket, connected = await connect(alice[1], headers=[(b"origin", b"http://elsewhere.example")])
    assert connected
    await socket.disconnect()


# --- the outbound budget -------------------------------------------------------------------

async def push_sample(device_id: str, value: int) -> None:
    batch = PushBatch()
    batch.telemetry(device_id, Sample(ts=datetime.now(UTC), data={"v": value}))
    await push_send(get_channel_layer(), batch)


async def test_a_client_that_falls_behind_gets_no_pushes_then_a_snapshot_once_drained(alice):
    outbound = FakeOutbound()
    socket, _ = await connect(alice[1], outbound=outbound, config=DashboardConfig(send_buffer=1000))
    await socket.send_json_to({"type": "subscribe", "devices": ["a1"]})
    await frame(socket, "snapshot")
    await push_sample("a1", 1)
    assert (await frame(socket, "telemetry"))["items"][0]["data"] == {"v": 1}

    skipped = REGISTRY.get_sample_value("iotgw_ws_push_skipped_total")
    outbound.waiting = 1500  # the client stopped reading
    for n in range(2, 5):
        await push_sample("a1", n)
    assert await socket.receive_nothing(0.3)
    assert REGISTRY.get_sample_value("iotgw_ws_push_skipped_total") >= skipped + 3

    outbound.waiting = 0  # it read everything
    snapshot = await frame(socket, "snapshot")
    assert [d["id"] for d in snapshot["devices"]] == ["a1"]
    await push_sample("a1", 5)
    assert (await frame(socket, "telemetry"))["items"][0]["data"] == {"v": 5}
    await socket.disconnect()


async def test_a_client_that_asks_but_never_reads_is_closed(alice):
    outbound = FakeOutbound()
    socket, _ = await connect(alice[1], outbound=outbound, config=DashboardConfig(send_buffer=1000))
    assert await alive(socket)
    outbound.waiting = 2001
    await socket.send_to(text_data='{"type": "ping"}')
    closed = await socket.receive_output(5)
    assert closed == {"type": "websocket.close", "code": CLOSE_NOT_READING}
