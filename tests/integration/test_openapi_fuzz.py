"""Schemathesis over /api/openapi.json against a live Daphne: no input yields a 5xx or an answer the schema
does not describe, for a staff and a non-staff token. Bounded: a few hundred requests per token."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devices.services.commands import command_issue

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

EXAMPLES = 40  # per operation and phase: the whole run takes well under a minute here
CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"


# Values the generator would rarely reach by itself, mixed in like a fuzzer's dictionary: NUL (PostgreSQL
# refuses it), a trailing newline (`$` matches before one), a digit int() refuses, ISO times that overflow in UTC.
HOSTILE_IDS = ["x\u0000y", "abc\n"]
HOSTILE_TIMES = ["\u00b2", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1767225600000", "-1"]


def config(path: Path, *, device_ids: list[str], command_ids: list[str]) -> Path:
    """A schemathesis.toml that mixes real ids and hostile values into the generated parameters."""
    times = json.dumps(HOSTILE_TIMES)
    path.write_text(
        f"[dictionaries.devices]\nvalues = {json.dumps(device_ids + HOSTILE_IDS)}\n"
        f"[dictionaries.commands]\nvalues = {json.dumps(command_ids + HOSTILE_IDS)}\n"
        f"[dictionaries.times]\nvalues = {times}\n"
        "[parameters]\n"
        '"path.device_id" = { dictionary = "devices", probability = 0.5 }\n'
        '"path.command_id" = { dictionary = "commands", probability = 0.5 }\n'
        + "".join(f'"query.{name}" = {{ dictionary = "times", probability = 0.3 }}\n'
                  for name in ("since", "until", "after"))
    )
    return path


def fuzz(web: str, token: str, config_file: Path, workdir: Path) -> subprocess.CompletedProcess:
    schemathesis = str(Path(sys.executable).with_name("schemathesis"))
    return subprocess.run(
        [schemathesis, "--no-color", "--config-file", str(config_file), "run", f"{web}/api/openapi.json",
         "--checks", CHECKS, "--max-examples", str(EXAMPLES), "--workers", "1", "--request-timeout", "10",
         "--generation-database", "none", "--phases", "examples,coverage,fuzzing",
         "--header", f"Authorization: Bearer {token}"],
        cwd=workdir, capture_output=True, text=True, timeout=300,
    )


def test_the_api_holds_to_its_schema_under_generated_input(stack, registry, tmp_path):
    user, staff = registry.user("owner"), registry.user("ops", staff=True)
    mine, _ = registry.device("mine", owner=user)
    theirs, _ = registry.device("theirs", owner=registry.user("other"))
    command = command_issue(user=user, device_id=mine, name="reboot")
    config_file = config(tmp_path / "schemathesis.toml", device_ids=[mine, theirs], command_ids=[str(command.id)])
    web_log = stack.processes.dir / "web-0.log"
    seen = web_log.stat().st_size if web_log.exists() else 0  # the log of an earlier run of this test
    # Generated channels may be tested (POST …/test sends at once): only to this machine, and briefly.
    stack.env.update(IOTGW_NOTIFY_HOSTS="127.0.0.1,localhost", IOTGW_NOTIFY_TIMEOUT="2")
    stack.start_web()

    for who, token in (("staff", registry.token(staff)), ("user", registry.token(user))):
        run = fuzz(stack.web, token, config_file, tmp_path)
        (stack.processes.dir / f"schemathesis-{who}.log").write_text(run.stdout + run.stderr)
        assert run.returncode == 0, f"{who}: {run.stdout[-6000:]}{run.stderr[-2000:]}"
    log = web_log.read_bytes()[seen:].decode(errors="replace")
    assert "Traceback" not in log, log[-4000:]  # nothing failed inside the server either

