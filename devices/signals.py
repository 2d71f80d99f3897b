"""What the domain tells the edges once a change is committed; edges receive, the domain never imports them.

Each signal is sent with keyword arguments only, after the transaction that made
the change has committed (a rolled-back registration tells nobody). A receiver's
failure is logged; it never reaches the caller of the service.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger("iotgw.devices")

# device_id, secret (the new device's, shown once to its registrant)
device_registered = Signal()
# device_id, enabled
device_enabled_changed = Signal()
# device_id, secret (its new one; the old one stops working)
device_secret_changed = Signal()
# device_id (it is on another profile now: its broker rights change, docs/profiles.md)
device_profile_changed = Signal()


def send_on_commit(signal: Signal, **kwargs: Any) -> None:
    """Send `signal` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: _send(signal, kwargs))


def _send(signal: Signal, kwargs: dict[str, Any]) -> None:
    for receiver, result in signal.send_robust(sender=None, **kwargs):
        if isinstance(result, Exception):
            logger.error("a receiver of a registry change failed (%s): %s", getattr(receiver, "__name__", receiver),
                         result)
