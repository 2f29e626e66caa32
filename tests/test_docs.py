"""The docs stand alone and the command reference matches the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_commands_reference_is_current() -> None:
    from dockyard.cli.reference import REGEN, render

    with open(os.path.join(REPO, "docs", "commands.md"), encoding="utf-8") as f:
        committed = f.read()
    assert committed == render(), f"docs/commands.md is stale; regenerate it with:\n    {REGEN}"


def test_commands_reference_runs_as_a_module() -> None:
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"))
    out = subprocess.run(
        [sys.executable, "-m", "dockyard.cli.reference"], env=env, capture_output=True, text=True, check=True
    ).stdout
    for verb in ("load", "run", "commit", "demo", "fsck"):
        assert f"## `dockyard {verb}`" in out


def _doc_files() -> list[str]:
    files = [os.path.join(REPO, "README.md")]
    for base, _dirs, names in os.walk(os.path.join(REPO, "docs")):
        files += [os.path.join(base, n) for n in names]
    return files


def test_docs_do_not_send_the_reader_outside_the_repository() -> None:
    bad = re.compile(r"\.\./shared|shared/docs|shared/fixtures")
    hits = []
    for path in _doc_files():
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if bad.search(line):
                    hits.append(f"{os.path.relpath(path, REPO)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_readme_lists_every_docs_page() -> None:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    for name in sorted(os.listdir(os.path.join(REPO, "docs"))):
        if name.endswith(".md"):
            assert f"docs/{name}" in readme, f"README's Documentation section does not list docs/{name}"


def test_troubleshooting_messages_exist_in_the_code() -> None:
    """Every message quoted in docs/troubleshooting.md (lines `Error: ...`) is found in src/."""
    with open(os.path.join(REPO, "docs", "troubleshooting.md"), encoding="utf-8") as f:
        text = f.read()
    quoted = re.findall(r"^    Error: (.+)$", text, re.M)
    assert len(quoted) >= 6
    src = ""
    for base, _dirs, names in os.walk(os.path.join(REPO, "src", "dockyard")):
        for n in names:
            if n.endswith(".py"):
                with open(os.path.join(base, n), encoding="utf-8") as f:
                    src += f.read()
    for msg in quoted:
        # every fixed part of the message (between <placeholders>) must be in the code
        parts = [p.strip(" :;,") for p in re.split(r"<[^>]*>", msg)]
        parts = [p for p in parts if len(p) >= 6]
        assert parts, msg
        for part in parts:
            assert part in src, f"troubleshooting quotes a message the code lacks: {msg!r} ({part!r})"
