"""`bridgestatus [CLIENT_ID]`: exit 0 when that bridge beats and holds its broker connection (health checks)."""

from __future__ import annotations

from django.conf import settings
from django.core.management import BaseCommand, CommandError
from django.utils import timezone

from devices.models import BridgeHeartbeat
from devices.selectors import bridge_fresh_after


class Command(BaseCommand):
    help = ("Exit 0 when the bridge with this MQTT client id (default: this host's, MQTT_CLIENT_ID) wrote a "
            "heartbeat lately and holds its broker connection; exit 1 saying why otherwise.")

    def add_arguments(self, parser):
        parser.add_argument("client_id", nargs="?", default=None)

    def handle(self, *args, client_id: str | None, **options):
        client_id = client_id or settings.MQTT_CLIENT_ID
        beat = BridgeHeartbeat.objects.filter(client_id=client_id).first()
        fresh = bridge_fresh_after(timezone.now(), heartbeat_seconds=settings.IOTGW_HEARTBEAT_SECONDS)
        if beat is None:
            raise CommandError(f"bridge {client_id}: no heartbeat yet")
        if beat.beat_at < fresh:
            raise CommandError(f"bridge {client_id}: last heartbeat {beat.beat_at.isoformat()} (stale)")
        if not beat.connected:
            raise CommandError(f"bridge {client_id}: alive, but not connected to the broker")
        self.stdout.write(f"bridge {client_id}: alive and connected")
