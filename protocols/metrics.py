"""Prometheus metrics of the WebSocket edge (exported by /metrics with the rest of the process's)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

websockets_open = Gauge("iotgw_websockets_open", "Dashboard WebSockets open in this web process")
websockets_closed = Counter("iotgw_websockets_closed", "Dashboard WebSockets closed by the gateway, by reason",
                            ["reason"])
ws_push_dropped = Counter("iotgw_ws_push_dropped", "Push messages dropped for dashboards that fell behind "
                          "(their inbox in this web process was full)")
ws_push_skipped = Counter("iotgw_ws_push_skipped", "Pushes not sent to dashboards whose client had fallen "
                          "behind (over IOTGW_WS_SEND_BUFFER unsent bytes); each gets a snapshot once drained")
device_sockets_open = Gauge("iotgw_device_sockets_open", "WebSocket devices connected to this web process")
device_sockets_refused = Counter("iotgw_device_sockets_refused", "WebSocket device handshakes refused "
                                 "(missing or wrong device credentials)")
device_sockets_closed = Counter("iotgw_device_sockets_closed", "WebSocket device sockets closed by the gateway, "
                                "by reason", ["reason"])
device_frames = Counter("iotgw_device_frames", "Frames from WebSocket devices, by outcome (accepted, or the "
                        "reason they were refused)", ["outcome"])
