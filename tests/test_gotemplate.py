"""dockyard.gotemplate against Go's own text/template.

The case table (tests/gotemplate_cases.py) follows Go's exec/parse test tables and docker's
--format usage. gotemplate_expected.json holds what Go printed for each case (output, and the
error text when Go failed); test_matches_go_now re-runs the real Go text/template through
tests/gotemplate_oracle when Go is installed, so the stored facts cannot drift from Go.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from dockyard import gotemplate as gt
from gotemplate_cases import CASES

HERE = Path(__file__).parent
EXPECTED = HERE / "gotemplate_expected.json"
ORACLE = HERE / "gotemplate_oracle" / "main.go"


def _dy(tmpl: str, data: Any, missingkey: str) -> dict[str, str]:
    try:
        out = gt.parse(tmpl).execute(data, missingkey=missingkey or "default")
        return {"out": out, "err": ""}
    except gt.TemplateError as e:
        return {"out": e.partial, "err": e.message}


def _expected() -> list[dict[str, str]]:
    table = json.loads(EXPECTED.read_text())
    assert [c["t"] for c in table] == [c[0] for c in CASES], "regenerate gotemplate_expected.json"
    return [{"out": c["out"], "err": c["err"]} for c in table]


def run_go_oracle(tmp: Path) -> list[dict[str, str]]:
    go = shutil.which("go")
    if go is None:
        if os.environ.get("DOCKYARD_REQUIRE_PEERS") == "1":
            pytest.fail("go is not installed (DOCKYARD_REQUIRE_PEERS=1)")
        pytest.skip("go is not installed")
    env = dict(os.environ, GOCACHE=str(tmp / "gocache"), GOPATH=str(tmp / "gopath"), GO111MODULE="off")
    exe = tmp / "oracle"
    subprocess.run([go, "build", "-o", str(exe), str(ORACLE)], check=True, env=env, timeout=600)
    inp = json.dumps([{"t": t, "d": d, "missingkey": m} for t, d, m in CASES])
    res = subprocess.run([str(exe)], input=inp.encode(), capture_output=True, check=True, timeout=120)
    out: list[dict[str, str]] = json.loads(res.stdout)
    return out


@pytest.mark.parametrize("idx", range(len(CASES)), ids=[c[0][:40] for c in CASES])
def test_case_matches_go(idx: int) -> None:
    t, d, m = CASES[idx]
    assert _dy(t, d, m) == _expected()[idx]


def test_matches_go_now(tmp_path: Path) -> None:
    go = run_go_oracle(tmp_path)
    assert go == _expected(), "Go's text/template disagrees with gotemplate_expected.json"
    mism = [(c[0], g, _dy(*c)) for c, g in zip(CASES, go, strict=False) if _dy(*c) != g]
    assert not mism, mism[:5]


def test_table_covers_the_language() -> None:
    text = " ".join(c[0] for c in CASES)
    for word in ("range", "else if", "with", "and", "or", "not", "eq", "ne", "lt", "le", "gt",
                 "ge", "len", "index", "slice", "print", "printf", "println", "json", "join",
                 "split", "title", "lower", "upper", "pad", "truncate", "/*", "{{-", "-}}",
                 "break", "continue", "$", ":=", " = "):
        assert word in text, word
    assert len(CASES) >= 150
    assert sum(1 for e in _expected() if e["err"]) >= 40


def test_go_objects_and_typed_values() -> None:
    row = gt.GoObject(
        "*formatter.ContainerContext",
        fields={"ID": "abc"},
        methods={"Names": lambda: "web", "Label": lambda name: {"a": "1"}.get(name, "")},
    )
    assert gt.parse('{{.ID}} {{.Names}} {{.Label "a"}}|{{.Label "b"}}|').execute(row) == "abc web 1||"
    with pytest.raises(gt.TemplateError) as e:
        gt.parse("{{.Foo}}").execute(row)
    assert e.value.message == (
        'template: :1:2: executing "" at <.Foo>: can\'t evaluate field Foo in type '
        "*formatter.ContainerContext"
    )
    data = {"Cmd": gt.StrList(["sh", "-c"]), "Entrypoint": gt.NIL_SLICE, "Labels": gt.NIL_MAP}
    assert gt.parse('{{join .Cmd " "}} {{.Entrypoint}} {{.Labels}} {{json .Entrypoint}}').execute(
        data) == "sh -c [] map[] null"
    ordered = gt.OrderedMap([("b", 1), ("a", 2)])
    assert gt.parse("{{json .}} {{.}}").execute(ordered) == '{"b":1,"a":2} map[a:2 b:1]'


def test_header_functions() -> None:
    header = gt.string_map({"ID": "CONTAINER ID", "Names": "NAMES"})
    t = gt.parse("{{.ID}}\t{{upper .Names}}\t{{pad .ID 1 1}}\t{{.Nope}}|")
    assert t.execute(header, funcs=gt.HEADER_FUNCS) == "CONTAINER ID\tNAMES\t CONTAINER ID \t|"
