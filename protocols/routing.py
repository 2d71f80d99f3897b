"""The one ASGI application: HTTP, WebSocket and the `channel` route to the bridge."""

from __future__ import annotations

from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path


def build_application() -> ProtocolTypeRouter:
    """Build the router; Django must be set up before the consumers are imported."""
    http = get_asgi_application()
    from bridge.consumers import BridgeConsumer
    from bridge.worker import BRIDGE_CHANNEL
    from protocols.auth import BearerOrSessionAuthMiddleware
    from protocols.consumers import DashboardConsumer
    from protocols.outbound import OutboundMiddleware

    return ProtocolTypeRouter(
        {
            "http": http,
            "websocket": OutboundMiddleware(BearerOrSessionAuthMiddleware(
                URLRouter([path("ws/dashboard/", DashboardConsumer.as_asgi())])
            )),
            "channel": ChannelNameRouter({BRIDGE_CHANNEL: BridgeConsumer.as_asgi()}),
        }
    )
