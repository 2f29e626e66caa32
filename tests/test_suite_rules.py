"""The suite's own rules, checked by running pytest on the suite (issue 19, item 1).

* With DOCKYARD_REQUIRE_PEERS=1 a missing fixture tree fails every test that needs it, naming it; run as a real
  unprivileged user (nobody) it fails every test that needs root, naming root; the pure unit tests (marked
  ``unit``) pass in both runs.
* With DOCKYARD_REQUIRE_PEERS=1 no test is ever skipped: any skip (pytest.skip, a skip mark, an empty parameter
  set) is reported as a failure.

The nested runs are judged from their JUnit XML report, not from their text output.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import REPO, require_root

pytestmark = pytest.mark.timeout(900)

#: unit modules plus modules that need root and fixtures, one of which reads a fixture at import time
SELECTION = ["tests/test_archive_unit.py", "tests/test_registry_client.py", "tests/test_fsck_corruption.py",
             "tests/test_load_oracle.py"]


def _results(xml: Path) -> dict[str, tuple[str, str]]:
    """test id -> (outcome: passed/failed/error/skipped, message) from a JUnit XML report."""
    out: dict[str, tuple[str, str]] = {}
    for tc in ET.parse(xml).getroot().iter("testcase"):
        tid = "%s::%s" % (tc.get("classname"), tc.get("name"))
        outcome, msg = "passed", ""
        for kind in ("failure", "error", "skipped"):
            el = tc.find(kind)
            if el is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                msg = (el.get("message") or "") + "\n" + (el.text or "")
                break
        if tid in out and out[tid][0] != "passed":  # a teardown error after a failure: keep the first
            continue
        out[tid] = (outcome, msg)
    return out


def _unit_ids(env: dict[str, str], back: str) -> tuple[set[str], set[str]]:
    """(all unit tests, unit tests that ask for the precondition `back` (a marker) back) of the selection."""
    def collect(marker: str) -> set[str]:
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "--co", "-p", "no:cacheprovider", "-m", marker,
                            *SELECTION], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        ids = set()
        for line in p.stdout.splitlines():
            if "::" in line:
                path, name = line.split("::", 1)
                ids.add("%s::%s" % (path[:-3].replace("/", "."), name))
        assert ids, p.stdout + p.stderr
        return ids
    return collect("unit"), collect("unit and %s" % back)


def _env(**kw: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(REPO / "src")
    env["DOCKYARD_REQUIRE_PEERS"] = "1"
    env.update(kw)
    return env


def _short(items: list) -> str:
    return "\n".join("%s: %s %s" % (t, r[0] if r else None, (r[1] if r else "")[:300]) for t, r in items[:5])


def _judge(res: dict[str, tuple[str, str]], units: set[str], unit_root: set[str], needle: str, rc: int) -> None:
    assert rc != 0, "the run must fail"
    assert res, "empty report"
    skipped = [t for t, (o, _) in res.items() if o == "skipped"]
    assert not skipped, "skipped under DOCKYARD_REQUIRE_PEERS=1: %s" % skipped[:5]
    plain_units = units - unit_root
    bad_units = {t: res.get(t) for t in plain_units if (res.get(t) or ("missing",))[0] != "passed"}
    assert not bad_units, "unit tests that did not pass:\n%s" % _short(list(bad_units.items()))
    others = {t: r for t, r in res.items() if t not in plain_units}
    assert others, "no test needing the precondition was run"
    wrong = {t: r for t, r in others.items() if r[0] not in ("failed", "error") or needle not in r[1]}
    assert not wrong, "tests that did not fail naming %r:\n%s" % (needle, _short(list(wrong.items())))
    assert any("<module test_fsck_corruption.py>" in t for t in others) or any(
        t.startswith("tests.test_fsck_corruption") for t in others), sorted(others)[:5]


def test_missing_fixtures_fail_naming_them_and_unit_tests_still_pass(tmp_path: Path) -> None:
    require_root("the nested run (it compares with the unprivileged one)")
    env = _env(DOCKYARD_FIXTURES="/nonexistent")
    units, unit_fix = _unit_ids(env, "needs_fixtures")
    xml = tmp_path / "junit.xml"
    bt = tempfile.mkdtemp(prefix="dyt-", dir="/tmp")  # short: hostile archives hold absolute paths below it
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml", str(xml),
                            "--basetemp", bt + "/t", *SELECTION], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=800)
    finally:
        shutil.rmtree(bt, ignore_errors=True)
    # as root, the root-needing unit tests pass too; everything that failed must name the fixture tree
    _judge(_results(xml), units, unit_fix, "fixture tree not found", p.returncode)


def _hidden_ancestor(path: Path) -> Path | None:
    """The first ancestor of `path` that others cannot traverse (e.g. /root, 0700)."""
    for a in reversed(path.parents):
        if a != Path("/") and not os.stat(a).st_mode & 0o001:
            return a
    return None


def test_unprivileged_user_fails_naming_root_and_unit_tests_still_pass() -> None:
    """The same run as the real unprivileged user `nobody` (uid 65534, no capabilities). When the interpreter
    lives below a directory others cannot enter (pyenv in /root), a private mount namespace shows that one
    directory to nobody (a tmpfs over the hidden ancestor, the interpreter's tree bound back in)."""
    require_root("switching to the user nobody")
    for tool in ("runuser", "unshare", "mount"):
        assert shutil.which(tool), "%s is needed (util-linux)" % tool
    work = Path(tempfile.mkdtemp(prefix="dyn-", dir="/tmp"))
    try:
        os.chmod(work, 0o755)
        (work / "bt").mkdir()
        os.chown(work / "bt", 65534, 65534)
        xml = work / "bt" / "junit.xml"
        env = _env()
        units, unit_root = _unit_ids(env, "needs_root")
        script = ["set -e"]
        for keep in {Path(sys.prefix).resolve(), Path(sys.executable).resolve().parent, REPO}:
            hidden = _hidden_ancestor(keep)
            if hidden is None:
                continue
            top = hidden / keep.relative_to(hidden).parts[0]
            hold = work / ("hold%d" % len(script))
            script += ["mkdir -p %s" % hold, "mount --bind %s %s" % (top, hold),
                       "mountpoint -q %s || mount -t tmpfs -o mode=755 dy-tests %s" % (hidden, hidden),
                       "mkdir -p %s" % top, "mount --bind %s %s" % (hold, top)]
        script.append('exec runuser -u nobody -- "$@"')
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script), "sh",
               "env", *["%s=%s" % kv for kv in env.items() if kv[0] in (
                   "PYTHONPATH", "DOCKYARD_REQUIRE_PEERS", "DOCKYARD_FIXTURES", "PATH", "LC_ALL", "LANG")],
               "HOME=%s" % (work / "bt"), sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "--junitxml", str(xml), "--basetemp", str(work / "bt" / "t"), *SELECTION]
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=800)
        assert xml.exists(), "the nested run as nobody produced no report:\n%s\n%s" % (p.stdout[-3000:],
                                                                                        p.stderr[-3000:])
        _judge(_results(xml), units, unit_root, "needs root", p.returncode)
        assert "running as uid 65534" in xml.read_text()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_any_skip_is_a_failure_under_require_peers(tmp_path: Path) -> None:
    """pytest.skip, a skip mark and an empty parameter set, in a unit test and in a module that fails to import
    without fixtures: none of them may end as "skipped"."""
    for f in ("conftest.py", "peers.py"):
        shutil.copy(REPO / "tests" / f, tmp_path / f)
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n"
        "pytestmark = pytest.mark.unit\n"
        "def test_calls_skip():\n    pytest.skip('no widget')\n"
        "@pytest.mark.skip(reason='marked away')\ndef test_marked():\n    pass\n"
        "@pytest.mark.parametrize('x', [])\ndef test_empty(x):\n    pass\n"
        "def test_passes():\n    pass\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = _env(DOCKYARD_FIXTURES=str(REPO.parent / "no-such-fixtures"))
    xml = tmp_path / "junit.xml"
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                        "--junitxml", str(xml), "test_skips.py"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    res = {t.rsplit("::", 1)[1]: r for t, r in _results(xml).items()}
    assert p.returncode != 0, p.stdout
    assert res["test_passes"][0] == "passed", res
    for name, why in (("test_calls_skip", "no widget"), ("test_marked", "marked away"), ("test_empty[x0]", "")):
        key = next((k for k in res if k.startswith(name.split("[")[0])), None)
        assert key is not None, res
        assert res[key][0] in ("failed", "error") and "forbids skips" in res[key][1] and why in res[key][1], (key, res[key])
    env.pop("DOCKYARD_REQUIRE_PEERS")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                        "test_skips.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "3 skipped" in p.stdout, p.stdout  # without it, skips stay skips
