"""Writes of bridge heartbeats: a bridge's pulse and counters, and forgetting a retired one."""

from __future__ import annotations

from django.utils import timezone

from core.ids import DEVICE_ID_RE
from devices.models import BridgeHeartbeat, Device


def bridge_heartbeat(*, client_id: str, connected: bool, counters: dict) -> None:
    """Record that a bridge is alive, whether it holds a broker connection, and its counters."""
    BridgeHeartbeat.objects.update_or_create(
        client_id=client_id, defaults={"beat_at": timezone.now(), "connected": connected, "counters": counters}
    )


def devices_note_rejections(*, recent: dict[str, dict[str, str]]) -> int:
    """Write each device's last rejection (from a heartbeat's batch of them); sources that are no device are skipped.

    One statement per heartbeat however many messages were refused, never one per message.
    """
    ids = [source for source in recent if DEVICE_ID_RE.fullmatch(source)]
    if not ids:
        return 0
    devices = list(Device.objects.filter(pk__in=ids).only("id"))
    for device in devices:
        device.last_rejection = recent[device.id]
    Device.objects.bulk_update(devices, ["last_rejection"])
    return len(devices)


def bridge_retire(*, client_id: str) -> bool:
    """Forget a retired bridge's heartbeat (its session is gone); whether it had one."""
    return BridgeHeartbeat.objects.filter(client_id=client_id).delete()[0] > 0
