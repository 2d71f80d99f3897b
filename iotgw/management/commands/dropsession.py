"""`dropsession CLIENT_ID`: retire a bridge for good: store what its session holds, then remove the session."""

from __future__ import annotations

import asyncio

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management import BaseCommand, CommandError

from bridge.drain import DrainIncomplete, session_drain, session_remove
from core.broker import BrokerConfig
from core.errors import ConfigMissing
from devices.selectors import bridges_known
from devices.services.heartbeats import bridge_retire
from iotgw.config import bridge_options


class Command(BaseCommand):
    help = (
        "Retire a bridge that will not return. Until its session expires, the broker keeps queueing that "
        "bridge's share of the device topics for it: this resumes the session, stores what it holds (acked "
        "after the commit, as the bridge would), then removes the session and the bridge's heartbeat."
    )

    def add_arguments(self, parser):
        parser.add_argument("client_id")
        parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the drain")
        parser.add_argument("--force", action="store_true", help="even if the bridge's heartbeat is fresh")
        parser.add_argument("--no-drain", action="store_true", help="discard what the session holds")

    def handle(self, *args, client_id: str, timeout: float, force: bool, no_drain: bool, **options):
        if not settings.MQTT_URL:
            raise CommandError(str(ConfigMissing("MQTT_URL", "which broker holds the session?")))
        config = BrokerConfig.from_url(settings.MQTT_URL)
        known = bridges_known(heartbeat_seconds=settings.IOTGW_HEARTBEAT_SECONDS,
                              session_expiry=settings.MQTT_SESSION_EXPIRY)
        live = [b for b in known if b.client_id == client_id and b.live]
        if live and not force:
            raise CommandError(f"bridge {client_id} is alive (heartbeat {live[0].beat_at:%H:%M:%S}): stop it first, "
                               "or pass --force")
        drained = 0
        if not no_drain:
            try:
                drained = asyncio.run(self._drain(config, client_id, timeout))
            except DrainIncomplete as exc:
                raise CommandError(str(exc)) from None
            except (OSError, ConnectionError) as exc:
                raise CommandError(f"could not drain the session of {client_id}: {exc}; it is kept") from None
        try:
            session_remove(config, client_id)
        except ConnectionError as exc:
            raise CommandError(str(exc)) from None
        bridge_retire(client_id=client_id)
        self.stdout.write(f"session of {client_id} removed ({drained} queued messages stored or rejected first)")

    async def _drain(self, config: BrokerConfig, client_id: str, timeout: float) -> int:
        layer = get_channel_layer()
        try:
            # A drain is no Sparkplug host: it must not say the host is online. Nor does it read discovery
            # configs: queued ones are refused like any topic no profile claims (they are retained, and
            # every bridge reads them again when it subscribes).
            options = {k: v for k, v in bridge_options().items()
                       if k not in ("client_id", "share_group", "sparkplug_host_id", "ha_discovery")}
            return await session_drain(broker=config, layer=layer, client_id=client_id,
                                       share_group=settings.MQTT_SHARE_GROUP, timeout=timeout, **options)
        finally:
            await sync_to_async(_close_db)()


def _close_db() -> None:
    from django.db import connections

    connections.close_all()
