"""Sparkplug B topics: `spBv1.0/<group>/<type>/<edge node>[/<device>]`, and the host's STATE topic."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import PayloadInvalid

NAMESPACE = "spBv1.0"
NBIRTH, NDATA, NDEATH, NCMD = "NBIRTH", "NDATA", "NDEATH", "NCMD"
DBIRTH, DDATA, DDEATH, DCMD = "DBIRTH", "DDATA", "DDEATH", "DCMD"
STATE = "STATE"
NODE_TYPES = (NBIRTH, NDATA, NDEATH, NCMD)
DEVICE_TYPES = (DBIRTH, DDATA, DDEATH, DCMD)
# What an edge node publishes (the gateway subscribes to these); NCMD and DCMD are what hosts publish.
INBOUND_TYPES = (NBIRTH, NDATA, NDEATH, DBIRTH, DDATA, DDEATH)
SUBSCRIPTION = f"{NAMESPACE}/#"
MAX_ID = 256


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed Sparkplug topic; `device` is empty on node topics, `group` holds the host id on STATE."""

    group: str
    type: str
    edge: str
    device: str = ""


def _valid_id(part: str) -> bool:
    # Sparkplug ids are UTF-8 without the MQTT wildcards; `/` cannot occur (it splits the levels).
    return 0 < len(part) <= MAX_ID and "+" not in part and "#" not in part and "\x00" not in part


def parse_topic(topic: str) -> Topic:
    """Split a Sparkplug B topic; PayloadInvalid (`bad_topic`) for any other."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == NAMESPACE and parts[1] == STATE and _valid_id(parts[2]):
        return Topic(group=parts[2], type=STATE, edge="")
    if parts[0] != NAMESPACE or len(parts) not in (4, 5) or not all(_valid_id(p) for p in parts[1:]):
        raise PayloadInvalid("bad_topic", f"topic {topic[:200]!r} is not a Sparkplug B topic")
    kind = parts[2]
    if (len(parts) == 4 and kind not in NODE_TYPES) or (len(parts) == 5 and kind not in DEVICE_TYPES):
        raise PayloadInvalid("bad_topic", f"topic {topic[:200]!r}: {kind[:40]!r} is not a Sparkplug message type "
                             "for that topic")
    return Topic(group=parts[1], type=kind, edge=parts[3], device=parts[4] if len(parts) == 5 else "")


def node_topic(group: str, kind: str, edge: str) -> str:
    """`spBv1.0/<group>/<kind>/<edge>`."""
    return f"{NAMESPACE}/{group}/{kind}/{edge}"


def device_topic(group: str, kind: str, edge: str, device: str) -> str:
    """`spBv1.0/<group>/<kind>/<edge>/<device>`."""
    return f"{NAMESPACE}/{group}/{kind}/{edge}/{device}"


def state_topic(host_id: str) -> str:
    """The primary host's STATE topic (Sparkplug 3.0; 2.2 used `STATE/<host id>`)."""
    return f"{NAMESPACE}/{STATE}/{host_id}"
