"""The one ASGI application (SPEC §1): a ProtocolTypeRouter of http, websocket and the `channel` route to the bridge."""

from __future__ import annotations

from channels.routing import ChannelNameRouter, ProtocolTypeRouter
from django.core.asgi import get_asgi_application

from core.channels import BRIDGE_CHANNEL


def build_application() -> ProtocolTypeRouter:
    """Build the router; Django must be set up before the consumers are imported."""
    http = get_asgi_application()
    from bridge.consumers import BridgeConsumer
    from iotgw.config import dashboard_config, device_socket_config
    from protocols.routing import websocket_application

    return ProtocolTypeRouter({
        "http": http,
        "websocket": websocket_application(dashboard_config(), device_socket_config()),
        "channel": ChannelNameRouter({BRIDGE_CHANNEL: BridgeConsumer.as_asgi()}),
    })
