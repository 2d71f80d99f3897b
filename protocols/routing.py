"""The WebSocket edge's routes: the dashboard socket, the device socket, and a 404 for any other path."""

from __future__ import annotations

import logging

from channels.routing import URLRouter
from django.urls import path, re_path

from protocols.auth import BearerOrSessionAuthMiddleware, DeviceAuthMiddleware
from protocols.consumers import DashboardConfig, DashboardConsumer
from protocols.daphne_fixes import DENIAL
from protocols.device_socket import DeviceConsumer, DeviceSocketConfig
from protocols.outbound import OutboundMiddleware

logger = logging.getLogger("iotgw.ws")

# Close code for a WebSocket to a path nothing serves, where the server cannot refuse with a 404.
CLOSE_UNKNOWN_PATH = 4404


async def unknown_path(scope, receive, send) -> None:
    """Refuse a WebSocket to a path nothing serves: 404 at the handshake (no traceback, no 500)."""
    if (await receive())["type"] != "websocket.connect":
        return
    logger.info("refused a WebSocket to %s: no such endpoint (the dashboard socket is /ws/dashboard/)",
                scope["path"][:200])
    if DENIAL in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": 404,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "websocket.http.response.body", "body": b"no WebSocket endpoint here"})
    else:
        await send({"type": "websocket.close", "code": CLOSE_UNKNOWN_PATH})


def websocket_application(config: DashboardConfig | None = None,
                          devices: DeviceSocketConfig | None = None) -> OutboundMiddleware:
    """The `websocket` route: the dashboard socket, the device socket, and a clean refusal for every other path."""
    device_socket = DeviceAuthMiddleware(DeviceConsumer.as_asgi(config=devices))
    return OutboundMiddleware(URLRouter([
        # Credentials are read (and a ticket spent) only on a path that serves a socket.
        path("ws/dashboard/", BearerOrSessionAuthMiddleware(DashboardConsumer.as_asgi(config=config))),
        path("ws/device/", device_socket),
        path("ws/device/<str:device_id>/", device_socket),
        re_path(r"", unknown_path),
    ]))
