"""Writes of bridge heartbeats: a bridge's pulse and counters, and forgetting a retired one."""

from __future__ import annotations

from django.utils import timezone

from devices.models import BridgeHeartbeat


def bridge_heartbeat(*, client_id: str, connected: bool, counters: dict) -> None:
    """Record that a bridge is alive, whether it holds a broker connection, and its counters."""
    BridgeHeartbeat.objects.update_or_create(
        client_id=client_id, defaults={"beat_at": timezone.now(), "connected": connected, "counters": counters}
    )


def bridge_retire(*, client_id: str) -> bool:
    """Forget a retired bridge's heartbeat (its session is gone); whether it had one."""
    return BridgeHeartbeat.objects.filter(client_id=client_id).delete()[0] > 0
