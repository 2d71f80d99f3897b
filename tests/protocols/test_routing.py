"""The WebSocket router in-process: unknown paths are refused cleanly; a ticket opens one socket, once."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import ApplicationCommunicator, WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from devices.services.tickets import ws_ticket_issue
from devices.services.tokens import token_create
from iotgw.application import build_application
from protocols.routing import CLOSE_UNKNOWN_PATH

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def application():
    return build_application()


@pytest.mark.parametrize("path", ["/ws/dashboard", "/ws/", "/", "/ws/dashboard/more"])
async def test_an_unknown_path_is_closed_without_an_error(application, path):
    socket = WebsocketCommunicator(application, path)
    connected, code = await socket.connect()
    assert (connected, code) == (False, CLOSE_UNKNOWN_PATH)
    await socket.wait()  # the application ended by itself, without raising


async def test_an_unknown_path_is_a_404_where_the_server_can_say_so(application):
    scope = {"type": "websocket", "path": "/ws/dashboard", "headers": [], "query_string": b"", "subprotocols": [],
             "extensions": {"websocket.http.response": {}}}
    socket = ApplicationCommunicator(application, scope)
    await socket.send_input({"type": "websocket.connect"})
    start = await socket.receive_output()
    assert start["type"] == "websocket.http.response.start" and start["status"] == 404
    assert (await socket.receive_output())["type"] == "websocket.http.response.body"


def _ticket(token: bool) -> str:
    user = get_user_model().objects.create_user("tix")
    token_id = None
    if token:
        from devices.selectors import token_lookup

        token_id = token_lookup(token_create(user=user)).pk
    key, _ = ws_ticket_issue(user=user, token_id=token_id, session_key=None, ttl=30)
    return key


async def test_a_ticket_opens_one_socket(application):
    key = await sync_to_async(_ticket)(True)
    first = WebsocketCommunicator(application, f"/ws/dashboard/?ticket={key}")
    assert (await first.connect())[0] is True
    await first.send_json_to({"type": "ping"})
    assert await first.receive_json_from() == {"type": "pong"}
    second = WebsocketCommunicator(application, f"/ws/dashboard/?ticket={key}")
    assert (await second.connect())[0] is False
    await first.disconnect()


async def test_a_ticket_of_neither_token_nor_session_is_refused(application):
    key = await sync_to_async(_ticket)(False)
    socket = WebsocketCommunicator(application, f"/ws/dashboard/?ticket={key}")
    assert (await socket.connect())[0] is False


async def test_a_ticket_is_not_spent_on_a_path_that_serves_nothing(application):
    key = await sync_to_async(_ticket)(True)
    stray = WebsocketCommunicator(application, f"/ws/dashboard?ticket={key}")
    assert (await stray.connect())[0] is False
    socket = WebsocketCommunicator(application, f"/ws/dashboard/?ticket={key}")
    assert (await socket.connect())[0] is True
    await socket.disconnect()


async def test_a_ticket_fetched_with_a_session_ends_with_that_session(application):
    def logged_in() -> tuple[Client, str]:
        client = Client()
        client.force_login(get_user_model().objects.create_user("sess"))
        reply = client.post("/api/ws-ticket")
        assert reply.status_code == 200, reply.content
        return client, reply.json()["ticket"]

    client, key = await sync_to_async(logged_in)()
    socket = WebsocketCommunicator(application, f"/ws/dashboard/?ticket={key}")
    assert (await socket.connect())[0] is True
    await sync_to_async(client.post)("/logout/")
    assert await socket.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
