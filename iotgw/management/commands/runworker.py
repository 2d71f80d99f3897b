"""`runworker`, with the MQTT bridge started as the worker starts (SPEC §1)."""

from __future__ import annotations

import functools

from channels.management.commands.runworker import Command as ChannelsRunworker
from django.conf import settings
from django.core.management import CommandError

from bridge.worker import BridgeWorker
from core.channels import BRIDGE_CHANNEL
from core.errors import ConfigMissing
from iotgw.config import bridge_options
from iotgw.production import refusal


class Command(ChannelsRunworker):
    help = "Run a channels worker; serving `mqtt-bridge` connects the MQTT bridge at start-up."
    worker_class = BridgeWorker

    def handle(self, *args, **options):
        if BRIDGE_CHANNEL in options["channels"]:
            for name in ("REDIS_URL", "MQTT_URL"):
                if not getattr(settings, name):
                    raise CommandError(str(ConfigMissing(name, "the bridge needs it.")))
            if why := refusal("bridge", split=True):
                raise CommandError(why)
        # The worker is built by channels' runworker; its bridge gets its configuration from here.
        self.worker_class = functools.partial(BridgeWorker, broker_url=settings.MQTT_URL or "",
                                              bridge=bridge_options())
        super().handle(*args, **options)
