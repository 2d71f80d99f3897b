"""The floor plan's rules that import-linter cannot say: the hot path reads no settings, configuration comes in.

(The layers themselves are import-linter's contracts in pyproject.toml, run by `make lint`.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Long-lived objects on the hot path: their configuration is passed to their constructors (iotgw/config.py).
CONFIGURED = [
    "devices/pipeline.py", "devices/pusher.py", "devices/dispatch.py", "devices/presence.py", "devices/stats.py",
    "devices/notify.py", "devices/services/telemetry.py", "devices/services/commands.py", "bridge/transport.py",
    "bridge/runtime.py", "protocols/consumers.py", "protocols/hub.py",
]


def imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


@pytest.mark.parametrize("module", CONFIGURED)
def test_the_hot_path_reads_no_settings(module):
    assert not {m for m in imported(ROOT / module) if m.startswith("django.conf")}, f"{module} reads settings"


def test_core_imports_nothing_of_django_or_of_ours():
    ours = ("devices", "api", "protocols", "bridge", "sim", "iotgw", "testing", "django", "channels")
    for path in (ROOT / "core").glob("*.py"):
        bad = {m for m in imported(path) if m.split(".")[0] in ours}
        assert not bad, f"{path.name} imports {sorted(bad)}"
