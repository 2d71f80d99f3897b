"""Device profiles at the edge: the kinds of profile (declarative rules, or code), and the router over them.

A profile is data (devices/models.py: DeviceProfile): a name, a kind and a spec. Each kind
compiles a profile into a `Codec`: the topic filters it needs, a decoder for what its
devices publish, a command encoder, and the topics its devices may use on the broker. The
`ProfileRouter` is the bridge's one Decoder (core/transport.py): a message goes to the
profile whose topics claim it, and its device must be on that profile (the `Directory`, a
snapshot the bridge refreshes). A kind backed by code (Sparkplug B) registers in `KINDS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from core.dialect import CommandMessage, IotgwDecoder, command_message
from core.errors import PayloadInvalid
from core.ids import DEVICE_ID_RE
from core.profilespec import parse_spec
from core.rules import CompiledRule, RulesDecoding, as_filter, topic_level
from core.times import DEFAULT_MAX_SKEW
from core.topics import ALL_DEVICES, PUBLISH_KINDS, ROOT, SUBSCRIBE_KIND, device_topic, source_of
from core.transport import Outbound, Said

logger = logging.getLogger("iotgw.profiles")

IOTGW = "iotgw"  # the built-in profile every device has unless told otherwise: SPEC §4's own dialect
Reply = tuple[str, bytes, int]  # (topic, payload, QoS) a stateful decoder wants published (a rebirth request)


@dataclass(frozen=True, slots=True)
class Member:
    """A device on a profile other than the default: its profile, and for a child its gateway and own name."""

    profile: str
    gateway: str | None = None
    child: str | None = None


@dataclass(frozen=True)
class Directory:
    """Which devices are on which profile (every device absent is on the default one), as the bridge last read it."""

    members: Mapping[str, Member] = field(default_factory=dict)
    by_profile: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, members: Mapping[str, Member]) -> Directory:
        """A directory of these members, indexed by profile (gateways and plain devices, not children)."""
        by: dict[str, list[str]] = {}
        for device_id, member in members.items():
            if member.gateway is None:
                by.setdefault(member.profile, []).append(device_id)
        return cls(dict(members), {k: tuple(sorted(v)) for k, v in by.items()})

    def profile_of(self, device_id: str) -> str:
        """The device's profile (an unregistered device is on the default one too, as far as routing goes)."""
        member = self.members.get(device_id)
        return IOTGW if member is None else member.profile

    def on(self, profile: str) -> tuple[str, ...]:
        """The devices (not children) on a profile."""
        return self.by_profile.get(profile, ())


@dataclass(frozen=True, slots=True)
class ProfileDef:
    """A profile as stored: its name, kind and spec (a JSON object)."""

    name: str
    kind: str
    spec: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Limits:
    """What every decoder enforces (IOTGW_MAX_PAYLOAD, IOTGW_MAX_CLOCK_SKEW)."""

    max_payload: int = 64 * 1024
    max_skew: timedelta = DEFAULT_MAX_SKEW


@dataclass(frozen=True, slots=True)
class Grants:
    """Topic filters a device may publish to and subscribe to on the broker."""

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()


class NotMember(PayloadInvalid):
    """The topic is this profile's, but its device is not on the profile (or not registered).

    `literal` counts the fixed levels of the pattern that matched (`tele/+/SENSOR`: 2): the most specific
    refusal is the one reported, and a pattern of wildcards alone (`{device}/#`) claims nothing by itself.
    """

    def __init__(self, reason: str, message: str, *, literal: int = 1) -> None:
        super().__init__(reason, message)
        self.literal = literal


class Codec(Protocol):
    """A profile compiled by its kind."""

    def filters(self) -> Sequence[str]:
        """The topic filters the bridge subscribes to for this profile."""
        ...

    def decode(self, topic: str, payload: bytes, *, received_at: datetime, directory: Directory) -> list[Said] | None:
        """What the message said; None when the topic is not this profile's. Raises PayloadInvalid (NotMember)."""
        ...

    def source(self, topic: str) -> str | None:
        """The device a refused message on this profile's topic is counted under, if the topic names one."""
        ...

    def command_message(self, command: Outbound, member: Member) -> CommandMessage:
        """The command as this profile's devices take it."""
        ...

    def grants(self, device_id: str, member: Member) -> Grants:
        """What the device may do on the broker (a gateway: its children's topics too)."""
        ...


Kind = Callable[[ProfileDef, Limits], Codec]


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (`+` one level, a trailing `#` the rest); a `$` topic matches no wildcard first level."""
    filt, parts = topic_filter.split("/"), topic.split("/")
    if topic.startswith("$") and filt[0] in ("+", "#"):
        return False
    for i, level in enumerate(filt):
        if level == "#":
            return True
        if i >= len(parts) or (level != "+" and level != parts[i]):
            return False
    return len(parts) == len(filt)


def allowed(grants: Grants, topic: str, *, subscribe: bool) -> bool:
    """Whether the grants let a device publish to a topic, or subscribe to a filter (or receive on a topic)."""
    if subscribe:
        return any(g == topic or _covers(g, topic) for g in grants.subscribe)
    return any(topic_matches(g, topic) for g in grants.publish)


def covering(filters: Sequence[str]) -> list[str]:
    """The filters without those another one covers (`+/status` under `+/+`), so no message arrives twice."""
    unique = sorted(set(filters))
    return [f for f in unique if not any(o != f and _covers(o, f) for o in unique)]


def _covers(wide: str, narrow: str) -> bool:
    a, b = wide.split("/"), narrow.split("/")
    for i, level in enumerate(a):
        if level == "#":
            return True
        if i >= len(b) or b[i] == "#" or (level != "+" and level != b[i]):
            return False
    return len(a) == len(b)


class RulesCodec:
    """The `rules` kind: a declarative profile (docs/profiles.md)."""

    def __init__(self, profile: ProfileDef, limits: Limits) -> None:
        self.name = profile.name
        self.spec = parse_spec(profile.spec)
        self.reading = RulesDecoding(self.spec, max_payload=limits.max_payload, max_skew=limits.max_skew)

    def filters(self) -> list[str]:
        return [rule.filter for rule in self.reading.rules if rule.spec.role != "ignore"]

    @property
    def device_positions(self) -> set[int]:
        """The topic levels that name the device (the router goes straight to the profile of a device found there)."""
        return self.reading.device_positions

    def decode(self, topic: str, payload: bytes, *, received_at: datetime, directory: Directory) -> list[Said] | None:
        for found in self.reading.matches(topic):
            device_id = self._device(topic, found.captures.get("device"), directory, len(found.rule.literals))
            said = self.reading.decode(found, device_id, payload, received_at=received_at)
            if said is None:
                continue  # its conditions failed: the next rule of the topic may take it
            for one in said:
                if one.child_of is not None and directory.profile_of(one.device_id) not in (self.name, IOTGW):
                    raise NotMember("wrong_profile", f"child {one.device_id} is not on profile {self.name}")
            return said
        return [] if self.reading.match(topic) else None

    def _device(self, topic: str, device_id: str | None, directory: Directory, literal: int) -> str:
        """The device the topic names, or the one device of a profile whose topics name none."""
        if device_id is None:  # literal topics (a gateway API): the one device on this profile speaks them
            members = directory.on(self.name)
            if len(members) != 1:
                raise NotMember("unknown_device" if not members else "ambiguous_device",
                                f"{topic[:200]} is profile {self.name}'s, which has {len(members)} devices, not one",
                                literal=literal)
            return members[0]
        if not DEVICE_ID_RE.fullmatch(device_id):
            raise NotMember("bad_topic", f"{topic[:200]}: {device_id[:80]!r} cannot be a device id", literal=literal)
        if directory.profile_of(device_id) != self.name:
            raise NotMember("wrong_profile", f"{topic[:200]} is profile {self.name}'s, and device {device_id} is not "
                                             f"on it (its profile: {directory.profile_of(device_id)}, or it is not "
                                             "registered)", literal=literal)
        return device_id

    def source(self, topic: str) -> str | None:
        for found in self.reading.matches(topic):
            if found.rule.literals and "device" in found.captures:  # `{device}/#` alone names no one
                return found.captures["device"]
        return None

    def command_message(self, command: Outbound, member: Member) -> CommandMessage:
        return self.reading.command_message(command, gateway=member.gateway, child=member.child)

    def grants(self, device_id: str, member: Member) -> Grants:
        if member.gateway is not None:
            return Grants()  # a child never connects itself: its gateway speaks for it
        publish = [_filled(rule, device_id) for rule in self.reading.rules]
        subscribe = []
        if self.spec.command is not None:
            command = self.spec.command.topic.replace("{device}", topic_level(device_id))
            subscribe.append(as_filter([("+" if "{" in level else level) for level in command.split("/")]))
        if self.spec.grants is not None:
            publish += [g.replace("{device}", device_id) for g in self.spec.grants.publish]
            subscribe += [g.replace("{device}", device_id) for g in self.spec.grants.subscribe]
        return Grants(tuple(covering(publish)), tuple(covering(subscribe)))


def _filled(rule: CompiledRule, device_id: str) -> str:
    return "/".join(device_id if name == "device" else "+" if name else level
                    for level, name in ((lv, rule.captures.get(i)) for i, lv in enumerate(rule.levels)))


class IotgwCodec:
    """The `iotgw` kind: SPEC §4's `devices/{id}/…` dialect as a profile."""

    def __init__(self, profile: ProfileDef, limits: Limits) -> None:
        self.decoder = IotgwDecoder(max_payload=limits.max_payload, max_skew=limits.max_skew)

    def filters(self) -> list[str]:
        return [ALL_DEVICES]

    def decode(self, topic: str, payload: bytes, *, received_at: datetime, directory: Directory) -> list[Said] | None:
        if not topic.startswith(ROOT + "/"):
            return None
        return self.decoder(topic, payload, received_at=received_at)

    def source(self, topic: str) -> str | None:
        return source_of(topic) if topic.startswith(ROOT + "/") else None

    def command_message(self, command: Outbound, member: Member) -> CommandMessage:
        return command_message(command)

    def grants(self, device_id: str, member: Member) -> Grants:
        return Grants(tuple(device_topic(device_id, k) for k in PUBLISH_KINDS),
                      (device_topic(device_id, SUBSCRIBE_KIND),))


# The kinds of profile. A kind backed by code registers here (name → factory of its Codec); see docs/profiles.md.
def _sparkplug(profile: ProfileDef, limits: Limits) -> Codec:
    from core.sparkplug.profile import SparkplugCodec  # it builds on this module's types

    return SparkplugCodec(profile, limits)


KINDS: dict[str, Kind] = {"iotgw": IotgwCodec, "rules": RulesCodec, "sparkplug": _sparkplug}


def compile_profile(profile: ProfileDef, limits: Limits = Limits()) -> Codec:
    """A profile's codec; PayloadInvalid (SpecInvalid) when its kind is unknown or its spec is broken."""
    kind = KINDS.get(profile.kind)
    if kind is None:
        raise PayloadInvalid("bad_profile", f"unknown profile kind {profile.kind!r} (known: {', '.join(KINDS)})")
    return kind(profile, limits)
