"""Children a gateway speaks for, created the first time they are heard when their gateway's profile says so."""

from __future__ import annotations

from collections.abc import Mapping

from core.ids import child_device_id
from devices.models import Device


def children_create_on_sight(unseen: Mapping[str, tuple[str, str]]) -> list[str]:
    """Create the unregistered children (id → (gateway, name)) whose enabled gateway's profile has
    `create_children`; the ids created. In the caller's transaction; a child created meanwhile is kept."""
    gateways = {g.id: g for g in Device.objects.filter(pk__in={gw for gw, _ in unseen.values()}, enabled=True,
                                                       gateway__isnull=True).select_related("profile")}
    new = []
    for child_id, (gateway_id, name) in unseen.items():
        gateway = gateways.get(gateway_id)
        if (gateway is None or gateway.profile is None or not gateway.profile.spec.get("create_children")
                or child_device_id(gateway_id, name) != child_id):
            continue
        # No secret: a child never logs in (its gateway speaks for it), and an empty hash matches no secret.
        new.append(Device(id=child_id, name=name[:200], owner=gateway.owner, gateway=gateway, child_name=name[:200],
                          profile=gateway.profile))
    Device.objects.bulk_create(new, ignore_conflicts=True)
    return [d.id for d in new]
