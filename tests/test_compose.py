"""compose.yaml stays in step with the code: the processes of SPEC §1 and the variables of §2."""

from __future__ import annotations

import yaml

from tests.support import ROOT


def load() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_runs_the_spec_processes():
    services = load()["services"]
    assert {"mosquitto", "redis", "postgres", "web", "bridge"} <= set(services)
    assert services["web"]["command"][0] == "daphne" and services["web"]["command"][-1] == "iotgw.asgi:application"
    assert services["bridge"]["command"][-2:] == ["runworker", "mqtt-bridge"]


def test_web_and_bridge_get_every_required_variable():
    services = load()["services"]
    for name in ("web", "bridge"):
        env = services[name]["environment"]
        assert {"DATABASE_URL", "REDIS_URL", "MQTT_URL"} <= set(env), name
        assert env["MQTT_URL"].startswith("mqtt://mosquitto:")


def test_broker_persists_and_queues_enough_for_a_restarting_bridge():
    conf = (ROOT / "compose" / "mosquitto.conf").read_text().split("\n")
    settings = dict(line.split(None, 1) for line in conf if line and not line.startswith("#") and " " in line)
    assert settings["persistence"] == "true"
    # A killed broker loses what changed since its last save: at most a second's worth.
    assert int(settings["autosave_interval"]) <= 1 and settings.get("autosave_on_changes", "false") == "false"
    assert int(settings["max_queued_messages"]) > 1000
