"""Home Assistant MQTT discovery, read (docs/profiles/home-assistant-discovery.md): a config topic and payload → Entity.

A firmware announces each entity as a retained JSON object on
`<prefix>/<component>/[<node_id>/]<object_id>/config`, with Home Assistant's abbreviated keys
(`stat_t`, `unit_of_meas`, …) and `~` standing for a base topic; an empty payload removes it.
This module expands and checks such a config (bounded, pure) and translates its value_template
(core/hatemplate.py); what iotgw then does with it is the domain's (devices/services/discovery.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import PayloadInvalid
from core.hatemplate import Extract, TemplateRefused, translate
from core.ids import DEVICE_ID_RE, child_device_id
from core.payloads import decode_json, holds_nul
from core.profiles import Codec, Directory, RulesCodec
from core.profilespec import TopicRule
from core.rules import metric_name, render

DEFAULT_PREFIX = "homeassistant"
MAX_CONFIG = 16 * 1024  # bytes of one config: a firmware's are under 1 KiB
_LEVEL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # component, node_id and object_id, as Home Assistant allows them
_BAD_TOPIC = re.compile(r"[+#\x00]")

# Home Assistant's abbreviations of the keys iotgw reads (its mqtt/abbreviations.py has them all).
ABBREVIATIONS = {
    "avty": "availability", "avty_mode": "availability_mode", "avty_t": "availability_topic",
    "avty_tpl": "availability_template", "cmd_t": "command_topic", "cmd_tpl": "command_template",
    "dev": "device", "dev_cla": "device_class", "ent_cat": "entity_category", "json_attr_t": "json_attributes_topic",
    "obj_id": "object_id", "pl_avail": "payload_available", "pl_not_avail": "payload_not_available",
    "pl_on": "payload_on", "pl_off": "payload_off", "stat_cla": "state_class", "stat_t": "state_topic",
    "stat_tpl": "state_template", "stat_val_tpl": "state_value_template", "t": "topic", "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement", "val_tpl": "value_template", "o": "origin", "p": "platform",
    "cmps": "components", "ic": "icon", "en": "enabled_by_default", "exp_aft": "expire_after",
    "frc_upd": "force_update", "ret": "retain",
}
DEVICE_ABBREVIATIONS = {
    "cns": "connections", "ids": "identifiers", "mf": "manufacturer", "mdl": "model", "mdl_id": "model_id",
    "hw": "hw_version", "sw": "sw_version", "sa": "suggested_area", "cu": "configuration_url", "sn": "serial_number",
}
TOPIC_BASE = "~"


class DiscoveryInvalid(PayloadInvalid):
    """A discovery config iotgw cannot read; the message says where."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_discovery", message)


@dataclass(frozen=True, slots=True)
class Availability:
    """A topic that says the entity's device is online or offline, and the payloads that say so."""

    topic: str
    online: str = "online"
    offline: str = "offline"
    field: str | None = None  # `{{ value_json.state }}`: the status is that field of a JSON payload


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """The `device` block: who the entity belongs to."""

    identifiers: tuple[str, ...] = ()
    name: str = ""
    model: str = ""
    manufacturer: str = ""


@dataclass(frozen=True, slots=True)
class Entity:
    """One announced entity: where its state is, how to read it (or why not), its unit and label."""

    key: str  # `<component>/[<node_id>/]<object_id>`: the config topic without prefix and `/config`
    component: str
    node_id: str | None
    object_id: str
    name: str
    unique_id: str | None = None
    state_topic: str | None = None
    extract: Extract | None = None  # None when there is no state topic, or its template was refused
    refused: str | None = None  # why the value_template is not read (TemplateRefused's message)
    unit: str = ""
    device_class: str = ""
    command_topic: str | None = None
    availability: tuple[Availability, ...] = ()
    device: DeviceInfo = DeviceInfo()

    @property
    def label(self) -> str:
        """What a chart calls it: its name, else its object id."""
        return self.name or self.object_id


@dataclass(frozen=True, slots=True)
class Removed:
    """An empty retained config: the entity is gone."""

    key: str
    component: str
    node_id: str | None
    object_id: str


def discovery_filters(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """The topic filters that bring every config (with and without a node id); retained ones arrive on subscribe."""
    return [f"{prefix}/+/+/config", f"{prefix}/+/+/+/config"]


def config_key(prefix: str, topic: str) -> tuple[str, str, str | None, str] | None:
    """(key, component, node_id, object_id) of a config topic under the prefix, or None when it is not one."""
    if not topic.startswith(prefix + "/") or not topic.endswith("/config"):
        return None
    levels = topic[len(prefix) + 1:-len("/config")].split("/")
    if len(levels) not in (2, 3) or not all(_LEVEL.match(level) for level in levels):
        return None
    node = levels[1] if len(levels) == 3 else None
    return "/".join(levels), levels[0], node, levels[-1]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


Text = Field(default=None, max_length=256)


class _Availability(_Strict):
    topic: str = Field(max_length=256)
    payload_available: str = Field(default="online", max_length=64)
    payload_not_available: str = Field(default="offline", max_length=64)
    value_template: str | None = Field(default=None, max_length=512)


class _Device(_Strict):
    identifiers: list[str] = Field(default_factory=list, max_length=16)
    name: str = Field(default="", max_length=200)
    model: str = Field(default="", max_length=200)
    manufacturer: str = Field(default="", max_length=200)

    @field_validator("identifiers", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value  # ESPHome writes one identifier as a string


class _Config(_Strict):
    name: str | None = Field(default=None, max_length=200)
    unique_id: str | None = Text
    state_topic: str | None = Text
    value_template: str | None = Field(default=None, max_length=512)
    unit_of_measurement: str | None = Field(default=None, max_length=32)
    device_class: str | None = Field(default=None, max_length=64)
    command_topic: str | None = Text
    availability_topic: str | None = Text
    payload_available: str = Field(default="online", max_length=64)
    payload_not_available: str = Field(default="offline", max_length=64)
    availability: list[_Availability] = Field(default_factory=list, max_length=8)
    device: _Device = _Device()
    components: Any = None

    @field_validator("state_topic", "command_topic", "availability_topic")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        return None if value is None else _topic_name(value)


def _topic_name(value: str) -> str:
    if not value or _BAD_TOPIC.search(value) or value.startswith("$"):
        raise ValueError(f"{value[:80]!r} is not a topic to read (no wildcards, no NUL, not $…)")
    return value


def expand(doc: dict[str, Any]) -> dict[str, Any]:
    """Abbreviated keys spelled out, and `~` replaced by the base topic at either end of every `…topic` value."""
    base = doc.get(TOPIC_BASE)
    out: dict[str, Any] = {ABBREVIATIONS.get(k, k): v for k, v in doc.items() if k != TOPIC_BASE}
    if isinstance(out.get("device"), dict):
        out["device"] = {DEVICE_ABBREVIATIONS.get(str(k), str(k)): v for k, v in out["device"].items()}
    if isinstance(out.get("availability"), list):
        out["availability"] = [_based({ABBREVIATIONS.get(str(k), str(k)): v for k, v in item.items()}, base)
                               if isinstance(item, dict) else item for item in out["availability"][:8]]
    return _based(out, base)


def _based(doc: dict[str, Any], base: Any) -> dict[str, Any]:
    if not isinstance(base, str):
        return doc
    for key, value in doc.items():
        if key.endswith("topic") and isinstance(value, str) and value:
            if value.startswith(TOPIC_BASE):
                value = base + value[1:]
            if value.endswith(TOPIC_BASE):
                value = value[:-1] + base
            doc[key] = value
    return doc


def parse_config(prefix: str, topic: str, payload: bytes) -> Entity | Removed:
    """The entity a config announces (or removes); DiscoveryInvalid when it is not a config iotgw can read.

    A value_template outside core/hatemplate.py's subset does not make the config invalid: the
    entity comes back with `refused` set, so its metadata can still be shown and the refusal recorded.
    """
    where = config_key(prefix, topic)
    if where is None:
        raise DiscoveryInvalid(f"{topic[:200]!r} is not <prefix>/<component>/[<node_id>/]<object_id>/config")
    key, component, node_id, object_id = where
    if not payload.strip():
        return Removed(key, component, node_id, object_id)
    doc = decode_json(payload, max_bytes=MAX_CONFIG)
    if not isinstance(doc, dict) or holds_nul(doc):
        raise DiscoveryInvalid(f"{key}: a config is a JSON object without NUL characters")
    try:
        config = _Config.model_validate(expand(doc))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise DiscoveryInvalid(f"{key}: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    if component == "device" or config.components is not None:
        raise DiscoveryInvalid(f"{key}: device-based discovery (`cmps`) is not read; announce each entity")
    extract, refused = None, None
    if config.state_topic is not None:
        try:
            extract = translate(config.value_template) if config.value_template else Extract()
        except TemplateRefused as exc:
            refused = str(exc)
    return Entity(
        key=key, component=component, node_id=node_id, object_id=object_id, name=(config.name or "").strip(),
        unique_id=config.unique_id, state_topic=config.state_topic, extract=extract, refused=refused,
        unit=(config.unit_of_measurement or "").strip(), device_class=config.device_class or "",
        command_topic=config.command_topic, availability=_availability(config),
        device=DeviceInfo(tuple(config.device.identifiers), config.device.name, config.device.model,
                          config.device.manufacturer))


def _availability(config: _Config) -> tuple[Availability, ...]:
    items: list[tuple[str | None, str, str, str | None]] = [
        (config.availability_topic, config.payload_available, config.payload_not_available, None)]
    items += [(a.topic, a.payload_available, a.payload_not_available, a.value_template) for a in config.availability]
    out = []
    for topic, online, offline, template in items:
        if not topic:
            continue
        try:
            extract = translate(template) if template else Extract()
        except TemplateRefused:
            continue  # an availability we cannot read is left out; the entity's state still is read
        if extract.path is not None and len(extract.path) != 1:
            continue
        try:
            out.append(Availability(_topic_name(topic), online, offline, extract.dotted))
        except ValueError:
            continue
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Claim:
    """Where an entity's state lands: the device a profile in use gives its state topic, and the metric it stores."""

    profile: str
    device_id: str
    metric: str | None  # None: the profile stores the topic, but not as one metric (`{{ value }}` of a JSON topic)
    speaker: str = ""  # the device the topic names: the gateway of a child, else the device itself


def claim(entity: Entity, codecs: Sequence[tuple[str, Codec]], directory: Directory) -> Claim | None:
    """The claim of the first profile in use whose telemetry rule reads the entity's state topic for a device on it."""
    if entity.state_topic is None:
        return None
    for name, codec in codecs:
        if not isinstance(codec, RulesCodec):
            continue  # a code-backed kind (Sparkplug B) names its own metrics
        for found in codec.reading.matches(entity.state_topic):
            rule = found.rule.spec
            if rule.role != "telemetry":
                continue
            speaker = _member(name, found.captures, directory)
            if speaker is not None:
                device_id = child_device_id(speaker, found.captures["child"]) if "child" in found.captures else speaker
                return Claim(name, device_id, _metric(rule, found.captures, entity.extract), speaker)
    return None


def _member(profile: str, captures: dict[str, str], directory: Directory) -> str | None:
    """The device on the profile that the topic names (or the one device of a profile whose topics name none)."""
    device = captures.get("device")
    if device is None:
        members = directory.on(profile)
        device = members[0] if len(members) == 1 else None
    if device is None or directory.profile_of(device) != profile:
        return None
    return device


def _metric(rule: TopicRule, captures: dict[str, str], extract: Extract | None) -> str | None:
    """The metric name the rule gives the value the template reads (as RulesDecoding names it)."""
    if extract is None:
        return None
    prefix = render(rule.prefix, captures) if rule.prefix else ""
    if rule.format == "value":
        return metric_name(prefix + render(rule.metric or "value", captures)) if extract.path is None else None
    if extract.path is None or rule.children:
        return None
    keys = list(extract.path)
    if rule.select:
        selected = rule.select.split(".")
        if keys[:len(selected)] != selected:
            return None
        keys = keys[len(selected):]
    if not keys:
        return None
    return metric_name(".".join([p for p in [prefix.rstrip(".")] if p] + keys))


def generated_spec(entities: Sequence[Entity]) -> dict[str, Any]:
    """A profile (the rule language) for one discovered device that no profile in use claims: its literal topics.

    Its topics name no device, so the one device on the profile speaks them (docs/profiles.md); each state topic
    is JSON when an entity reads a field of it, else a plain value named by the entity's object id.
    """
    status: dict[str, dict[str, Any]] = {}
    telemetry: dict[str, dict[str, Any]] = {}
    subscribe: list[str] = []
    for entity in sorted(entities, key=lambda e: e.key):
        for avail in entity.availability:
            if _literal(avail.topic) and avail.topic not in status:
                rule: dict[str, Any] = {"topic": avail.topic, "role": "status", "format": "value",
                                        "online": [avail.online], "offline": [avail.offline]}
                if avail.field:
                    rule["field"] = avail.field
                status[avail.topic] = rule
        topic, extract = entity.state_topic, entity.extract
        if topic is None or extract is None or not _literal(topic):
            continue
        if extract.path is not None:
            telemetry[topic] = {"topic": topic, "role": "telemetry"}
        elif topic not in telemetry:
            telemetry[topic] = {"topic": topic, "role": "telemetry", "format": "value",
                                "metric": metric_name(entity.object_id)}
        if entity.command_topic and _literal(entity.command_topic) and len(subscribe) < 16:
            subscribe.append(entity.command_topic)
    topics = [*status.values(), *(r for t, r in telemetry.items() if t not in status)]
    if not topics:
        raise DiscoveryInvalid("no entity of the device has a state or availability topic iotgw can read")
    spec: dict[str, Any] = {"topics": topics[:64]}
    if subscribe:
        spec["grants"] = {"subscribe": sorted(set(subscribe))}
    return spec


def metric_of_generated(entity: Entity) -> str | None:
    """The metric an entity's state gets on a generated profile (as generated_spec writes its rules)."""
    if entity.extract is None:
        return None
    if entity.extract.path is None:
        return metric_name(entity.object_id)
    return metric_name(".".join(entity.extract.path))


def _literal(topic: str) -> bool:
    """Whether a topic can be a literal level-by-level pattern of the rule language."""
    return len(topic) <= 256 and not any(c in topic for c in "{}+#") and "" not in topic.split("/")


def discovered_device_id(entity: Entity) -> str | None:
    """The id a discovered device is registered under: its node id, else its first identifier (if it can be one)."""
    for candidate in (entity.node_id, *entity.device.identifiers[:1]):
        if candidate and DEVICE_ID_RE.fullmatch(candidate):
            return candidate
    return None
