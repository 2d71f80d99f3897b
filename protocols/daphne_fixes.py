"""Two gaps of Daphne 4.2 filled at start-up: missing reason phrases, and the WebSocket denial response."""

from __future__ import annotations

import http
import logging

from autobahn.websocket.types import ConnectionDeny
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from twisted.web._responses import RESPONSES

logger = logging.getLogger("iotgw.ws")

# The ASGI extension that lets an application refuse a handshake with an HTTP status of its choice.
DENIAL = "websocket.http.response"


def install_reason_phrases() -> None:
    """Teach Twisted the reason phrases it lacks (429, 422, 431, …).

    Daphne passes only the status code to Twisted's `setResponseCode`, which looks
    the phrase up in its own table; codes missing there went out as
    `HTTP/1.1 429 Unknown Status`. The table is shared by every request, so
    adding Python's phrases once fixes them all.
    """
    for status in http.HTTPStatus:
        RESPONSES.setdefault(status.value, status.phrase.encode("ascii"))


def install_websocket_denial() -> None:
    """Let an application refuse a WebSocket handshake with its own HTTP status (ASGI's denial response).

    Daphne only knows `websocket.close` before `accept`, which it always turns
    into `403 Access denied`; a refusal for an unknown path should say 404. The
    extension is advertised in the scope, so an application can tell whether
    the server supports it (Channels' test communicator does not).
    """
    if getattr(WebSocketProtocol.handle_reply, "iotgw_denial", False):
        return
    original_reply = WebSocketProtocol.handle_reply
    original_create = Server.create_application

    def handle_reply(self, message):
        kind = message.get("type")
        if kind == "websocket.http.response.start" and self.state == self.STATE_CONNECTING:
            return _deny(self, int(message["status"]))
        if kind == "websocket.http.response.body":
            return None  # autobahn writes the status line only; the handshake is already refused
        return original_reply(self, message)

    def create_application(self, protocol, scope):
        if scope.get("type") == "websocket":
            scope["extensions"] = {**(scope.get("extensions") or {}), DENIAL: {}}
        return original_create(self, protocol, scope)

    handle_reply.iotgw_denial = True
    WebSocketProtocol.handle_reply = handle_reply
    Server.create_application = create_application


def _deny(protocol: WebSocketProtocol, status: int) -> None:
    """Daphne's own serverReject, with the application's status instead of 403."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Refused"
    protocol.handshake_deferred.errback(ConnectionDeny(code=status, reason=phrase))
    del protocol.handshake_deferred
    protocol.server.protocol_disconnected(protocol)
    client = "{}:{}".format(*protocol.client_addr) if protocol.client_addr else None
    protocol.server.log_action("websocket", "rejected", {"path": protocol.request.path, "client": client})
