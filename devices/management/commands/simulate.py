"""`simulate`: N devices publishing drifting telemetry over MQTT and answering commands (SPEC §10)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import BaseCommand, CommandError

from core.broker import BrokerConfig
from devices.models import Device
from devices.selectors import device_secret_ok
from devices.services import device_register, device_rotate_secret
from devices.simulator import Simulator, SimulatorRefused, Stats, progress_line

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
            raise CommandError(f"no user {owner_name!r}")
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


# How long a run may go without a single device logged in before it stops and says why.
GIVE_UP_AFTER = 15.0


def _refusal_hint(reason: str, broker: BrokerConfig) -> str:
    """One line: what the broker said, and what usually fixes it."""
    where = f"{broker.host}:{broker.port}"
    if "protocol" in reason.lower() and broker.protocol == 5:
        fix = "that broker speaks MQTT 3.1.1 only: add ?protocol=3.1.1 to the URL"
    elif "not authori" in reason.lower() or "bad user" in reason.lower():
        fix = ("the devices' credentials are not that broker's: it must check them against this registry "
               "(the all-in-one gateway's broker does; see docs/broker-auth.md)")
    else:
        fix = "is a broker listening there?"
    return f"no simulated device could log in to {where} ({reason}): {fix}"


class Command(BaseCommand):
    help = "Simulate N devices publishing R samples/s in total over MQTT, answering commands."

    def add_arguments(self, parser):
        parser.add_argument("--devices", type=int, default=3, help="how many devices (default 3)")
        parser.add_argument("--rate", type=float, default=3.0, help="samples per second across all devices")
        parser.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
        parser.add_argument("--prefix", default="sim", help="device ids are PREFIX-1 … PREFIX-N (default sim)")
        parser.add_argument("--owner", default=None, help="owner of devices registered by this run")
        parser.add_argument("--mqtt-url", default=None, help="broker URL (default: MQTT_URL)")
        parser.add_argument("--latency", type=float, default=0.2, help="seconds before answering a command")
        parser.add_argument("--failure-rate", type=float, default=0.0, help="share of commands answered with an error")
        parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable values")

    def handle(self, *args, devices: int, rate: float, duration: float | None, prefix: str, owner: str | None,
               mqtt_url: str | None, latency: float, failure_rate: float, seed: int | None, **options):
        url = mqtt_url or settings.MQTT_URL
        if not url:
            raise CommandError("Config 'MQTT_URL' is missing, and has no default: pass --mqtt-url or set MQTT_URL")
        if devices < 1 or rate <= 0 or not 0 <= failure_rate <= 1:
            raise CommandError("--devices must be at least 1, --rate above 0, --failure-rate from 0 to 1")
        broker = BrokerConfig.from_url(url)
        ids = [f"{prefix}-{i}" for i in range(1, devices + 1)]
        sim = Simulator(broker=broker, devices=ensure_devices(ids, owner_name=owner), rate=rate,
                        latency=latency, failure_rate=failure_rate, seed=seed, latest=devices_latest(ids))
        self.stdout.write(f"simulating {ids[0]} … {ids[-1]} at {rate:g} samples/s in total → "
                          f"{broker.host}:{broker.port}  (Ctrl-C to stop)")
        self._last_line = time.monotonic()
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, lambda *_: sim.stop()) if main else None
        try:
            stats = sim.run(duration=duration, progress=self._progress, give_up_after=GIVE_UP_AFTER)
        except KeyboardInterrupt:
            stats = sim.stats
        except SimulatorRefused as exc:
            raise CommandError(_refusal_hint(str(exc), broker)) from None
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
        self.stdout.write(("\n" if sys.stdout.isatty() else "") + "done: " + progress_line(stats, final=True))

    def _progress(self, stats: Stats) -> None:
        # In place on a terminal; into a log or a pipe, one line every ten seconds instead.
        if sys.stdout.isatty():
            sys.stdout.write("\r\033[K" + progress_line(stats))
            sys.stdout.flush()
            return
        now = time.monotonic()
        if now - self._last_line >= 10:
            self._last_line = now
            self.stdout.write(progress_line(stats))
