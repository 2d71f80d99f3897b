"""The docs stand alone and stay true: every variable the code reads is in the README's table, every
link resolves, every `SPEC §N` the code cites is a section of docs/spec.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p for folder in ("iotgw", "devices", "bridge", "protocols") for p in (ROOT / folder).rglob("*.py")]
DOCS = [ROOT / "README.md", ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").glob("*.md"))]


def _readers() -> set[str]:
    """The functions of iotgw/env.py that read a variable: their first parameter is its `name`."""
    tree = ast.parse((ROOT / "iotgw" / "env.py").read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
            and node.args.args and node.args.args[0].arg == "name"}


READERS = _readers()


def variables_read() -> dict[str, str]:
    """Every environment variable read through iotgw.env, with one place that reads it."""
    found: dict[str, str] = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr in READERS and isinstance(node.func.value, ast.Name) and node.func.value.id == "env":
                assert node.args and isinstance(node.args[0], ast.Constant), f"{path}:{node.lineno}: name not literal"
                found.setdefault(node.args[0].value, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def readme_table() -> set[str]:
    """The variables named in the first column of the README's configuration table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}


def test_the_readme_lists_every_variable_the_code_reads():
    read, listed = variables_read(), readme_table()
    assert len(read) > 20, "the scan found the settings' variables"
    missing = {name: where for name, where in read.items() if name not in listed}
    assert not missing, f"read but not in the README's configuration table: {missing}"
    assert not listed - set(read), f"in the README's table but read nowhere: {listed - set(read)}"


def test_only_iotgw_env_reads_the_environment():
    for path in SOURCES:
        if path != ROOT / "iotgw" / "env.py":
            text = path.read_text()
            assert "os.environ[" not in text and "os.environ.get" not in text and "getenv(" not in text, path


def test_every_relative_link_in_the_docs_resolves():
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)} links to missing {target}"


def test_every_cited_spec_section_exists():
    spec = (ROOT / "docs" / "spec.md").read_text()
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", spec, flags=re.MULTILINE)}
    assert sections == set(range(1, len(sections) + 1)), "sections are numbered 1, 2, … without a gap"
    cited_in = [*SOURCES, *(ROOT / "tests").rglob("*.py"), *DOCS, *(ROOT / "devices" / "static").rglob("*.js")]
    for path in cited_in:
        for group in re.findall(r"SPEC ((?:§\d+(?:, )?)+)", path.read_text()):
            for number in re.findall(r"§(\d+)", group):
                assert int(number) in sections, f"{path.relative_to(ROOT)} cites SPEC §{number}"


def test_the_docs_name_no_file_the_repository_lacks():
    for doc in DOCS:
        text = doc.read_text()
        assert not re.search(r"\bSee (SPEC|STYLE)\b", text), f"{doc.name} points at a SPEC/STYLE file"
        assert "SPEC.md" not in text and "STYLE.md" not in text, doc.name
