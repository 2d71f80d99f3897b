"""Writes of Home Assistant discovery (docs/profiles/home-assistant-discovery.md): metric metadata, discovered devices.

The bridge parses each config (core/hadiscovery.py) and calls one of these on its database
thread. Each is atomic and idempotent on its natural key (a metric on `(device, name)`, an
entity on its config key), since every (re)subscribe brings every retained config again.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
from django.db import transaction

from core.errors import Conflict
from core.hadiscovery import DEFAULT_PREFIX, Entity, generated_spec, metric_of_generated, parse_config
from devices.models import Device, DeviceMetric, DeviceProfile
from devices.services.devices import device_register
from devices.services.profiles import device_set_profile, profile_check

GENERATED_PREFIX = "ha-"
GENERATED_DESCRIPTION = "generated from Home Assistant discovery of device {device}"


def discovery_metric_save(*, key: str, device_id: str, metric: str, label: str, unit: str,
                          device_class: str, config: dict[str, Any] | None = None) -> bool:
    """An announced entity's label and unit on a device's metric; False when the device is not registered.

    A metric someone set by hand (source `manual`) is left as it is; the entity's earlier metric, if it
    moved, loses its row.
    """
    with transaction.atomic():
        if not Device.objects.filter(pk=device_id).exists():
            return False
        (DeviceMetric.objects.filter(discovery_key=key, source=DeviceMetric.DISCOVERY)
         .exclude(device_id=device_id, name=metric).delete())
        row = DeviceMetric.objects.select_for_update().filter(device_id=device_id, name=metric).first()
        if row is not None and row.source == DeviceMetric.MANUAL:
            return True
        fields = {"label": label[:200], "unit": unit[:32], "device_class": device_class[:64],
                  "source": DeviceMetric.DISCOVERY, "discovery_key": key, "discovered": config}
        if row is not None and all(getattr(row, k) == v for k, v in fields.items()):
            return True  # the same config again (every resubscribe brings them all): nothing to write
        DeviceMetric.objects.update_or_create(device_id=device_id, name=metric, defaults=fields)
    return True


def discovery_device_register(*, entity: Entity, device_id: str, config: dict[str, Any]) -> str:
    """Register a discovered device (or add the entity to one) on a profile generated from its entities.

    Its secret is not kept: the device needs one from an operator (`rotatesecret`) before it can log in
    to a broker that checks credentials. Conflict when the id is a device on some other profile.
    Returns the generated profile's name.
    """
    profile = generated_profile_name(device_id)
    with transaction.atomic():
        device = Device.objects.select_for_update().filter(pk=device_id).first()
        if device is None:
            device, _ = device_register(device_id=device_id, name=entity.device.name or device_id)
        elif device.profile_id != profile:
            raise Conflict(f"device {device_id} exists on profile {device.profile_id or 'iotgw'}, and that profile "
                           f"does not read {entity.state_topic or entity.key}")
        metric = metric_of_generated(entity)
        if metric is not None:
            discovery_metric_save(key=entity.key, device_id=device_id, metric=metric, label=entity.label,
                                  unit=entity.unit, device_class=entity.device_class, config=config)
        else:
            DeviceMetric.objects.filter(discovery_key=entity.key, source=DeviceMetric.DISCOVERY).delete()
        _rebuild(device_id, extra=None if metric is not None else entity)
    return profile


def discovery_entity_remove(*, key: str) -> list[str]:
    """An empty retained config: the entity's metadata goes, and its rule from a generated profile; the devices."""
    with transaction.atomic():
        rows = list(DeviceMetric.objects.filter(discovery_key=key, source=DeviceMetric.DISCOVERY)
                    .values_list("device_id", flat=True))
        DeviceMetric.objects.filter(discovery_key=key, source=DeviceMetric.DISCOVERY).delete()
        for device_id in set(rows):
            if Device.objects.filter(pk=device_id, profile_id=generated_profile_name(device_id)).exists():  # type: ignore[misc]
                _rebuild(device_id, extra=None)
    return sorted(set(rows))


def generated_profile_name(device_id: str) -> str:
    """The name of a discovered device's generated profile: `ha-<its id, lowercased>` (hashed when that clashes)."""
    slug = re.sub(r"[^a-z0-9_-]", "-", device_id.lower())
    name = f"{GENERATED_PREFIX}{slug}"
    if slug != device_id or len(name) > 64:  # two ids that differ in case or punctuation get different names
        name = f"{name[:51]}-{hashlib.sha256(device_id.encode()).hexdigest()[:8]}"
    return name


def _rebuild(device_id: str, *, extra: Entity | None) -> None:
    """Write the device's generated profile from its discovered entities (a profile keeps its last topics)."""
    entities = [parse_config(DEFAULT_PREFIX, f"{DEFAULT_PREFIX}/{key}/config", orjson.dumps(config))
                for key, config in DeviceMetric.objects.filter(device_id=device_id, source=DeviceMetric.DISCOVERY,
                                                               discovered__isnull=False)
                .values_list("discovery_key", "discovered")]
    found = [e for e in entities if isinstance(e, Entity)] + ([extra] if extra is not None else [])
    if not found:
        return  # a profile needs a topic: the last one stays until the device is deleted
    name = generated_profile_name(device_id)
    spec = generated_spec(found)
    profile_check(name=name, kind="rules", spec=spec)
    row = DeviceProfile.objects.filter(name=name).first()
    if row is not None and (row.builtin or row.description != GENERATED_DESCRIPTION.format(device=device_id)):
        raise Conflict(f"profile {name} exists and was not generated by discovery: it is left as it is")
    if row is None:
        DeviceProfile.objects.create(name=name, kind="rules", spec=spec,
                                     description=GENERATED_DESCRIPTION.format(device=device_id))
    elif row.spec != spec:
        row.spec = spec
        row.save(update_fields=["spec", "updated_at"])
    if not Device.objects.filter(pk=device_id, profile_id=name).exists():  # type: ignore[misc]
        device_set_profile(device_id=device_id, profile=name)
