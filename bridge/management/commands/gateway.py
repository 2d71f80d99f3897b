"""`gateway`: web and bridge in one process; embedded broker and in-memory layer when unset (SPEC §1)."""

from __future__ import annotations

import asyncio
import logging
import threading

from django.conf import settings
from django.core.management import BaseCommand

from bridge.broker import EmbeddedBroker, free_port
from bridge.client import BrokerConfig

logger = logging.getLogger("iotgw.gateway")


class Command(BaseCommand):
    help = "Run the all-in-one gateway: Daphne (HTTP + WebSocket) and the MQTT bridge in one process."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="interface for HTTP and the embedded broker")
        parser.add_argument("--port", type=int, default=8000, help="HTTP/WebSocket port")
        parser.add_argument("--mqtt-port", type=int, default=1883,
                            help="embedded broker port (the next free one if taken); ignored with MQTT_URL")
        parser.add_argument("--simulate", type=int, default=0, metavar="N",
                            help="also run N simulated devices demo-1 … demo-N (1 sample/s each)")

    def handle(self, *args, host: str, port: int, mqtt_port: int, simulate: int = 0, **options):
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
                f"  layer      {'redis' if settings.REDIS_URL else 'in-memory'}\n"
                + (f"  simulating {', '.join(simulated)}\n" if simulated else ""),
            )
            self.stdout.flush()

        reactor.callWhenRunning(start_bridge)
        simulated = _start_simulator(broker_url, simulate) if simulate else []
        Server(
            application=application,
            endpoints=[f"tcp:port={port}:interface={host}"],
            websocket_max_message_size=settings.IOTGW_WS_MAX_FRAME,
            websocket_max_frame_size=settings.IOTGW_WS_MAX_FRAME,
            ready_callable=ready,
            verbosity=0,
        ).run()


def _start_simulator(broker_url: str, count: int) -> list[str]:
    """Simulated demo devices in a daemon thread, against the gateway's own broker."""
    from devices.management.commands.demo import DEMO_DEVICES
    from devices.management.commands.simulate import devices_latest, ensure_devices
    from devices.simulator import Simulator

    ids = list(DEMO_DEVICES[:count]) + [f"demo-{i}" for i in range(len(DEMO_DEVICES) + 1, count + 1)]
    sim = Simulator(broker=BrokerConfig.from_url(broker_url), devices=ensure_devices(ids), rate=float(count),
                    latest=devices_latest(ids))
    threading.Thread(target=sim.run, name="simulator", daemon=True).start()
    return ids


def _report_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the bridge stopped", exc_info=task.exception())
