"""`coapserver`: the CoAP edge as its own process (docs/transports/coap.md)."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from django.conf import settings
from django.core.management import BaseCommand, CommandError

from core.errors import ConfigMissing
from iotgw.config import coap_options
from iotgw.production import refusal


class Command(BaseCommand):
    help = "Run the CoAP server: device telemetry, status and command responses by POST, commands by Observe."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=None, help="interface to bind (default IOTGW_COAP_HOST)")
        parser.add_argument("--port", type=int, default=None, help="UDP port (default IOTGW_COAP_PORT, 5683)")

    def handle(self, *args, host: str | None = None, port: int | None = None, **options):
        if not settings.REDIS_URL:
            raise CommandError(str(ConfigMissing("REDIS_URL", "the CoAP server pushes to dashboards through it.")))
        if why := refusal("CoAP server", split=True):
            raise CommandError(why)
        config = coap_options()
        config.update({k: v for k, v in (("host", host), ("port", port)) if v is not None})
        try:
            asyncio.run(self._serve(config))
        except OSError as exc:
            raise CommandError(f"the CoAP server cannot listen on udp {config['host']} port {config['port']}: "
                               f"{exc}") from None

    async def _serve(self, config: dict) -> None:
        from channels.layers import get_channel_layer

        from coap.server import CoapServer

        server = CoapServer(layer=get_channel_layer(), **config)
        await server.start()
        self.stdout.write(f"iotgw CoAP server {server.client_id} on coap://{_host(server.host)}:{server.port}"
                          + ("  (PLAIN MODE: device secrets travel in clear)" if server.plain else "") + "\n")
        self.stdout.flush()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await stopping.wait()
        with contextlib.suppress(Exception):
            # What is in the intake is not acked yet: its devices retransmit it to the next process.
            await server.stop()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
