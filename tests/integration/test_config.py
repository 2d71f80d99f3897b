"""A separate web or bridge process without its required variable refuses in one line naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testing.processes import ROOT, free_port, stack_env


def run(args: list[str], **env_overrides) -> subprocess.CompletedProcess:
    env = stack_env(database_url="sqlite:///" + str(ROOT / "var" / "config-test.sqlite3"),
                    redis_url=env_overrides.get("redis"), mqtt_url=env_overrides.get("mqtt"), run_id="cfg")
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "present", "missing"),
    [
        (["runworker", "mqtt-bridge"], {"redis": "redis://127.0.0.1:6379/0"}, "MQTT_URL"),
        (["runworker", "mqtt-bridge"], {"mqtt": "mqtt://127.0.0.1:1883"}, "REDIS_URL"),
    ],
)
def test_bridge_without_required_variable_refuses_naming_it(args, present, missing):
    result = run([sys.executable, "manage.py", *args], **present)
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and missing in lines[0], result.stderr


def test_web_without_redis_refuses_naming_it():
    daphne = str(Path(sys.executable).with_name("daphne"))
    result = run([daphne, "-p", str(free_port()), "iotgw.asgi:application"], mqtt="mqtt://127.0.0.1:1883")
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "REDIS_URL" in lines[0], result.stderr
