"""Frame-size limit enforced by Daphne itself, before any consumer sees the frame."""

from __future__ import annotations

from daphne.ws_protocol import WebSocketFactory


def install_frame_limit(max_bytes: int) -> None:
    """Cap Daphne's WebSocket message and frame size (its default is 1 MiB).

    `daphne iotgw.asgi:application` takes no size flag from us, so the cap is
    applied where Daphne configures autobahn; autobahn then closes an
    oversized connection with 1009 before the application is called.
    """
    original = WebSocketFactory.setProtocolOptions
    if getattr(original, "iotgw_capped", False):
        return

    def set_protocol_options(self, *args, **kwargs):
        for key in ("maxMessagePayloadSize", "maxFramePayloadSize"):
            kwargs[key] = min(kwargs.get(key) or max_bytes, max_bytes)
        return original(self, *args, **kwargs)

    set_protocol_options.iotgw_capped = True
    WebSocketFactory.setProtocolOptions = set_protocol_options
