"""`gateway`: web and bridge in one process; embedded broker and in-memory layer when unset (SPEC §1)."""

from __future__ import annotations

import asyncio
import logging
import threading
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.management import BaseCommand, CommandError

from bridge.broker import EmbeddedBrokerError, embedded_broker, port_check
from core.broker import BrokerConfig
from iotgw.config import bridge_options, coap_options, notify_options
from iotgw.production import refusal

logger = logging.getLogger("iotgw.gateway")


class Command(BaseCommand):
    help = "Run the all-in-one gateway: Daphne (HTTP + WebSocket) and the MQTT bridge in one process."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="interface for HTTP and the embedded broker")
        parser.add_argument("--port", type=int, default=8000, help="HTTP/WebSocket port")
        parser.add_argument("--mqtt-port", type=int, default=1883,
                            help="embedded broker port (default 1883; a taken port is an error); ignored with MQTT_URL")
        parser.add_argument("--coap-port", type=int, default=0, metavar="PORT",
                            help="also serve CoAP devices on this UDP port (5683 is CoAP's; default 0: off)")
        parser.add_argument("--coap-plain", action="store_true",
                            help="CoAP plain mode: devices send their secret in clear (trusted networks only)")
        parser.add_argument("--simulate", type=int, default=0, metavar="N",
                            help="also run N simulated devices demo-1 … demo-N (1 sample/s each)")

    def handle(self, *args, host: str, port: int, mqtt_port: int, simulate: int = 0, coap_port: int = 0,
               coap_plain: bool = False, **options):
        if why := refusal("all-in-one gateway", split=False):
            raise CommandError(why)
        from channels.layers import get_channel_layer
        from daphne.server import Server  # installs the asyncio reactor first
        from twisted.internet import reactor

        from bridge.worker import BridgeWorker
        from core.channels import BRIDGE_CHANNEL
        from iotgw.asgi import application
        from notify.sender import Sender

        # Registered (or given secrets known here) before the broker starts, so their first login holds.
        simulated = _simulated_devices(simulate) if simulate else {}
        try:
            port_check(host, port, what="HTTP", fix="`make run PORT=…` or `gateway --port …`")
            if coap_port:
                _udp_port_check(host, coap_port)
            broker = None if settings.MQTT_URL else embedded_broker(host=host, port=mqtt_port)
            if broker is not None:
                broker.start()
        except EmbeddedBrokerError as exc:
            raise CommandError(str(exc)) from None
        broker_url = broker.url if broker else settings.MQTT_URL
        device_url = broker.device_url if broker else _without_password(settings.MQTT_URL)
        layer = get_channel_layer()
        worker = BridgeWorker(application=application, channels=[BRIDGE_CHANNEL], channel_layer=layer,
                              broker_url=broker_url, bridge=bridge_options())

        sender = Sender(**notify_options())
        coap = _coap_server(layer, host=host, port=coap_port, plain=coap_plain) if coap_port else None

        def start_bridge() -> None:
            task = asyncio.ensure_future(worker.arun())
            task.add_done_callback(_report_crash)
            # The notification sender on the same loop (its sends run in worker threads): docs/notifications.md.
            asyncio.ensure_future(sender.run()).add_done_callback(_report_sender_crash)
            if coap is not None:
                asyncio.ensure_future(coap.start()).add_done_callback(_report_crash)

        def ready() -> None:
            self.stdout.write(
                f"iotgw gateway ready\n  dashboard  http://{host}:{port}/\n  MQTT       {device_url}"
                f"  ({broker.label if broker else 'MQTT_URL'})\n"
                + (_coap_banner(coap) if coap is not None else "")
                + f"  WebSocket  ws://{host}:{port}/ws/device/  (devices: Basic id:secret in the handshake)\n"
                + f"  HTTP       http://{host}:{port}/api/ingest/{{id}}/telemetry  "
                  f"(and …/commands/next?wait=30)\n"
                + f"  layer      {'redis' if settings.REDIS_URL else 'in-memory'}\n"
                + (f"  simulating {', '.join(simulated)}\n" if simulated else ""),
            )
            self.stdout.flush()

        reactor.callWhenRunning(start_bridge)
        if simulated:
            _start_simulator(device_url if broker else broker_url, simulated)
        try:
            Server(
                application=application,
                endpoints=[f"tcp:port={port}:interface={host}"],
                websocket_max_message_size=settings.IOTGW_WS_MAX_FRAME,
                websocket_max_frame_size=settings.IOTGW_WS_MAX_FRAME,
                ready_callable=ready,
                verbosity=0,
            ).run()
        finally:
            if broker is not None:
                broker.stop()


def _udp_port_check(host: str, port: int) -> None:
    """Refuse to start when the CoAP port is taken, naming the fix, as port_check does for TCP."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise EmbeddedBrokerError(f"CoAP: udp {host} port {port} is taken ({exc.strerror}); "
                                      "`make run COAP_PORT=…` or `gateway --coap-port …`") from None


def _coap_server(layer, *, host: str, port: int, plain: bool):
    """The CoAP edge in this process: its own pipeline and dispatcher, on the gateway's loop and layer."""
    from coap.server import CoapServer

    options = dict(coap_options(), host=host, port=port)
    options["plain"] = plain or options["plain"]
    return CoapServer(layer=layer, **options)


def _coap_banner(coap) -> str:
    mode = "PLAIN MODE: device secrets travel in clear, for trusted networks only" if coap.plain else "plain mode off"
    return f"  CoAP       coap://{coap.host}:{coap.port}  (udp; {mode})\n"


def _without_password(url: str) -> str:
    """A broker URL fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _simulated_devices(count: int) -> dict[str, str | None]:
    """demo-1 … demo-N, registered if missing, each with its secret."""
    from sim.fleet import ensure_devices
    from sim.management.commands.demo import DEMO_DEVICES

    ids = list(DEMO_DEVICES[:count]) + [f"demo-{i}" for i in range(len(DEMO_DEVICES) + 1, count + 1)]
    return ensure_devices(ids)


def _start_simulator(broker_url: str, devices: dict[str, str | None]) -> None:
    """Simulated demo devices in a daemon thread, against the gateway's own broker, logged in as themselves."""
    from sim.fleet import devices_latest
    from sim.simulator import Simulator

    sim = Simulator(broker=BrokerConfig.from_url(broker_url), devices=devices, rate=float(len(devices)),
                    latest=devices_latest(list(devices)))
    threading.Thread(target=sim.run, name="simulator", daemon=True).start()


def _report_sender_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the notification sender stopped", exc_info=task.exception())


def _report_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the bridge stopped", exc_info=task.exception())
