"""The rule engine: a declarative profile (core/profilespec.py) compiled into a Codec (core/profiles.py).

Pure and bounded: topics are matched level by level, payloads are read by dotted paths that
this module walks itself, and command templates are filled by placeholder substitution. No
user text is ever evaluated.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from core.dialect import CommandMessage
from core.errors import PayloadInvalid
from core.ids import DEVICE_ID_RE, child_device_id
from core.payloads import MAX_STRING, Sample, decode_json, holds_nul, storable_text
from core.profilespec import CAPTURE_RE, PLACEHOLDER_RE, ProfileSpec, TimeSpec, TopicRule
from core.times import DEFAULT_MAX_SKEW, EPOCH
from core.transport import Outbound, Said
from core.wire import MAX_ERROR_TEXT, CommandResponse

MAX_METRICS = 256  # per sample: the rest of a very wide object is dropped
MAX_LIST = 32  # list items flattened by index (`by_minute.0`); the rest are dropped
MAX_DEPTH = 8
MAX_SAMPLES = 1000  # per message (an array, or a gateway's children)
_BAD_METRIC_CHAR = re.compile(r"[^A-Za-z0-9_.:-]")
_INT = re.compile(r"^[+-]?\d{1,18}$")
_MISSING = object()


def get_path(doc: Any, path: str | None) -> Any:
    """The value at a dotted path (`params.ts`), or _MISSING; a list is indexed by a number key."""
    if path is None:
        return doc
    for key in path.split("."):
        if isinstance(doc, dict) and key in doc:
            doc = doc[key]
        elif isinstance(doc, list) and key.isdigit() and int(key) < len(doc):
            doc = doc[int(key)]
        else:
            return _MISSING
    return doc


def metric_name(name: str) -> str:
    """A metric name as SPEC §4 allows it: characters outside `[A-Za-z0-9_.:-]` become `_`, at most 64."""
    return _BAD_METRIC_CHAR.sub("_", name)[:64] or "_"


def _keep(value: Any) -> bool:
    if value is None or isinstance(value, bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= MAX_STRING and storable_text(value)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested objects (and short lists) as one level of dotted names: `{"AM2301": {"Temperature": 1}}` →
    `{"AM2301.Temperature": 1}`; strings too long or unstorable are dropped, not refused."""
    out: dict[str, Any] = {}
    _flatten_into(out, obj, prefix, 0)
    return out


def _flatten_into(out: dict[str, Any], value: Any, name: str, depth: int) -> None:
    if isinstance(value, dict) and depth < MAX_DEPTH:
        for key, child in value.items():
            if len(out) >= MAX_METRICS:
                return
            _flatten_into(out, child, f"{name}.{key}" if name else str(key), depth + 1)
    elif isinstance(value, list) and depth < MAX_DEPTH:
        for i, child in enumerate(value[:MAX_LIST]):
            if len(out) >= MAX_METRICS:
                return
            _flatten_into(out, child, f"{name}.{i}" if name else str(i), depth + 1)
    elif name and _keep(value):
        clean = _NAMES.get(name)
        if clean is None:
            clean = metric_name(name)
            if len(_NAMES) < _NAMES_KEPT:  # a fleet's metric names repeat: sanitised once each
                _NAMES[name] = clean
        out[clean] = value


_NAMES: dict[str, str] = {}
_NAMES_KEPT = 10_000


def parse_value(text: str) -> Any:
    """A plain payload as a value: a number, ON/OFF and true/false as booleans, `nan` as null, else the text."""
    if _INT.match(text):
        return int(text)
    lowered = text.lower()
    if lowered in ("on", "true"):
        return True
    if lowered in ("off", "false"):
        return False
    if lowered in ("nan", "null", "none", "unknown", "unavailable"):
        return None
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and math.isfinite(number):
        return number
    if len(text) > MAX_STRING or not storable_text(text):
        raise PayloadInvalid("bad_sample", f"value is not a number and over {MAX_STRING} characters or unstorable")
    return text


def to_time(value: Any, spec: TimeSpec, *, now: datetime, max_skew: timedelta = DEFAULT_MAX_SKEW) -> datetime:
    """A sample's time in its declared unit; an ISO time without an offset is read in the profile's zone."""
    if spec.unit in ("s", "ms"):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise PayloadInvalid("bad_sample", f"time {value[:40]!r} is not a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise PayloadInvalid("bad_sample", f"time {str(value)[:40]!r} is not a number")
        if value < 0:
            raise PayloadInvalid("ts_too_old", "time is before 1970-01-01")
        try:
            ts = EPOCH + timedelta(seconds=value if spec.unit == "s" else value / 1000)
        except OverflowError:
            raise PayloadInvalid("ts_in_future", "time is beyond the year 9999") from None
        if ts > now + max_skew:  # the window of core.times.parse_ts, without formatting and parsing again
            raise PayloadInvalid("ts_in_future", f"time {value!r} is more than {max_skew} ahead of the gateway's clock")
        return ts
    if not isinstance(value, str) or len(value) > 64 or not value.isascii() or not value.isprintable():
        raise PayloadInvalid("bad_sample", "time must be ISO-8601 text")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PayloadInvalid("bad_sample", f"time {value!r} is not ISO-8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC if spec.tz == "UTC" else ZoneInfo(spec.tz))
    try:
        ts = parsed.astimezone(UTC)
    except OverflowError:
        raise PayloadInvalid("ts_too_old" if parsed.year < 1970 else "ts_in_future", "time out of range") from None
    if ts < EPOCH:  # the window of core.times.parse_ts
        raise PayloadInvalid("ts_too_old", f"time {value!r} is before 1970-01-01")
    if ts > now + max_skew:
        raise PayloadInvalid("ts_in_future", f"time {value!r} is more than {max_skew} ahead of the gateway's clock")
    return ts


def render(template: str, fields: dict[str, Any]) -> str:
    """A template with its placeholders replaced as text (missing: empty; objects: JSON)."""

    def one(match: re.Match[str]) -> str:
        value = get_path(fields, match.group(1))
        if value is _MISSING or value is None:
            return ""
        if isinstance(value, str):
            return value
        return orjson.dumps(value).decode()

    return PLACEHOLDER_RE.sub(one, template)


def fill(template: Any, fields: dict[str, Any]) -> Any:
    """A JSON template filled in: a string that is one placeholder takes the value itself (any JSON type)."""
    if isinstance(template, str):
        whole = PLACEHOLDER_RE.fullmatch(template)
        if whole:
            value = get_path(fields, whole.group(1))
            return None if value is _MISSING else value
        return render(template, fields)
    if isinstance(template, dict):
        return {render(k, fields): fill(v, fields) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, fields) for v in template]
    return template


def topic_level(value: str) -> str:
    """A value put into a topic level: non-empty, without `/`, wildcards or NUL."""
    if not value or any(c in value for c in "/+#\x00"):
        raise ValueError(f"{value[:80]!r} cannot be a topic level")
    return value


def as_filter(levels: Sequence[str]) -> str:
    """A topic pattern as the MQTT filter that subscribes to it (captures become `+`)."""
    return "/".join("+" if CAPTURE_RE.match(level) else level for level in levels)


@dataclass(frozen=True, slots=True)
class Match:
    """A message's rule and what its topic captured."""

    rule: CompiledRule
    captures: dict[str, str]


class CompiledRule:
    """One topic rule, ready to match topics level by level."""

    def __init__(self, spec: TopicRule) -> None:
        self.spec = spec
        self.levels = spec.levels
        self.multi = self.levels[-1] == "#"
        self.fixed = self.levels[:-1] if self.multi else self.levels
        self.captures = {i: m.group(1) for i, m in enumerate(map(CAPTURE_RE.match, self.levels)) if m}
        self.literals = [(i, level) for i, level in enumerate(self.fixed) if level != "+" and i not in self.captures]
        self.filter = as_filter(self.levels)

    def match(self, parts: list[str]) -> dict[str, str] | None:
        """What the topic's levels capture, or None when the topic is not this rule's."""
        if len(parts) < len(self.fixed) or (not self.multi and len(parts) != len(self.fixed)):
            return None
        for i, level in self.literals:
            if parts[i] != level:
                return None
        captured = {}
        for i, name in self.captures.items():
            if not parts[i]:
                return None
            captured[name] = parts[i]
        return captured


class RulesDecoding:
    """Reads the message of a matched rule into what devices said (the device already resolved)."""

    def __init__(self, spec: ProfileSpec, *, max_payload: int, max_skew: timedelta = DEFAULT_MAX_SKEW) -> None:
        self.spec = spec
        self.rules = [CompiledRule(rule) for rule in spec.topics]
        self._by_length: dict[int, list[CompiledRule]] = {}
        self.max_payload = max_payload
        self.max_skew = max_skew

    def matches(self, topic: str) -> Iterator[Match]:
        """The rules whose pattern the topic matches, in order."""
        parts = topic.split("/")
        for rule in self._of_length(len(parts)):
            captured = rule.match(parts)
            if captured is not None:
                yield Match(rule, captured)

    def _of_length(self, levels: int) -> list[CompiledRule]:
        """The rules a topic of that many levels can match, in order (cached: a topic has at most 256 levels)."""
        rules = self._by_length.get(levels)
        if rules is None:
            rules = [r for r in self.rules if len(r.fixed) == levels or (r.multi and len(r.fixed) <= levels)]
            if levels <= 256:
                self._by_length[levels] = rules
        return rules

    @property
    def device_positions(self) -> set[int]:
        """The topic levels that name the device, in the rules that capture one."""
        return {i for rule in self.rules for i, name in rule.captures.items() if name == "device"}

    def match(self, topic: str) -> Match | None:
        """The first rule whose pattern the topic matches."""
        return next(self.matches(topic), None)

    def decode(self, found: Match, who: str, payload: bytes, *, received_at: datetime) -> list[Said] | None:
        """What the message says, by its rule's role; None when it fails the rule's conditions."""
        rule = found.rule.spec
        if rule.role == "ignore":
            return []
        if len(payload) > self.max_payload:
            raise PayloadInvalid("too_large", f"payload of {len(payload)} bytes is over the {self.max_payload}-byte "
                                              "limit")
        doc = self._read(payload, rule)
        if (rule.when or rule.has) and not self._when(doc, rule):
            return None
        if rule.role == "telemetry":
            said = self._telemetry(rule, found.captures, who, doc, received_at)
        elif rule.role == "status":
            said = [self._status(rule, found.captures, who, doc)]
        else:
            said = [self._response(rule, found.captures, who, doc)]
        if rule.answers and said:
            said.append(Said(said[0].device_id, response=CommandResponse(None, True, _result_of(said[0]), "")))
        return said

    def _read(self, payload: bytes, rule: TopicRule) -> Any:
        """The message as JSON, or as text (a plain value; a status that may also be a JSON object)."""
        if rule.format == "json":
            doc = decode_json(payload, max_bytes=self.max_payload)
            if rule.role != "telemetry" and holds_nul(doc):  # telemetry drops such strings itself
                raise PayloadInvalid("bad_sample", "a string holds a NUL character (\\u0000)")
            return doc
        text = payload.decode("utf-8", "replace").strip()
        if rule.field and text.startswith("{"):  # Zigbee2MQTT's availability: {"state": …} or the legacy text
            try:
                doc = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return text
            return doc if isinstance(doc, dict) and not holds_nul(doc) else text
        return text

    @staticmethod
    def _when(doc: Any, rule: TopicRule) -> bool:
        return (all(get_path(doc, path) == value for path, value in rule.when.items())
                and all(get_path(doc, path) is not _MISSING for path in rule.has))

    def _child(self, who: str, name: Any) -> tuple[str, tuple[str, str] | None]:
        if not isinstance(name, str) or not name or len(name) > 200 or not storable_text(name):
            raise PayloadInvalid("bad_child", "a child's name must be a non-empty string")
        return child_device_id(who, name), (who, name)

    def _speaker(self, rule: TopicRule, captures: dict[str, str], who: str, doc: Any) -> tuple[str, Any]:
        """The device a message is from: the device itself, or its gateway's child named by topic or field."""
        if "child" in captures:
            return self._child(who, captures["child"])
        if rule.child:
            return self._child(who, get_path(doc, rule.child))
        return who, None

    def _telemetry(self, rule: TopicRule, captures: dict[str, str], who: str, doc: Any,
                   received_at: datetime) -> list[Said]:
        prefix = render(rule.prefix, captures) if rule.prefix else ""
        if rule.format == "value":
            name = metric_name(prefix + render(rule.metric or "value", captures))
            if not doc:
                raise PayloadInvalid("bad_sample", "an empty value")
            device_id, child_of = self._speaker(rule, captures, who, doc)
            return [Said(device_id, samples=[Sample(ts=received_at, data={name: parse_value(doc)}, assigned=True)],
                         child_of=child_of)]
        if rule.children == "keys":
            if not isinstance(doc, dict):
                raise PayloadInvalid("bad_sample", "a gateway's telemetry must be an object of children")
            said = []
            for name, items in list(doc.items())[:MAX_SAMPLES]:
                device_id, child_of = self._child(who, name)
                said.append(Said(device_id, samples=self._samples(rule, items, prefix, received_at),
                                 child_of=child_of))
            return said
        device_id, child_of = self._speaker(rule, captures, who, doc)
        return [Said(device_id, samples=self._samples(rule, doc, prefix, received_at), child_of=child_of)]

    def _samples(self, rule: TopicRule, doc: Any, prefix: str, received_at: datetime) -> list[Sample]:
        items = doc if isinstance(doc, list) else [doc]
        samples = []
        for i, item in enumerate(items[:MAX_SAMPLES]):
            sample = self._sample(rule, item, prefix, received_at + timedelta(microseconds=i), received_at)
            if sample is not None:
                samples.append(sample)
        return samples

    def _sample(self, rule: TopicRule, item: Any, prefix: str, default_ts: datetime,
                received_at: datetime) -> Sample | None:
        if not isinstance(item, dict):
            raise PayloadInvalid("bad_sample", "a sample must be a JSON object")
        obj = get_path(item, rule.select)
        if obj is _MISSING:
            return None
        data = flatten(obj, prefix.rstrip(".")) if isinstance(obj, dict | list) else {}
        drop = set(rule.exclude)
        if rule.time is not None:
            relative = rule.time.field
            if rule.select and relative.startswith(rule.select + "."):
                relative = relative[len(rule.select) + 1:]
            drop.add(metric_name(prefix + relative))
        under = tuple(d + "." for d in drop)
        data = {k: v for k, v in data.items() if k not in drop and not k.startswith(under)}
        if not data:
            return None
        raw = get_path(item, rule.time.field) if rule.time is not None else _MISSING
        if rule.time is None or raw is _MISSING:
            return Sample(ts=default_ts, data=data, assigned=True)
        return Sample(ts=to_time(raw, rule.time, now=received_at, max_skew=self.max_skew), data=data)

    def _status(self, rule: TopicRule, captures: dict[str, str], who: str, doc: Any) -> Said:
        device_id, child_of = self._speaker(rule, captures, who, doc)
        if rule.state is not None:
            return Said(device_id, online=rule.state == "online", child_of=child_of)
        value = get_path(doc, rule.field) if rule.field and isinstance(doc, dict) else doc
        text = _text(value)
        if text in {_text(v) for v in rule.online}:
            return Said(device_id, online=True, child_of=child_of)
        if text in {_text(v) for v in rule.offline}:
            return Said(device_id, online=False, child_of=child_of)
        raise PayloadInvalid("bad_status", f"status {text[:40]!r} is neither online nor offline for this profile")

    def _response(self, rule: TopicRule, captures: dict[str, str], who: str, doc: Any) -> Said:
        device_id, child_of = self._speaker(rule, captures, who, doc)
        command_id = None
        if rule.match == "id":
            try:
                command_id = uuid.UUID(str(get_path(doc, rule.id)))
            except ValueError:
                raise PayloadInvalid("response_unknown", "the answer's id is not a command id") from None
        error = get_path(doc, rule.error) if rule.error else _MISSING
        result = get_path(doc, rule.result) if rule.result else doc
        if error is None or error is _MISSING:
            return Said(device_id, response=CommandResponse(command_id, True, None if result is _MISSING else result,
                                                            ""), child_of=child_of)
        message = error.get("message", error) if isinstance(error, dict) else error
        text = message if isinstance(message, str) else orjson.dumps(message).decode()
        return Said(device_id, response=CommandResponse(command_id, False, None, text[:MAX_ERROR_TEXT]),
                    child_of=child_of)

    def command_message(self, command: Outbound, *, gateway: str | None, child: str | None) -> CommandMessage:
        """The command in this profile's words: its topic and payload templates filled in."""
        spec = self.spec.command
        if spec is None:
            raise ValueError("this profile takes no commands")
        device = gateway or command.device_id
        fields: dict[str, Any] = {"device": device, "child": child or "", "name": command.name,
                                  "id": str(command.command_id), "params": command.params}
        fields["reply"] = render(self.spec.reply, fields)
        topic = PLACEHOLDER_RE.sub(lambda m: topic_level(render(m.group(0), fields)), spec.topic)
        if spec.format == "text":
            payload = render(spec.payload, fields).encode()
        else:
            payload = orjson.dumps(fill(spec.payload, fields))
        return CommandMessage(topic=topic, payload=payload)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value.strip()
    return orjson.dumps(value).decode() if value is not _MISSING else ""


def _result_of(said: Said) -> Any:
    if said.samples:
        return said.samples[-1].data
    return None if said.online is None else {"online": said.online}


def device_capture_ok(value: str) -> bool:
    """Whether a captured `{device}` level can be a device id."""
    return DEVICE_ID_RE.fullmatch(value) is not None
