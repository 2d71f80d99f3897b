"""`gateway`: web and bridge in one process; embedded broker and in-memory layer when unset (SPEC §1)."""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings
from django.core.management import BaseCommand

from bridge.broker import EmbeddedBroker, free_port

logger = logging.getLogger("iotgw.gateway")


class Command(BaseCommand):
    help = "Run the all-in-one gateway: Daphne (HTTP + WebSocket) and the MQTT bridge in one process."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="interface for HTTP and the embedded broker")
        parser.add_argument("--port", type=int, default=8000, help="HTTP/WebSocket port")
        parser.add_argument("--mqtt-port", type=int, default=1883,
                            help="embedded broker port (the next free one if taken); ignored with MQTT_URL")

    def handle(self, *args, host: str, port: int, mqtt_port: int, **options):
        from channels.layers import get_channel_layer
        from daphne.server import Server  # installs the asyncio reactor first
        from twisted.internet import reactor

        from bridge.worker import BRIDGE_CHANNEL, BridgeWorker
        from iotgw.asgi import application

        broker_url = settings.MQTT_URL
        if not broker_url:
            broker = EmbeddedBroker(host=host, port=free_port(host, mqtt_port))
            broker.start()
            broker_url = broker.url
        layer = get_channel_layer()
        worker = BridgeWorker(application=application, channels=[BRIDGE_CHANNEL], channel_layer=layer)
        worker.broker_url = broker_url

        def start_bridge() -> None:
            task = asyncio.ensure_future(worker.arun())
            task.add_done_callback(_report_crash)

        def ready() -> None:
            self.stdout.write(
                f"iotgw gateway ready\n  dashboard  http://{host}:{port}/\n  MQTT       {broker_url}"
                f"{'  (embedded)' if not settings.MQTT_URL else ''}\n"
                f"  layer      {'redis' if settings.REDIS_URL else 'in-memory'}\n",
            )
            self.stdout.flush()

        reactor.callWhenRunning(start_bridge)
        Server(
            application=application,
            endpoints=[f"tcp:port={port}:interface={host}"],
            websocket_max_message_size=settings.IOTGW_WS_MAX_FRAME,
            websocket_max_frame_size=settings.IOTGW_WS_MAX_FRAME,
            ready_callable=ready,
            verbosity=0,
        ).run()


def _report_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the bridge stopped", exc_info=task.exception())
