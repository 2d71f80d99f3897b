"""The rule language of a declarative device profile (docs/profiles.md), as validated data: no code, no eval.

A spec is JSON. Pydantic checks its shape and these rules check its sense (topic patterns,
placeholders, time zones), so the model's clean(), the API and the bridge read it the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import PayloadInvalid

CAPTURE_RE = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]{0,31})\}$")
# A placeholder in a command template: `{name}`, `{params}`, `{params.value}` (a dotted path into the params).
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_:-]+)*)\}")
COMMAND_FIELDS = ("device", "child", "name", "id", "params", "reply")
MAX_RULES = 64
MAX_PATH = 8  # levels of a JSON path
Scalar = str | int | float | bool


class SpecInvalid(PayloadInvalid):
    """A profile spec that breaks the rule language; the message says where."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_profile", message)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _path(value: str | None) -> str | None:
    """A JSON path: dot-separated keys (`params.ts`, `switch:0.apower`); no wildcards, no expressions."""
    if value is None:
        return None
    keys = value.split(".")
    if not value or len(keys) > MAX_PATH or any(not k or len(k) > 64 for k in keys):
        raise ValueError(f"{value!r} is not a path: up to {MAX_PATH} dot-separated non-empty keys")
    return value


def pattern_levels(pattern: str) -> list[str]:
    """Check a topic pattern (`tele/{device}/SENSOR`, `+`, a trailing `#`) and return its levels."""
    if not pattern or len(pattern) > 256 or pattern.startswith("$") or "\x00" in pattern:
        raise ValueError(f"topic pattern {pattern[:80]!r} must be 1..256 characters and not start with $")
    levels = pattern.split("/")
    names: set[str] = set()
    for i, level in enumerate(levels):
        capture = CAPTURE_RE.match(level)
        if capture:
            if capture.group(1) in names:
                raise ValueError(f"topic pattern {pattern!r} captures {capture.group(1)!r} twice")
            names.add(capture.group(1))
        elif level == "#":
            if i != len(levels) - 1:
                raise ValueError(f"topic pattern {pattern!r}: # only as the last level")
        elif level != "+" and any(c in level for c in "+#{}"):
            raise ValueError(f"topic pattern {pattern!r}: level {level!r} mixes text with + # {{ }}")
    return levels


def template_fields(template: str) -> list[str]:
    """The placeholders of a template; a brace outside a placeholder is an error."""
    fields = PLACEHOLDER_RE.findall(template)
    if "{" in PLACEHOLDER_RE.sub("", template) or "}" in PLACEHOLDER_RE.sub("", template):
        raise ValueError(f"template {template[:80]!r}: a brace outside a {{placeholder}}")
    return fields


class TimeSpec(_Strict):
    """Which field of a sample is its time, in which unit, and the zone of a time written without an offset."""

    field: str
    unit: Literal["s", "ms", "iso"] = "iso"
    tz: str = "UTC"

    _field = field_validator("field")(lambda cls, v: _path(v))

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)") from None
        return value


class TopicRule(_Strict):
    """What one topic pattern's messages are, and how to read them."""

    topic: str
    role: Literal["telemetry", "status", "response", "ignore"]
    # json: an object (nested objects flattened to dotted names), value: a plain value (22.4, ON, true, text)
    format: Literal["json", "value"] = "json"
    # Conditions on a JSON message: path → value, and paths that must be present; a message that fails them
    # goes on to the next rule of the same topic (or is ignored when none is left).
    when: dict[str, Scalar] = Field(default_factory=dict, max_length=8)
    has: list[str] = Field(default_factory=list, max_length=8)
    select: str | None = None  # the object whose fields are the metrics (default: the whole message)
    metric: str | None = None  # name of a plain value's metric; a template of the topic's captures
    prefix: str | None = None  # template put before every metric name (`{component}.`)
    exclude: list[str] = Field(default_factory=list, max_length=64)  # metric names (after flattening) to drop
    time: TimeSpec | None = None
    children: Literal["keys"] | None = None  # keys: each top-level key is a child's name
    child: str | None = None  # path of the child's name in the message (gateway connect, RPC answers)
    answers: bool = False  # telemetry/status: it also answers the device's oldest sent command
    # status
    online: list[Scalar] = Field(default=["online"], max_length=16)
    offline: list[Scalar] = Field(default=["offline"], max_length=16)
    field: str | None = None  # status read from this field when the message is a JSON object
    state: Literal["online", "offline"] | None = None  # the topic itself says it (gateway connect/disconnect)
    # response
    match: Literal["id", "oldest"] = "oldest"
    id: str = "id"
    result: str | None = None  # the result (default: the whole answer)
    error: str | None = None  # present in an answer means failed; its text (or its `message`) is the error

    _paths = field_validator("select", "child", "field", "id", "result", "error")(lambda cls, v: _path(v))

    @field_validator("when", "has")
    @classmethod
    def _when(cls, value: Any) -> Any:
        for key in value:
            _path(key)
        return value

    @model_validator(mode="after")
    def _sense(self) -> TopicRule:
        levels = pattern_levels(self.topic)
        captures = {m.group(1) for m in map(CAPTURE_RE.match, levels) if m}
        for template in (self.metric, self.prefix):
            if template is not None:
                unknown = set(template_fields(template)) - captures
                if unknown:
                    raise ValueError(f"{self.topic}: {sorted(unknown)[0]!r} is not a capture of the topic")
        if self.role == "telemetry" and self.format == "value" and self.metric is None:
            raise ValueError(f"{self.topic}: a plain-value telemetry topic needs `metric`")
        if self.children and "child" in captures:
            raise ValueError(f"{self.topic}: children come from the keys or from the topic, not both")
        return self

    @property
    def levels(self) -> list[str]:
        """The topic pattern's levels."""
        return self.topic.split("/")


class CommandSpec(_Strict):
    """How a command is written: a topic template and a payload template (text, or JSON with placeholders)."""

    topic: str
    payload: Any = "{params}"
    format: Literal["json", "text"] = "json"

    @model_validator(mode="after")
    def _sense(self) -> CommandSpec:
        for field in template_fields(self.topic):
            if field not in ("device", "child", "name", "reply") and not field.startswith("params."):
                raise ValueError(f"command topic {self.topic!r}: {{{field}}} cannot be in a topic")
        pattern_levels(PLACEHOLDER_RE.sub("x", self.topic))
        for text in _strings(self.payload):
            for field in template_fields(text):
                if field.split(".")[0] not in COMMAND_FIELDS:
                    raise ValueError(f"command payload: unknown placeholder {{{field}}}")
        if self.format == "text" and not isinstance(self.payload, str):
            raise ValueError("a text command payload is a string template")
        return self


def _strings(value: Any, depth: int = 0) -> list[str]:
    """Every string in a JSON template (keys and values), bounded in depth."""
    if depth > MAX_PATH:
        raise ValueError("command payload nests too deep")
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k, depth + 1), *_strings(v, depth + 1))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v, depth + 1)]
    return []


class GrantSpec(_Strict):
    """Broker rights beyond those the topics and the command imply: topic filters, `{device}` the device's id."""

    publish: list[str] = Field(default_factory=list, max_length=16)
    subscribe: list[str] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _sense(self) -> GrantSpec:
        for template in (*self.publish, *self.subscribe):
            for field in template_fields(template):
                if field != "device":
                    raise ValueError(f"grant {template!r}: only {{device}} can be in a grant")
            pattern_levels(template.replace("{device}", "x"))
        return self


METRIC_PATTERN_RE = re.compile(r"^[A-Za-z0-9_.:*-]{1,64}$")


class MetricSpec(_Strict):
    """What a profile says of a metric its devices send: its unit and label (shown by the dashboard and the API)."""

    unit: str = Field(default="", max_length=32)
    label: str = Field(default="", max_length=200)


def metric_pattern(pattern: str) -> re.Pattern[str]:
    """A metric-name pattern (`ENERGY.Power`, `switch:*.apower`: `*` is any text within one dotted level)."""
    return re.compile("^" + r"[^.]*".join(re.escape(part) for part in pattern.split("*")) + "$")


class ProfileSpec(_Strict):
    """A declarative profile: its topics in order (the first matching rule wins), and its commands."""

    topics: list[TopicRule] = Field(min_length=1, max_length=MAX_RULES)
    command: CommandSpec | None = None
    # The reply level a command asks an answer on (`{reply}` in the command): under the device's own topics.
    reply: str = "{device}/iotgw"
    # A gateway's children: created on first sight, or only when pre-registered (the default).
    create_children: bool = False
    grants: GrantSpec | None = None
    # Units and labels of the metrics, by name or pattern; the first pattern that matches a name decides.
    metrics: dict[str, MetricSpec] = Field(default_factory=dict, max_length=64)

    @field_validator("metrics")
    @classmethod
    def _patterns(cls, value: dict[str, MetricSpec]) -> dict[str, MetricSpec]:
        for pattern in value:
            if not METRIC_PATTERN_RE.match(pattern):
                raise ValueError(f"metric pattern {pattern[:80]!r}: 1..64 of [A-Za-z0-9_.:-] and *")
        return value

    def metric_specs(self, names: Iterable[str]) -> dict[str, MetricSpec]:
        """The unit and label the spec declares for each of these metric names (absent: nothing declared)."""
        patterns = [(metric_pattern(p), m) for p, m in self.metrics.items()]
        out = {}
        for name in names:
            found = next((m for rx, m in patterns if rx.match(name)), None)
            if found is not None:
                out[name] = found
        return out


def parse_spec(doc: Any) -> ProfileSpec:
    """Validate a spec document; SpecInvalid names the first problem."""
    try:
        return ProfileSpec.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SpecInvalid(f"{where}: {first['msg']}" if where else first["msg"]) from None
