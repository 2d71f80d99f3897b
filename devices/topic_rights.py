"""What a device may do on the broker: one rule, enforced by every broker integration.

A device (username = its id) may publish to its own telemetry, status and
command-response topics, and subscribe to (and receive from) its own commands
topic; nothing else. The HTTP hooks, Mosquitto's dynamic security, and both
embedded brokers of the all-in-one gateway all apply this module.
"""

from __future__ import annotations

PUBLISH_KINDS = ("telemetry", "status", "commands/response")
SUBSCRIBE_KIND = "commands"


def own_prefix(device_id: str) -> str:
    """The topic prefix of a device's own topics."""
    return f"devices/{device_id}/"


def may_publish(*, device_id: str, topic: str) -> bool:
    """Whether a device may publish to `topic` (a topic name, never a filter)."""
    return topic in {own_prefix(device_id) + kind for kind in PUBLISH_KINDS}


def may_subscribe(*, device_id: str, topic_filter: str) -> bool:
    """Whether a device may subscribe to `topic_filter` (or receive a message on that topic)."""
    return topic_filter == own_prefix(device_id) + SUBSCRIBE_KIND


def mosquitto_acl_patterns() -> list[str]:
    """The rule as lines of a Mosquitto `acl_file` (`%u` is the username, i.e. the device id)."""
    lines = [f"pattern write devices/%u/{kind}" for kind in PUBLISH_KINDS]
    lines.append(f"pattern read devices/%u/{SUBSCRIBE_KIND}")
    return lines
