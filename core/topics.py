"""The iotgw dialect's device topics (SPEC §4), and what a device may do with them on the broker.

One definition of the topic kinds: the bridge's decoder, the broker hooks, Mosquitto's
dynamic security and both embedded brokers of the all-in-one gateway all read it here. A
device (username = its id) may publish to its own telemetry, status and command-response
topics, and subscribe to (and receive from) its own commands topic; nothing else.
"""

from __future__ import annotations

from core.errors import PayloadInvalid
from core.ids import DEVICE_ID_RE

ROOT = "devices"
TELEMETRY = "telemetry"
STATUS = "status"
COMMAND_RESPONSE = "commands/response"
COMMANDS = "commands"  # gateway → device: a bridge may see its own publishes come back, and skips them
PUBLISH_KINDS = (TELEMETRY, STATUS, COMMAND_RESPONSE)
SUBSCRIBE_KIND = COMMANDS
INBOUND_KINDS = (*PUBLISH_KINDS, COMMANDS)
# Every device topic: a device publishing outside the table is rejected and counted, not silently unseen.
ALL_DEVICES = f"{ROOT}/#"
ANY_DEVICE_COMMANDS = f"{ROOT}/+/{COMMANDS}"


def own_prefix(device_id: str) -> str:
    """The topic prefix of a device's own topics."""
    return f"{ROOT}/{device_id}/"


def device_topic(device_id: str, kind: str) -> str:
    """A device's topic of one kind, e.g. `devices/d1/commands`."""
    return own_prefix(device_id) + kind


def parse_topic(topic: str) -> tuple[str, str]:
    """Split `devices/{id}/{kind}` into (device id, kind); rejects any other topic."""
    parts = topic.split("/", 2)
    if len(parts) != 3 or parts[0] != ROOT or parts[2] not in INBOUND_KINDS:
        raise PayloadInvalid("bad_topic", f"topic {topic[:200]!r} is not a device topic")
    if not DEVICE_ID_RE.match(parts[1]):
        raise PayloadInvalid("bad_topic", f"device id {parts[1][:80]!r} is not valid")
    return parts[1], parts[2]


def source_of(topic: str) -> str:
    """Who a rejection is logged under: the device id of a device topic, else the topic."""
    return topic.split("/")[1] if "/" in topic else topic


def may_publish(*, device_id: str, topic: str) -> bool:
    """Whether a device may publish to `topic` (a topic name, never a filter)."""
    return topic in {device_topic(device_id, kind) for kind in PUBLISH_KINDS}


def may_subscribe(*, device_id: str, topic_filter: str) -> bool:
    """Whether a device may subscribe to `topic_filter` (or receive a message on that topic)."""
    return topic_filter == device_topic(device_id, SUBSCRIBE_KIND)


def mosquitto_acl_patterns() -> list[str]:
    """The rule as lines of a Mosquitto `acl_file` (`%u` is the username, i.e. the device id)."""
    lines = [f"pattern write {ROOT}/%u/{kind}" for kind in PUBLISH_KINDS]
    lines.append(f"pattern read {ROOT}/%u/{SUBSCRIBE_KIND}")
    return lines
