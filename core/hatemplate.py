"""Home Assistant `value_template`s read, never evaluated: the common forms become a path into the message.

Tasmota, ESPHome and Zigbee2MQTT announce templates such as `{{ value_json['AM2301'].Temperature }}`,
`{{ value_json.temperature | float | round(1) }}` or `{{ value }}`. This module tokenizes a template
of that small subset and returns what it reads (`Extract`); anything else (an expression, a call,
a filter outside the list, text around it) is refused with `TemplateRefused`, whose message says why.
The template is bounded (`MAX_TEMPLATE`), so parsing is linear in a short input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from core.errors import PayloadInvalid
from core.profilespec import MAX_PATH

MAX_TEMPLATE = 512
Scalar = str | int | float | bool | None

# One token of the subset: names, strings, numbers, the punctuation of accessors, filters and guards.
_TOKEN = re.compile(r"""\s*(?:(?P<open>\{\{|\{%)|(?P<close>\}\}|%\})|(?P<name>[A-Za-z_][A-Za-z0-9_]*)
                        |(?P<str>'[^'\\]{0,128}'|"[^"\\]{0,128}")|(?P<num>-?\d{1,18}(?:\.\d{1,18})?)
                        |(?P<punct>[.\[\]|(),]))""", re.VERBOSE)
_KEY = re.compile(r"^[^\x00]{1,64}$")


class TemplateRefused(PayloadInvalid):
    """A value_template outside the subset iotgw reads; the message says what was not understood."""

    def __init__(self, message: str) -> None:
        super().__init__("template_refused", message)


@dataclass(frozen=True, slots=True)
class Extract:
    """What a template reads: the plain payload (`path` None) or a path into its JSON, and how it is cast."""

    path: tuple[str, ...] | None = None
    cast: Literal["float", "int"] | None = None
    round: int | None = None
    default: Scalar = None

    @property
    def dotted(self) -> str | None:
        """The path as the rule language writes it (`AM2301.Temperature`), or None for the plain payload."""
        return None if self.path is None else ".".join(self.path)


Token = tuple[str, str]


def tokenize(template: str) -> list[Token]:
    """The template's tokens (kind, text); TemplateRefused at the first character outside the subset."""
    if len(template) > MAX_TEMPLATE:
        raise TemplateRefused(f"template is over {MAX_TEMPLATE} characters")
    tokens: list[Token] = []
    at = 0
    rest = template.rstrip()
    while at < len(rest):
        found = _TOKEN.match(rest, at)
        if found is None or found.end() == at:
            raise TemplateRefused(f"not understood at {rest[at:at + 20]!r}")
        kind = found.lastgroup or ""
        tokens.append((kind, found.group(kind)))
        at = found.end()
    return tokens


class _Reader:
    """A cursor over the tokens: the grammar below takes them one by one."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.at = 0

    def peek(self, offset: int = 0) -> Token:
        i = self.at + offset
        return self.tokens[i] if i < len(self.tokens) else ("end", "")

    def take(self, kind: str, text: str | None = None) -> str:
        got = self.peek()
        if got[0] != kind or (text is not None and got[1] != text):
            raise TemplateRefused(f"expected {text or kind}, found {got[1][:20] or 'the end'!r}")
        self.at += 1
        return got[1]

    def next_is(self, kind: str, text: str | None = None) -> bool:
        got = self.peek()
        return got[0] == kind and (text is None or got[1] == text)


def translate(template: str) -> Extract:
    """The template as an Extract; TemplateRefused (reason `template_refused`) when it is outside the subset."""
    try:
        return _translate(template)
    except TemplateRefused as exc:
        raise TemplateRefused(f"value_template {template[:60]!r} is not one iotgw reads: {exc}") from None


def _translate(template: str) -> Extract:
    reader = _Reader(tokenize(template))
    if reader.next_is("open", "{%"):
        extract = _guarded(reader)
    else:
        reader.take("open", "{{")
        extract = _expression(reader)
        reader.take("close", "}}")
    if not reader.next_is("end"):
        raise TemplateRefused(f"text after the expression: {reader.peek()[1][:20]!r}")
    return extract


def _guarded(reader: _Reader) -> Extract:
    """`{% if value_json.a is defined %}{{ value_json.a … }}{% endif %}`: a missing field is skipped anyway."""
    reader.take("open", "{%")
    reader.take("name", "if")
    guard = _source(reader)
    _defined(reader)
    reader.take("close", "%}")
    reader.take("open", "{{")
    extract = _expression(reader)
    reader.take("close", "}}")
    reader.take("open", "{%")
    reader.take("name", "endif")
    reader.take("close", "%}")
    if guard != extract.path:
        raise TemplateRefused("the `is defined` guard tests another field than the one read")
    return extract


def _defined(reader: _Reader) -> None:
    reader.take("name", "is")
    reader.take("name", "defined")


def _expression(reader: _Reader) -> Extract:
    """source (| filter)* [if <source> is defined else literal]"""
    path = _source(reader)
    cast: Literal["float", "int"] | None = None
    digits: int | None = None
    default: Scalar = None
    while reader.next_is("punct", "|"):
        reader.take("punct", "|")
        name = reader.take("name")
        if name in ("float", "int"):
            cast = "float" if name == "float" else "int"
            if reader.next_is("punct", "("):  # `float(0)`: its fallback, the same as a missing value here
                reader.take("punct", "(")
                default = _literal(reader) if not reader.next_is("punct", ")") else None
                reader.take("punct", ")")
        elif name == "round":
            reader.take("punct", "(")
            digits = int(_number(reader)) if not reader.next_is("punct", ")") else 0
            reader.take("punct", ")")
            if not 0 <= digits <= 12:
                raise TemplateRefused("round() takes 0..12 digits")
        elif name in ("default", "d"):
            reader.take("punct", "(")
            default = _literal(reader)
            reader.take("punct", ")")
        elif name in ("string", "trim"):
            continue  # the stored value is the payload's own text already
        else:
            raise TemplateRefused(f"filter {name!r} is not one iotgw reads (float, int, round, default)")
    if reader.next_is("name", "if"):
        reader.take("name", "if")
        if _source(reader) != path:
            raise TemplateRefused("the `is defined` guard tests another field than the one read")
        _defined(reader)
        reader.take("name", "else")
        default = _literal(reader)
    return Extract(path=path, cast=cast, round=digits, default=default)


def _source(reader: _Reader) -> tuple[str, ...] | None:
    """`value` (the payload: None) or `value_json` with `.key`, `['key']` and `[0]` accessors."""
    name = reader.take("name")
    if name == "value":
        return None
    if name != "value_json":
        raise TemplateRefused(f"{name!r}: a template may read only value or value_json")
    keys: list[str] = []
    while reader.next_is("punct", ".") or reader.next_is("punct", "["):
        if reader.take("punct") == ".":
            keys.append(reader.take("name"))
        else:
            kind, text = reader.peek()
            if kind == "str":
                keys.append(reader.take("str")[1:-1])
            elif kind == "num" and text.isdigit():
                keys.append(reader.take("num"))
            else:
                raise TemplateRefused(f"an index must be a quoted key or a number, not {text[:20]!r}")
            reader.take("punct", "]")
        if len(keys) > MAX_PATH:
            raise TemplateRefused(f"a path of more than {MAX_PATH} keys")
    if not keys:
        raise TemplateRefused("value_json as a whole is not one value")
    for key in keys:
        if not _KEY.match(key):
            raise TemplateRefused(f"key {key[:20]!r} cannot be part of a metric name")
    return tuple(keys)


def _number(reader: _Reader) -> str:
    return reader.take("num")


def _literal(reader: _Reader) -> Scalar:
    kind, text = reader.peek()
    if kind == "num":
        reader.take("num")
        return float(text) if "." in text else int(text)
    if kind == "str":
        reader.take("str")
        return text[1:-1]
    if kind == "name" and text in ("none", "None", "true", "True", "false", "False"):
        reader.take("name")
        return None if text.lower() == "none" else text.lower() == "true"
    raise TemplateRefused(f"default must be a number, a quoted text, true, false or none, not {text[:20]!r}")
