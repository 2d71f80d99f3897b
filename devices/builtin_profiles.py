"""The built-in device profiles as data (docs/profiles/<name>.md each), installed by migration and at bridge start.

Each is (kind, description, spec). The specs are in the rule language of docs/profiles.md and
follow the payloads of each firmware's public documentation.
"""

from __future__ import annotations

from typing import Any

TASMOTA: dict[str, Any] = {
    "topics": [
        {"topic": "tele/{device}/LWT", "role": "status", "format": "value",
         "online": ["Online"], "offline": ["Offline"]},
        # Tasmota's `Time` is the device's local time without an offset (SetOption52 1 adds one).
        {"topic": "tele/{device}/SENSOR", "role": "telemetry", "time": {"field": "Time", "unit": "iso"},
         "exclude": ["TempUnit", "PressureUnit", "SpeedUnit"]},
        {"topic": "tele/{device}/STATE", "role": "telemetry", "time": {"field": "Time", "unit": "iso"},
         "exclude": ["Uptime", "Wifi.SSId", "Wifi.BSSId", "Wifi.Mode", "Wifi.Downtime", "SleepMode"]},
        {"topic": "tele/{device}/#", "role": "ignore"},
        {"topic": "stat/{device}/RESULT", "role": "response", "match": "oldest"},
        {"topic": "stat/{device}/#", "role": "ignore"},
        {"topic": "cmnd/{device}/#", "role": "ignore"},
    ],
    # `cmnd/<topic>/Power` with `ON`: the command's name is Tasmota's command, params.value its argument.
    "command": {"topic": "cmnd/{device}/{name}", "payload": "{params.value}", "format": "text"},
    # Tasmota subscribes to its whole command tree and to the group topic (reading it is harmless).
    "grants": {"subscribe": ["cmnd/{device}/#", "cmnd/tasmotas/#"]},
    # Units Tasmota's docs fix (a sensor's temperature follows TempUnit, so it is left to discovery).
    "metrics": {
        "ENERGY.Power": {"unit": "W", "label": "Power"}, "ENERGY.ApparentPower": {"unit": "VA"},
        "ENERGY.ReactivePower": {"unit": "var"}, "ENERGY.Voltage": {"unit": "V", "label": "Voltage"},
        "ENERGY.Current": {"unit": "A", "label": "Current"}, "ENERGY.Total": {"unit": "kWh", "label": "Energy total"},
        "ENERGY.Today": {"unit": "kWh", "label": "Energy today"}, "ENERGY.Yesterday": {"unit": "kWh"},
        "UptimeSec": {"unit": "s", "label": "Uptime"}, "Heap": {"unit": "kB"},
        "Wifi.RSSI": {"unit": "%", "label": "Wi-Fi quality"}, "Wifi.Signal": {"unit": "dBm", "label": "Wi-Fi signal"},
    },
}

ZIGBEE2MQTT: dict[str, Any] = {
    # The gateway device's id is Zigbee2MQTT's base_topic; its Zigbee devices are its children by friendly name.
    "topics": [
        {"topic": "{device}/bridge/state", "role": "status", "format": "value", "field": "state"},
        {"topic": "{device}/bridge/#", "role": "ignore"},
        {"topic": "{device}/{child}/availability", "role": "status", "format": "value", "field": "state"},
        # A device's state after a /set is its answer: Zigbee2MQTT carries no command id.
        {"topic": "{device}/{child}", "role": "telemetry", "answers": True},
        {"topic": "{device}/{child}/#", "role": "ignore"},  # /set, /get: its own requests, echoed
    ],
    "command": {"topic": "{device}/{child}/set", "payload": "{params}"},
    # Its base topic is its own: it publishes and subscribes all over it (bridge/request/#, <device>/set, …).
    "grants": {"publish": ["{device}/#"], "subscribe": ["{device}/#"]},
}

SHELLY_GEN2: dict[str, Any] = {
    "topics": [
        {"topic": "{device}/online", "role": "status", "format": "value", "online": ["true"], "offline": ["false"]},
        {"topic": "{device}/events/rpc", "role": "telemetry", "when": {"method": "NotifyStatus"},
         "select": "params", "time": {"field": "params.ts", "unit": "s"}},
        {"topic": "{device}/events/rpc", "role": "telemetry", "when": {"method": "NotifyFullStatus"},
         "select": "params", "time": {"field": "params.ts", "unit": "s"}},
        {"topic": "{device}/events/rpc", "role": "ignore"},
        {"topic": "{device}/status/{component}", "role": "telemetry", "prefix": "{component}."},
        {"topic": "{device}/iotgw/rpc", "role": "response", "match": "id", "result": "result", "error": "error"},
        {"topic": "{device}/rpc", "role": "ignore"},
    ],
    # JSON-RPC 2.0 over MQTT: the answer goes to `<src>/rpc`, so src is a topic under the device's own prefix.
    "command": {"topic": "{device}/rpc",
                "payload": {"id": "{id}", "src": "{reply}", "method": "{name}", "params": "{params}"}},
    "reply": "{device}/iotgw",
    "grants": {"subscribe": ["{device}/#"]},
    # Units of Shelly's Gen2 API docs (Switch and PM1 components).
    "metrics": {
        "*.apower": {"unit": "W", "label": "Active power"}, "*.voltage": {"unit": "V", "label": "Voltage"},
        "*.current": {"unit": "A", "label": "Current"}, "*.aenergy.total": {"unit": "Wh", "label": "Energy total"},
        "*.temperature.tC": {"unit": "°C", "label": "Temperature"}, "*.temperature.tF": {"unit": "°F"},
        "*.freq": {"unit": "Hz"},
    },
}

ESPHOME: dict[str, Any] = {
    "topics": [
        {"topic": "{device}/status", "role": "status", "format": "value"},
        {"topic": "{device}/debug", "role": "ignore"},
        # ESPHome answers a command only with the entity's new state.
        {"topic": "{device}/{component}/{entity}/state", "role": "telemetry", "format": "value",
         "metric": "{component}.{entity}", "answers": True},
        {"topic": "{device}/{component}/{entity}/command", "role": "ignore"},
        {"topic": "{device}/#", "role": "ignore"},
    ],
    # The command's name is the component (`switch`), params.entity the object id, params.value the payload.
    "command": {"topic": "{device}/{name}/{params.entity}/command", "payload": "{params.value}", "format": "text"},
    # With `discovery: true` it announces its entities under its own node name (its id here), and listens
    # for Home Assistant's birth message; neither reaches another device's topics.
    "grants": {"publish": ["homeassistant/+/{device}/+/config"],
               "subscribe": ["{device}/#", "homeassistant/status"]},
}

GATEWAY_API: dict[str, Any] = {
    # ThingsBoard's gateway API: one connection speaks for every device behind it, named in the payloads.
    "topics": [
        {"topic": "v1/gateway/connect", "role": "status", "child": "device", "state": "online"},
        {"topic": "v1/gateway/disconnect", "role": "status", "child": "device", "state": "offline"},
        {"topic": "v1/gateway/telemetry", "role": "telemetry", "children": "keys", "select": "values",
         "time": {"field": "ts", "unit": "ms"}},
        {"topic": "v1/gateway/attributes", "role": "telemetry", "children": "keys"},
        {"topic": "v1/gateway/rpc", "role": "response", "has": ["id", "device"], "child": "device", "match": "id",
         "result": "data", "error": "data.error"},
        {"topic": "v1/gateway/#", "role": "ignore"},
        {"topic": "v1/devices/me/telemetry", "role": "telemetry", "has": ["values"], "select": "values",
         "time": {"field": "ts", "unit": "ms"}},
        {"topic": "v1/devices/me/telemetry", "role": "telemetry"},
        {"topic": "v1/devices/me/#", "role": "ignore"},
    ],
    "command": {"topic": "v1/gateway/rpc",
                "payload": {"device": "{child}", "data": {"id": "{id}", "method": "{name}", "params": "{params}"}}},
    "grants": {"publish": ["v1/gateway/#", "v1/devices/me/#"], "subscribe": ["v1/gateway/#", "v1/devices/me/#"]},
}

BUILTIN: dict[str, tuple[str, str, dict[str, Any]]] = {
    "iotgw": ("iotgw", "iotgw's own devices/{id}/… topics (SPEC §4): the default", {}),
    "tasmota": ("rules", "Tasmota: tele/<topic>/SENSOR, STATE and LWT; cmnd/<topic>/<Command>", TASMOTA),
    "zigbee2mqtt": ("rules", "Zigbee2MQTT: a coordinator (base_topic) speaking for its Zigbee devices", ZIGBEE2MQTT),
    "shelly-gen2": ("rules", "Shelly Gen2/Gen3 (Plus, Pro): JSON-RPC notifications and requests", SHELLY_GEN2),
    "esphome": ("rules", "ESPHome's MQTT component: <prefix>/<component>/<name>/state and command", ESPHOME),
    "gateway-api": ("rules", "ThingsBoard-style gateway API: v1/gateway/connect, telemetry, rpc", GATEWAY_API),
    "sparkplug": ("sparkplug", "Sparkplug B edge nodes (<group>.<edge node>) and their devices, as children", {}),
}
