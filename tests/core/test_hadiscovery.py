"""Home Assistant discovery, read alone: documented firmware configs in, entities, claims and generated rules out;
the config parser and the value_template translator fuzzed (only their documented refusals ever come out)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.errors import PayloadInvalid
from core.hadiscovery import (
    Entity,
    Removed,
    claim,
    discovered_device_id,
    discovery_filters,
    expand,
    generated_spec,
    metric_of_generated,
    parse_config,
)
from core.hatemplate import MAX_TEMPLATE, Extract, TemplateRefused, translate
from core.profiles import Directory, Member, ProfileDef
from core.profilespec import parse_spec
from core.router import ProfileRouter
from devices.builtin_profiles import BUILTIN

PREFIX = "homeassistant"
# Tasmota's own discovery (SetOption19 1, xdrv_12_home_assistant.ino): one entity per sensor field, no node id.
TASMOTA_TEMPERATURE = (
    "homeassistant/sensor/35EBF6_AM2301_Temperature/config",
    {"name": "Tasmota AM2301 Temperature", "stat_t": "tele/tasmota_35EBF6/SENSOR", "avty_t": "tele/tasmota_35EBF6/LWT",
     "pl_avail": "Online", "pl_not_avail": "Offline", "uniq_id": "35EBF6_AM2301_Temperature",
     "dev": {"ids": ["35EBF6"]}, "unit_of_meas": "°C", "dev_cla": "temperature", "frc_upd": True,
     "val_tpl": "{{value_json['AM2301'].Temperature}}"})
# ESPHome's (mqtt: discovery: true): <prefix>/<component>/<node name>/<object id>/config.
ESPHOME_TEMPERATURE = (
    "homeassistant/sensor/livingroom/temperature/config",
    {"dev_cla": "temperature", "unit_of_meas": "°C", "stat_cla": "measurement", "name": "Temperature",
     "stat_t": "livingroom/sensor/temperature/state", "avty_t": "livingroom/status", "uniq_id": "ESPsensortemperature",
     "dev": {"ids": "246f28aabbcc", "name": "livingroom", "sw": "esphome v2024.2.0", "mdl": "esp32dev",
             "mf": "espressif"}})
# Zigbee2MQTT's: the node id is the Zigbee device's IEEE address, the state its JSON on <base>/<friendly name>.
Z2M_TEMPERATURE = (
    "homeassistant/sensor/0x00158d0001a2b3c4/temperature/config",
    {"availability": [{"topic": "zigbee2mqtt/bridge/state", "value_template": "{{ value_json.state }}"}],
     "device": {"identifiers": ["zigbee2mqtt_0x00158d0001a2b3c4"], "manufacturer": "Aqara", "model": "WSDCGQ11LM",
                "name": "lamp"},
     "device_class": "temperature", "name": "Temperature", "state_class": "measurement",
     "state_topic": "zigbee2mqtt/lamp", "unique_id": "0x00158d0001a2b3c4_temperature_zigbee2mqtt",
     "unit_of_measurement": "°C", "value_template": "{{ value_json.temperature }}"})


def parsed(config: tuple[str, dict]) -> Entity:
    entity = parse_config(PREFIX, config[0], orjson.dumps(config[1]))
    assert isinstance(entity, Entity)
    return entity


def builtins(members: dict[str, Member]) -> ProfileRouter:
    r = ProfileRouter()
    r.update([ProfileDef(n, k, s) for n, (k, _, s) in BUILTIN.items()], Directory.of(members))
    return r


def test_a_tasmota_config_is_read_with_its_abbreviations():
    entity = parsed(TASMOTA_TEMPERATURE)
    assert (entity.key, entity.node_id, entity.object_id) == ("sensor/35EBF6_AM2301_Temperature", None,
                                                              "35EBF6_AM2301_Temperature")
    assert (entity.state_topic, entity.unit, entity.device_class) == ("tele/tasmota_35EBF6/SENSOR", "°C", "temperature")
    assert entity.extract == Extract(path=("AM2301", "Temperature"))
    assert [(a.topic, a.online, a.offline) for a in entity.availability] == [("tele/tasmota_35EBF6/LWT", "Online",
                                                                                 "Offline")]
    assert entity.label == "Tasmota AM2301 Temperature" and entity.device.identifiers == ("35EBF6",)


def test_an_esphome_config_has_a_node_id_and_one_identifier_as_text():
    entity = parsed(ESPHOME_TEMPERATURE)
    assert (entity.node_id, entity.object_id, entity.extract) == ("livingroom", "temperature", Extract())
    assert entity.device.identifiers == ("246f28aabbcc",) and entity.device.model == "esp32dev"


def test_the_base_topic_replaces_a_tilde_at_either_end():
    doc = expand({"~": "home/kitchen", "stat_t": "~/state", "cmd_t": "set/~", "avty": [{"t": "~/avail"}],
                  "name": "~ stays in a name"})
    assert (doc["state_topic"], doc["command_topic"]) == ("home/kitchen/state", "set/home/kitchen")
    assert doc["availability"] == [{"topic": "home/kitchen/avail"}] and doc["name"] == "~ stays in a name"


def test_an_empty_retained_config_removes_the_entity():
    assert parse_config(PREFIX, "homeassistant/switch/dev/relay/config", b"") == Removed("switch/dev/relay", "switch",
                                                                                         "dev", "relay")


@pytest.mark.parametrize("topic, payload", [
    ("homeassistant/sensor/a/b/c/config", b"{}"),  # too many levels
    ("homeassistant/sensor/x y/config", b"{}"),  # not a level Home Assistant allows
    ("homeassistant/sensor/x/config", b"[1]"),
    ("homeassistant/sensor/x/config", b'{"stat_t": "tele/+/SENSOR"}'),  # a wildcard cannot be a state topic
    ("homeassistant/sensor/x/config", b'{"unit_of_meas": "' + b"x" * 40 + b'"}'),
    ("homeassistant/device/x/config", b'{"cmps": {}}'),  # device-based discovery
    ("homeassistant/sensor/x/config", b"not json"),
    ("homeassistant/sensor/x/config", b'{"name": "' + b"x" * 20_000 + b'"}'),  # over MAX_CONFIG
])
def test_a_config_iotgw_cannot_read_is_refused_with_a_reason(topic, payload):
    with pytest.raises(PayloadInvalid) as refused:
        parse_config(PREFIX, topic, payload)
    assert refused.value.reason in ("bad_discovery", "not_json", "too_large") and str(refused.value)


@pytest.mark.parametrize("template, extract", [
    ("{{ value }}", Extract()),
    ("{{value_json.POWER}}", Extract(path=("POWER",))),
    ("{{value_json['AM2301'].Temperature}}", Extract(path=("AM2301", "Temperature"))),
    ("{{ value_json['ENERGY']['TotalStartTime'] }}", Extract(path=("ENERGY", "TotalStartTime"))),
    ("{{ value_json.by_minute[0] }}", Extract(path=("by_minute", "0"))),
    ("{{ value_json.temperature | float | round(1) }}", Extract(path=("temperature",), cast="float", round=1)),
    ("{{ value | int }}", Extract(cast="int")),
    ("{{ value_json.x | float(0) }}", Extract(path=("x",), cast="float", default=0)),
    ("{{ value_json.battery | default(100) }}", Extract(path=("battery",), default=100)),
    ("{% if value_json.action is defined %}{{ value_json.action }}{% endif %}", Extract(path=("action",))),
    ("{{ value_json.a if value_json.a is defined else 'none' }}", Extract(path=("a",), default="none")),
    ("{{ value_json.__class__ }}", Extract(path=("__class__",))),  # a key of the message, looked up, not run
    ("{{ value_json" + ".a" * 9 + " }}", None),
])
def test_the_common_templates_become_paths(template, extract):
    if extract is None:  # more keys than a path of the rule language holds
        with pytest.raises(TemplateRefused):
            translate(template)
    else:
        assert translate(template) == extract


@pytest.mark.parametrize("template", [
    "{{ value.split(';')[0] }}", "{{ 1 + 1 }}", "{{ value_json }}", "{{ states('sensor.x') }}", "x {{ value }}",
    "{{ value_json.a | replace('a', 'b') }}", "{% for x in value_json %}{{ x }}{% endfor %}",
    "{% if value_json.a is defined %}{{ value_json.b }}{% endif %}",
    "{{ value_json.a | round(99) }}", "{{ " + ".a" * 20 + " }}",
])
def test_other_templates_are_refused_not_evaluated(template):
    with pytest.raises(TemplateRefused) as refused:
        translate(template)
    assert refused.value.reason == "template_refused" and "is not one iotgw reads" in str(refused.value)


def test_a_refused_template_leaves_the_entity_readable_with_its_reason():
    topic, doc = TASMOTA_TEMPERATURE
    entity = parsed((topic, {**doc, "val_tpl": "{{ value_json.a * 10 }}"}))
    assert entity.extract is None and "not understood" in (entity.refused or "") and entity.unit == "°C"


def test_a_built_in_profile_claims_the_state_topic_of_its_device():
    r = builtins({"tasmota_35EBF6": Member("tasmota"), "livingroom": Member("esphome"), "zigbee2mqtt":
                  Member("zigbee2mqtt")})
    found = claim(parsed(TASMOTA_TEMPERATURE), r.active(), r.directory)
    assert found is not None and (found.profile, found.device_id, found.metric) == ("tasmota", "tasmota_35EBF6",
                                                                                    "AM2301.Temperature")
    found = claim(parsed(ESPHOME_TEMPERATURE), r.active(), r.directory)
    assert found is not None and (found.device_id, found.metric) == ("livingroom", "sensor.temperature")
    found = claim(parsed(Z2M_TEMPERATURE), r.active(), r.directory)
    assert found is not None and (found.device_id, found.metric) == ("zigbee2mqtt.lamp", "temperature")


def test_a_topic_of_a_device_on_no_profile_is_not_claimed():
    r = builtins({"someone_else": Member("tasmota")})
    assert claim(parsed(TASMOTA_TEMPERATURE), r.active(), r.directory) is None


def test_a_generated_profile_reads_the_entities_topics_and_passes_validation():
    humidity = parsed((TASMOTA_TEMPERATURE[0].replace("Temperature", "Humidity"),
                       {**TASMOTA_TEMPERATURE[1], "val_tpl": "{{value_json['AM2301'].Humidity}}", "unit_of_meas": "%"}))
    spec = generated_spec([parsed(TASMOTA_TEMPERATURE), humidity, parsed(ESPHOME_TEMPERATURE)])
    parse_spec(spec)
    r = ProfileRouter()
    r.update([ProfileDef("ha-x", "rules", spec)], Directory.of({"x": Member("ha-x")}))
    from datetime import UTC, datetime

    [sample] = r("tele/tasmota_35EBF6/SENSOR", b'{"AM2301":{"Temperature":24.6,"Humidity":58.2}}',
                 received_at=datetime.now(UTC))[0].samples
    assert sample.data == {"AM2301.Temperature": 24.6, "AM2301.Humidity": 58.2}
    assert r("livingroom/sensor/temperature/state", b"22.4", received_at=datetime.now(UTC))[0].samples[0].data == {
        "temperature": 22.4}
    assert r("tele/tasmota_35EBF6/LWT", b"Offline", received_at=datetime.now(UTC))[0].online is False
    assert metric_of_generated(humidity) == "AM2301.Humidity"
    found = claim(humidity, r.active(), r.directory)
    assert found is not None and found.metric == "AM2301.Humidity"


def test_a_discovered_device_is_named_by_its_node_id_else_its_identifier():
    assert discovered_device_id(parsed(ESPHOME_TEMPERATURE)) == "livingroom"
    assert discovered_device_id(parsed(TASMOTA_TEMPERATURE)) == "35EBF6"


def test_the_filters_bring_configs_with_and_without_a_node_id():
    assert discovery_filters("ha") == ["ha/+/+/config", "ha/+/+/+/config"]


def test_a_profile_declares_units_by_metric_pattern():
    spec = parse_spec(BUILTIN["shelly-gen2"][2])
    declared = spec.metric_specs(["switch:0.apower", "switch:0.output", "pm1:0.voltage"])
    assert {k: v.unit for k, v in declared.items()} == {"switch:0.apower": "W", "pm1:0.voltage": "V"}
    with pytest.raises(PayloadInvalid):
        parse_spec({"topics": [{"topic": "a/{device}", "role": "telemetry"}], "metrics": {"a b": {"unit": "W"}}})


# --- fuzzed ---------------------------------------------------------------------------------

_TEMPLATE_PARTS = st.sampled_from(["{{", "}}", "{%", "%}", "value", "value_json", ".", "[", "]", "'a'", '"b"', "0",
                                   "|", "float", "int", "round", "(", ")", "1", "default", "if", "is", "defined",
                                   "else", "endif", " ", "x", "-", "+", "*", "'", "\\", "\x00", "é"])


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=600), st.lists(_TEMPLATE_PARTS, max_size=40).map("".join)))
@example("{{" * 300)
@example("{{ value_json" + "['a']" * 200 + " }}")
def test_the_translator_only_ever_refuses(template):
    try:
        extract = translate(template)
    except TemplateRefused as exc:
        assert str(exc)
        return
    assert len(template) <= MAX_TEMPLATE
    assert extract.path is None or 1 <= len(extract.path) <= 8


_SCALARS = (st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False)
            | st.text(max_size=20))
_JSON = st.recursive(_SCALARS,
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=4), max_leaves=12)
_KEYS = st.sampled_from(["~", "stat_t", "state_topic", "val_tpl", "unit_of_meas", "avty_t", "avty", "dev", "ids",
                         "cmd_t", "name", "uniq_id", "dev_cla", "pl_avail", "t", "cmps", "x"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _JSON | st.text(max_size=40), max_size=10),
       st.sampled_from(["homeassistant/sensor/a/config", "homeassistant/sensor/n/o/config", "homeassistant/x/config",
                        "other/sensor/a/config"]))
@example({"~": "a/b", "stat_t": "~/c", "avty": [{"t": "~"}, 3]}, "homeassistant/sensor/a/config")
def test_the_config_parser_only_ever_refuses(doc, topic):
    try:
        found = parse_config(PREFIX, topic, orjson.dumps(doc))
    except PayloadInvalid as exc:
        assert exc.reason in ("bad_discovery", "not_json", "too_large")
        return
    if isinstance(found, Entity) and found.state_topic is not None:
        assert (found.extract is None) == (found.refused is not None)
