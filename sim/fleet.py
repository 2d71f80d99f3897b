"""The simulated fleet's devices: registered if missing, their secrets kept in var/ so a later run logs in again."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model

from devices.models import Device
from devices.selectors import device_secret_ok
from devices.services.devices import device_register, device_rotate_secret

logger = logging.getLogger("iotgw.simulator")

# Secrets are shown once at registration; keep the ones we created so a later run can log in again.
SECRETS_FILE = settings.BASE_DIR / "var" / "simulator-secrets.json"


def _database() -> str:
    # Kept per database: the same id in another database (a test run) is another device.
    return str(settings.DATABASES["default"]["NAME"])


def _kept(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def kept_get(path: Path) -> Any:
    """What this machine kept in `path` for the current database, or None."""
    return _kept(path).get(_database())


def kept_put(path: Path, value: Any) -> None:
    """Keep `value` in `path` for the current database, readable by this user only."""
    data = _kept(path)
    data[_database()] = value
    path.parent.mkdir(exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)


def load_secrets() -> dict[str, str]:
    """Secrets of devices this machine's simulator (or `demo`) registered earlier in this database."""
    kept = kept_get(SECRETS_FILE)
    return dict(kept) if isinstance(kept, dict) else {}


def save_secrets(secrets: dict[str, str]) -> None:
    """Keep the secrets, readable by this user only."""
    kept_put(SECRETS_FILE, secrets)


def devices_latest(device_ids: list[str]) -> dict[str, dict]:
    """The last known value of every metric of these devices, for the simulator to carry on from."""
    rows = Device.objects.filter(pk__in=device_ids).values_list("pk", "latest")
    return {pk: {name: m.get("value") for name, m in (latest or {}).items()} for pk, latest in rows}


def ensure_devices(device_ids: list[str], *, owner_name: str | None = None, owner=None,
                   names: dict[str, str] | None = None) -> dict[str, str | None]:
    """Register the missing devices, and give a new secret to those whose secret is not known here.

    Returns each id with its secret (None for a disabled device). The secrets are kept in
    var/simulator-secrets.json, so a later run logs in again with them.
    """
    if owner_name:
        owner = get_user_model().objects.filter(username=owner_name).first()
        if owner is None:
            raise LookupError(f"no user {owner_name!r}")
    secrets = load_secrets()
    enabled = dict(Device.objects.filter(pk__in=device_ids).values_list("pk", "enabled"))
    changed = False
    for device_id in device_ids:
        if device_id not in enabled:
            name = (names or {}).get(device_id, device_id)
            _, secrets[device_id] = device_register(device_id=device_id, name=name, owner=owner)
            changed = True
        elif enabled[device_id] and not device_secret_ok(device_id, secrets.get(device_id) or ""):
            # A simulated device's secret is ours to re-issue: without it, it cannot log in to a broker.
            secrets[device_id] = device_rotate_secret(device_id=device_id)
            changed = True
    if changed:
        try:
            save_secrets(secrets)
        except OSError as exc:
            logger.warning("device secrets not kept in %s (%s): a later run will issue new ones", SECRETS_FILE, exc)
    return {d: secrets.get(d) if enabled.get(d, True) else None for d in device_ids}
