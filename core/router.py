"""The bridge's one Decoder and command encoder over every profile in use (docs/profiles.md).

SPEC §4's `devices/…` topics go straight to the iotgw dialect, as before profiles (so the
default profile costs one prefix test). Any other topic goes to the first active profile
whose topics claim it and on which its device is; a topic no profile claims is `unclaimed`.
The bridge refreshes the profiles and the directory of devices with `update`; a profile
whose definition did not change keeps its codec (a stateful decoder keeps its state).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime

from core.dialect import CommandMessage, IotgwDecoder, command_message
from core.errors import PayloadInvalid
from core.profiles import (
    IOTGW,
    Codec,
    Directory,
    Grants,
    Limits,
    Member,
    NotMember,
    ProfileDef,
    Reply,
    compile_profile,
    covering,
    topic_matches,
)
from core.topics import ALL_DEVICES, ROOT, source_of
from core.transport import Decoder, Outbound, Said

logger = logging.getLogger("iotgw.profiles")
_ROOT = ROOT + "/"


class DecoderCodec:
    """A code-backed profile kind from a plain Decoder (stateful, with an optional `replies()`) and an encoder.

    Its Decoder says which devices spoke; each must be on the profile (or an unregistered child).
    """

    def __init__(self, name: str, decoder: Decoder, *, filters: Sequence[str],
                 encode: Callable[[Outbound], tuple[str, bytes]], grants: Callable[[str, Member], Grants] | None = None
                 ) -> None:
        self.name = name
        self.decoder = decoder
        self._filters = list(filters)
        self._encode = encode
        self._grants = grants

    def filters(self) -> list[str]:
        return self._filters

    def decode(self, topic: str, payload: bytes, *, received_at: datetime, directory: Directory) -> list[Said] | None:
        if not any(topic_matches(f, topic) for f in self._filters):
            return None
        said = self.decoder(topic, payload, received_at=received_at)
        for one in said:
            profile = directory.profile_of(one.device_id)
            if profile != self.name and not (one.child_of is not None and profile == IOTGW):
                raise NotMember("wrong_profile", f"device {one.device_id} is not on profile {self.name}")
        return said

    def source(self, topic: str) -> str | None:
        return self.decoder.source(topic)

    def command_message(self, command: Outbound, member: Member) -> CommandMessage:
        topic, payload = self._encode(command)
        return CommandMessage(topic=topic, payload=payload)

    def grants(self, device_id: str, member: Member) -> Grants:
        return self._grants(device_id, member) if self._grants else Grants()

    def replies(self) -> list[Reply]:
        drain = getattr(self.decoder, "replies", None)
        return list(drain()) if drain is not None else []


class ProfileRouter:
    """Routes each message to its profile's codec, and each command to its device's profile's encoder."""

    def __init__(self, *, limits: Limits | None = None) -> None:
        self._limits = limits or Limits()
        self._iotgw = IotgwDecoder(max_payload=self._limits.max_payload, max_skew=self._limits.max_skew)
        self._defs: dict[str, ProfileDef] = {}
        self._codecs: dict[str, Codec] = {}
        self._active: list[Codec] = []
        self._active_names: list[str] = []
        self._positions: list[int] = []
        self._in_use: set[str] = set()
        self.directory = Directory()
        self.broken: dict[str, str] = {}  # profile → why it does not compile (it is skipped)

    def update(self, profiles: Sequence[ProfileDef], directory: Directory) -> bool:
        """Take new profiles and a new directory; whether the topic filters changed."""
        before = self.filters()
        defs = {p.name: p for p in profiles if p.name != IOTGW}
        for name, profile in defs.items():
            if self._defs.get(name) == profile and name in self._codecs:
                continue
            try:
                self._codecs[name] = compile_profile(profile, self._limits)
                self.broken.pop(name, None)
            except PayloadInvalid as exc:
                self._codecs.pop(name, None)
                self.broken[name] = str(exc)
                logger.error("profile %s is skipped: %s", name, exc)
        for name in set(self._codecs) - set(defs):
            del self._codecs[name]
        self._defs = defs
        self.directory = directory
        in_use = {m.profile for m in directory.members.values()}
        active = [(name, codec) for name, codec in sorted(self._codecs.items()) if name in in_use]
        self._active_names = [name for name, _ in active]
        self._active = [codec for _, codec in active]
        self._positions = sorted({i for _, codec in active for i in getattr(codec, "device_positions", ())})
        self._in_use = {name for name, _ in active}
        return self.filters() != before

    def active(self) -> list[tuple[str, Codec]]:
        """The profiles in use (name, codec), in the order the router tries them."""
        return list(zip(self._active_names, self._active, strict=True))

    def filters(self) -> list[str]:
        """What the bridge subscribes to: SPEC §4's topics, and those of every profile in use."""
        return covering([ALL_DEVICES, *(f for codec in self._active for f in codec.filters())])

    def __call__(self, topic: str, payload: bytes, *, received_at: datetime) -> list[Said]:
        if topic.startswith(_ROOT):
            return self._iotgw(topic, payload, received_at=received_at)
        if self._positions:  # the profile of a device the topic names first: one codec instead of all of them
            parts = topic.split("/", self._positions[-1] + 1)
            for i in self._positions:
                member = self.directory.members.get(parts[i]) if i < len(parts) else None
                codec = self._codecs.get(member.profile) if member is not None else None
                if codec is not None and member is not None and member.profile in self._in_use:
                    try:
                        said = codec.decode(topic, payload, received_at=received_at, directory=self.directory)
                    except NotMember:
                        said = None
                    if said is not None:
                        return said
        refused: NotMember | None = None
        for codec in self._active:
            try:
                said = codec.decode(topic, payload, received_at=received_at, directory=self.directory)
            except NotMember as exc:
                if refused is None or exc.literal > refused.literal:
                    refused = exc
                continue
            if said is not None:
                return said
        if refused is not None and refused.literal:
            raise refused
        raise PayloadInvalid("unclaimed", f"no profile in use claims topic {topic[:200]!r}")

    def source(self, topic: str) -> str:
        if topic.startswith(_ROOT):
            return source_of(topic)
        named = [(name, found) for name, codec in zip(self._active_names, self._active, strict=True)
                 if (found := codec.source(topic))]
        for name, found in named:  # a device on the profile whose topic it is
            if self.directory.profile_of(found) == name:
                return found[:200]
        return named[0][1][:200] if len({found for _, found in named}) == 1 else topic[:200]

    def command_message(self, command: Outbound) -> CommandMessage:
        """The command in its device's profile's words (SPEC §6's own for a device on the default profile)."""
        member = self.directory.members.get(command.device_id)
        if member is None:
            return command_message(command)
        codec = self._codecs.get(member.profile)
        if codec is None:
            raise ValueError(f"profile {member.profile} of device {command.device_id} is not usable "
                             f"({self.broken.get(member.profile, 'unknown')})")
        return codec.command_message(command, member)

    def events(self) -> dict[str, int]:
        """What stateful codecs counted (Sparkplug: seq gaps, rebirth requests, skipped metrics), summed by name."""
        out: Counter[str] = Counter()
        for codec in self._codecs.values():
            out.update(getattr(codec, "events", {}))
        return dict(out)

    def replies(self) -> list[Reply]:
        """What stateful decoders want published after a batch (a Sparkplug rebirth request)."""
        out: list[Reply] = []
        for codec in self._active:
            drain = getattr(codec, "replies", None)
            if drain is not None:
                out.extend(drain())
        return out
