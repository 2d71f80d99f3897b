"""The `sparkplug` profile kind (docs/profiles/sparkplug-b.md): edge nodes on the profile, their devices its children.

An edge node is registered as a device `<group>.<edge node>` (core.sparkplug.decoder.node_device_id)
on a profile of this kind; its Sparkplug devices are its children (core.ids.child_device_id).
"""

from __future__ import annotations

from datetime import UTC, datetime

from core.dialect import CommandMessage
from core.errors import PayloadInvalid
from core.profiles import IOTGW, Directory, Grants, Limits, Member, NotMember, ProfileDef, Reply
from core.sparkplug.decoder import SparkplugDecoder, node_device_id
from core.sparkplug.topic import (
    DBIRTH,
    DCMD,
    DDATA,
    DDEATH,
    NAMESPACE,
    NBIRTH,
    NCMD,
    NDATA,
    NDEATH,
    STATE,
    SUBSCRIPTION,
    device_topic,
    node_topic,
    parse_topic,
)
from core.transport import Outbound, Said

_PREFIX = NAMESPACE + "/"
_HEX = frozenset("0123456789abcdef")


class SparkplugCodec:
    """A Codec (core/profiles.py) over one SparkplugDecoder, which keeps the edge nodes' state across batches."""

    def __init__(self, profile: ProfileDef, limits: Limits) -> None:
        # Its one setting: whether the devices an edge node announces (DBIRTH) become its children on first
        # sight (devices/services/children.py), or only when registered beforehand (the default).
        if set(profile.spec) - {"create_children"} or not isinstance(profile.spec.get("create_children", False), bool):
            raise PayloadInvalid("bad_profile", 'a sparkplug profile\'s spec is {} or {"create_children": true|false}')
        self.name = profile.name
        self.decoder = SparkplugDecoder(max_payload=limits.max_payload, max_skew=limits.max_skew)

    @property
    def events(self) -> dict[str, int]:
        """Its decoder's counts: `seq_gap`, `rebirth_requested`, `stale_death`, `skipped_<why>`."""
        return {f"sparkplug_{name}": n for name, n in self.decoder.counts.items()}

    def filters(self) -> list[str]:
        return [SUBSCRIPTION]

    def decode(self, topic: str, payload: bytes, *, received_at: datetime, directory: Directory) -> list[Said] | None:
        if not topic.startswith(_PREFIX):
            return None
        where = parse_topic(topic)
        if where.type in (NCMD, DCMD):
            return []  # hosts' commands, ours included
        if where.edge:  # its node must be on this profile before anything it says is read (or asks a rebirth)
            node = node_device_id(where.group, where.edge)
            if directory.profile_of(node) != self.name:
                raise NotMember("wrong_profile", f"{topic[:200]}: edge node {node} is not on profile {self.name} "
                                f"(its profile: {directory.profile_of(node)}, or it is not registered)", literal=2)
        said = self.decoder(topic, payload, received_at=received_at)
        for one in said:
            if one.child_of is not None and directory.profile_of(one.device_id) not in (self.name, IOTGW):
                raise NotMember("wrong_profile", f"device {one.device_id} is not on profile {self.name}")
        return said

    def source(self, topic: str) -> str | None:
        return self.decoder.source(topic) if topic.startswith(_PREFIX) else None

    def command_message(self, command: Outbound, member: Member) -> CommandMessage:
        """NCMD or DCMD; ValueError (not delivered now, tried again) until the device's BIRTH has been seen."""
        try:
            topic, payload, _qos = self.decoder.command(command, at=datetime.now(UTC))
        except PayloadInvalid as exc:
            raise ValueError(str(exc)) from exc
        return CommandMessage(topic=topic, payload=payload)

    def grants(self, device_id: str, member: Member) -> Grants:
        """An edge node may publish its own births, data and deaths and receive its own commands, and read STATE."""
        if member.gateway is not None:
            return Grants()  # a Sparkplug device never connects itself: its edge node speaks for it
        publish: list[str] = []
        subscribe: list[str] = [f"{NAMESPACE}/{STATE}/+"]
        for group, edge in node_names(device_id):
            publish += [node_topic(group, kind, edge) for kind in (NBIRTH, NDATA, NDEATH)]
            publish += [device_topic(group, kind, edge, "+") for kind in (DBIRTH, DDATA, DDEATH)]
            subscribe += [node_topic(group, NCMD, edge), device_topic(group, DCMD, edge, "+")]
        return Grants(tuple(publish), tuple(subscribe))

    def replies(self) -> list[Reply]:
        return self.decoder.replies()


def node_names(device_id: str) -> list[tuple[str, str]]:
    """The (group, edge node) pairs whose node id is `device_id`: none when its id was hashed to fit."""
    found = []
    for i, ch in enumerate(device_id):
        if ch != ".":
            continue
        group, edge = _unescaped(device_id[:i]), _unescaped(device_id[i + 1:])
        if group and edge and "/" not in group + edge and node_device_id(group, edge) == device_id:
            found.append((group, edge))
    return found


def _unescaped(text: str) -> str | None:
    """A child name from its escaped form (`.` and two hex digits per byte), None when it is not one."""
    out, i = bytearray(), 0
    while i < len(text):
        if text[i] == ".":
            pair = text[i + 1:i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                return None
            out.append(int(pair, 16))
            i += 3
        else:
            out += text[i].encode()
            i += 1
    try:
        return out.decode()
    except UnicodeDecodeError:
        return None
