"""Single-use WebSocket tickets over real Daphne: fetched with a token, spent by one handshake, on any web process."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone
from websockets.exceptions import ConnectionClosed, InvalidStatus

from testing.http import call
from testing.processes import ROOT
from testing.waiting import await_until
from testing.ws import Dashboard

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def fetch_ticket(web: str, token: str) -> dict:
    reply = call("POST", web + "/api/ws-ticket", token=token)
    assert reply.status == 200, reply.body
    return reply.json()


async def refused(url: str) -> int:
    """The HTTP status of a refused handshake (fails if the socket opens)."""
    with pytest.raises(InvalidStatus) as caught:
        dash = await Dashboard.open(url)
        await dash.close()
    return caught.value.response.status_code


async def test_a_ticket_opens_the_socket_once(stack, people):
    devices, tokens, _ = people
    await sync_to_async(stack.start_web)()
    ticket = await sync_to_async(fetch_ticket)(stack.web, tokens["alice"])
    assert ticket["url"] == f"{stack.ws}?ticket={ticket['ticket']}"
    assert tokens["alice"] not in ticket["url"]

    dash = await Dashboard.open(ticket["url"])
    snapshot = await dash.subscribe("*")
    assert sorted(d["id"] for d in snapshot["devices"]) == sorted([devices["a1"][0], devices["blab"][0]])
    assert await refused(ticket["url"]) == 403, "a spent ticket works no more"
    await dash.close()

    assert await refused(stack.ws + "?ticket=wst_made-up") == 403
    assert await refused(stack.ws + f"?token={tokens['alice']}") == 403, "a token in the URL is not a credential"


async def test_an_expired_ticket_is_refused(stack, people):
    _, tokens, _ = people
    stack.env["IOTGW_WS_TICKET_SECONDS"] = "1"
    await sync_to_async(stack.start_web)()
    ticket = await sync_to_async(fetch_ticket)(stack.web, tokens["alice"])
    expires_at = datetime.fromisoformat(ticket["expires_at"])
    await await_until(lambda: timezone.now() > expires_at, timeout=5, what="the ticket's expiry")
    assert await refused(ticket["url"]) == 403


async def test_a_ticket_from_one_web_process_works_on_another_and_only_once(stack, people):
    _, tokens, _ = people
    await sync_to_async(stack.start_web)()
    first_ws = stack.ws
    ticket = await sync_to_async(fetch_ticket)(stack.web, tokens["alice"])
    await sync_to_async(stack.start_web)()  # a second Daphne; the stack now points at it
    assert stack.ws != first_ws

    dash = await Dashboard.open(f"{stack.ws}?ticket={ticket['ticket']}")
    await dash.send({"type": "ping"})
    assert (await dash.next())["type"] == "pong"
    assert await refused(f"{first_ws}?ticket={ticket['ticket']}") == 403
    await dash.close()


async def test_revoking_the_token_closes_the_sockets_its_tickets_opened(stack, people):
    _, tokens, _ = people
    await sync_to_async(stack.start_web)()
    ticket = await sync_to_async(fetch_ticket)(stack.web, tokens["bob"])
    dash = await Dashboard.open(ticket["url"])
    await dash.subscribe("*")
    # From the command line, as an operator would; its close message goes over the stack's Redis.
    result = await sync_to_async(subprocess.run)(
        [sys.executable, "manage.py", "revoketoken", tokens["bob"]], cwd=ROOT, env=stack.env,
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    with pytest.raises(ConnectionClosed) as closed:
        await dash.next(timeout=15)
    assert closed.value.rcvd.code == 4401


def test_a_ticket_needs_credentials(stack, people):
    stack.start_web()
    reply = call("POST", stack.web + "/api/ws-ticket")
    assert (reply.status, reply.error_code) == (401, "unauthorized")
