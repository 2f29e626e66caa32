"""The package graph is a stack: no cycles, no upward imports, no module too long.

A pure unit test: it parses every module of ``src/dockyard`` with :mod:`ast` (imports at any
depth, so a function-level lazy import counts as much as a top-level one) and checks the rules
of docs/architecture.md. It needs no root, no fixtures and no peer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # needs neither root nor the fixture tree


SRC = Path(__file__).resolve().parents[1] / "src" / "dockyard"

# The stack, top to bottom. Packages on one line may not import each other. A package that does
# not exist yet is listed so that whoever creates it finds its floor here.
LAYERS: list[set[str]] = [
    {"__main__"},
    {"cli"},
    {"client"},
    {"migrate", "build"},
    {"engine"},
    {"view"},
    {"destinations", "sources"},
    {"containers"},
    {"network"},
    {"drivers"},
    {"store"},
    {"registry", "archive", "image"},
]
# Every top-level module (digest.py, gojson.py, errors.py, ...) is a utility on the floor below
# all packages. Utilities may import each other (errors is their ground), but without a cycle.
UTILITY = len(LAYERS)

# Modules allowed over MAX_LINES, each with its reason.
MAX_LINES = 800
LONG_MODULES: dict[str, str] = {
    "gotemplate.py": "Go's text/template with the fmt printing it needs, one module as issue 18 asks",
}

# The only module that mounts (libc mount(2), or the mount binary).
MOUNTER = "drivers/overlay2.py"


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(SRC.rglob("*.py")):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _imports(mod: str, path: Path) -> list[tuple[str, int]]:
    """Every ``dockyard.*`` module that ``mod`` imports, with its line, at any nesting depth."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from dockyard import errors`` / ``from dockyard.store import layers`` name modules
            found.append((target, node.lineno))
            found += [(f"{target}.{a.name}", node.lineno) for a in node.names]
    mods = _modules()
    return [(t, line) for t, line in found if t in mods and t != mod]


def _unit(mod: str) -> str:
    """The package (``store``) or top-level module (``digest``) that ``dockyard.x.y`` belongs to."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _is_package(unit: str) -> bool:
    return (SRC / unit).is_dir()


def _floor(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    if not _is_package(unit):
        return UTILITY
    raise AssertionError(
        f"dockyard.{unit} is a package that tests/test_layering.py does not know: "
        f"add it to LAYERS on its floor (see docs/architecture.md)"
    )


def _edges() -> list[tuple[str, str, str, int]]:
    """(importing unit, imported unit, importing module, line) between different units."""
    out: set[tuple[str, str, str, int]] = set()
    for mod, path in _modules().items():
        if mod == "dockyard":
            continue
        for target, line in _imports(mod, path):
            if target == "dockyard":
                continue
            a, b = _unit(mod), _unit(target)
            if a != b:
                out.add((a, b, mod, line))
    return sorted(out)


def layering_violations() -> list[str]:
    problems = []
    for a, b, mod, line in _edges():
        fa, fb = _floor(a), _floor(b)
        where = f"{mod} (line {line}) imports dockyard.{b}"
        if fa > fb:
            problems.append(f"upward import: {where}, a floor above dockyard.{a}")
        elif fa == fb and fa != UTILITY:
            problems.append(f"import on one floor: {where}; dockyard.{a} and dockyard.{b} share a floor")
    return problems


def cycles() -> list[list[str]]:
    """Strongly connected components (more than one unit) of the unit graph (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b, _, _ in _edges():
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_package_has_a_floor() -> None:
    for unit in sorted({_unit(m) for m in _modules() if m != "dockyard"}):
        _floor(unit)  # raises with "add it to LAYERS" for an unknown package


def test_no_cycles_between_packages() -> None:
    found = cycles()
    assert not found, "import cycles between packages: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_upward_or_sideways_imports() -> None:
    problems = layering_violations()
    assert not problems, "\n".join(problems)


def test_archive_knows_nothing_of_the_store() -> None:
    bad = [f"{mod} line {line}" for a, b, mod, line in _edges() if a == "archive" and b == "store"]
    assert not bad, f"dockyard.archive imports dockyard.store: {bad}"


def test_modules_are_short() -> None:
    long = []
    for path in _modules().values():
        rel = path.relative_to(SRC).as_posix()
        n = len(path.read_text().splitlines())
        if n > MAX_LINES and rel not in LONG_MODULES:
            long.append(f"{rel}: {n} lines")
    assert not long, f"modules over {MAX_LINES} lines (split them, or list them with a reason): {long}"


def _mount_calls(path: Path) -> list[int]:
    """Lines that call mount(2) (through libc or ctypes) or run the ``mount`` binary."""
    tree = ast.parse(path.read_text(), str(path))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if name in ("mount", "fsmount", "move_mount"):
                lines.append(node.lineno)
                continue
            # subprocess.run(["mount", ...]) and friends
            for arg in node.args:
                if isinstance(arg, ast.List | ast.Tuple) and arg.elts:
                    first = arg.elts[0]
                    if isinstance(first, ast.Constant) and first.value in ("mount", "/bin/mount", "/usr/bin/mount"):
                        lines.append(node.lineno)
    return lines


def test_only_overlay2_mounts() -> None:
    assert _mount_calls(SRC / MOUNTER), f"{MOUNTER} no longer mounts: the mount check is looking at nothing"
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel != MOUNTER:
            bad += [f"{rel}:{line}" for line in _mount_calls(path)]
    assert not bad, f"only {MOUNTER} may mount; found mount calls at {bad}"
