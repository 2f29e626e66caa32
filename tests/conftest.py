"""Shared fixtures and helpers for dockyard's acceptance tests.

Every test drives the real CLI in a subprocess (`python -m dockyard --data-root ROOT ...`) and checks the
data-root it leaves behind against the oracle JSON recorded from a real dockerd 20.10
(``shared/fixtures/oracle``) and against the on-disk fact sheet (``shared/docs/docker-on-disk.md``).

Helpers that tests import directly (``from conftest import ...``): FIXTURES, run_dy, load_oracle,
require_peer, require_root, require_fixtures, missing, store_snapshot, diff_snapshots, assert_no_overlay_mounts,
assert_clean_error, read_text, chain_ids, layer_dirs, overlay_dirs, umount_below.

Preconditions (no silent skips).  Every test needs root and the fixture tree unless it is marked
``@pytest.mark.unit`` (module-wide: ``pytestmark = pytest.mark.unit``): a pure unit test that runs as any user
without fixtures.  A unit test may ask for one of them back with ``@pytest.mark.needs_root`` or
``@pytest.mark.needs_fixtures``.  A missing precondition skips the test, naming it; with DOCKYARD_REQUIRE_PEERS=1
(CI) it FAILS, naming it, and any other skip of any kind becomes a failure too (see pytest_runtest_makereport).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Mount points are read and undone in one place (peers.py) for every test module; so is the skip/fail rule.
from peers import (
    REQUIRE_PEERS,
    find_fixtures,
    fixture_candidates,
    fixtures_missing_reason,
    missing,
    mounts_below,
    unmount_below,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: the fixture tree; when it is missing, the first place looked (tests that need it fail/skip before using it)
FIXTURES = find_fixtures() or fixture_candidates()[0]
ORACLE_DIR = FIXTURES / "oracle"
PEERS = ("docker", "dockerd", "skopeo", "umoci", "tar-split", "runc", "docker-registry")
DEFAULT_TIMEOUT = 300

# where the repo's package lives (so the CLI runs from this checkout even without `pip install -e`)
_SRC = REPO / "src"


# ------------------------------------------------------------------------------------------- session hooks
def pytest_collection_modifyitems(config, items):
    """Run tests marked `slow` (the gzip bomb) after everything else."""
    fast = [i for i in items if i.get_closest_marker("slow") is None]
    slow = [i for i in items if i.get_closest_marker("slow") is not None]
    items[:] = fast + slow


def pytest_configure(config):
    config.addinivalue_line("markers", "unit: a pure unit test: needs neither root nor the fixture tree")
    config.addinivalue_line("markers", "needs_root: (in a unit module) this test needs root")
    config.addinivalue_line("markers", "needs_fixtures: (in a unit module) this test needs the fixture tree")


def require_root(what: str = "this test") -> None:
    """Skip (fail with DOCKYARD_REQUIRE_PEERS=1) unless running as root; the message names root."""
    if os.geteuid() != 0:
        missing("%s needs root (device nodes, trusted.* xattrs, chown, mounts); running as uid %d"
                % (what, os.geteuid()))


def require_fixtures() -> Path:
    """The fixture tree; skip (fail with DOCKYARD_REQUIRE_PEERS=1) naming where it was looked for."""
    found = find_fixtures()
    if found is None:
        missing(fixtures_missing_reason())
        raise AssertionError("unreachable")
    return found


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Check a test's preconditions before anything else (before skip marks and empty parameter sets, so the
    message names what is missing)."""
    unit = item.get_closest_marker("unit") is not None
    if not unit or item.get_closest_marker("needs_fixtures") is not None:
        require_fixtures()
    if not unit or item.get_closest_marker("needs_root") is not None:
        require_root()


class _ModuleWithoutPreconditions(pytest.Module):
    """A test module collected while root or the fixture tree is missing: when importing it fails (it reads a
    fixture at import time), it becomes one test that reports the missing precondition, so that the rest of the
    session (the unit tests) still runs instead of stopping at a collection error."""

    def collect(self):
        try:
            return super().collect()
        except Exception as e:  # CollectError, or what the module raised (FileNotFoundError of a fixture)
            return [_PreconditionPlaceholder.from_parent(self, name="<module %s>" % self.path.name,
                                                         error="%s: %s" % (type(e).__name__, e))]


class _PreconditionPlaceholder(pytest.Item):
    def __init__(self, *, error: str, **kw):
        super().__init__(**kw)
        self.error = error

    def runtest(self):  # reached only when the setup hook found nothing missing
        raise AssertionError("the module failed to import:\n%s" % self.error)

    def reportinfo(self):
        return self.path, None, self.name


def pytest_pycollect_makemodule(module_path, parent):
    if find_fixtures() is None or os.geteuid() != 0:
        return _ModuleWithoutPreconditions.from_parent(parent, path=module_path)
    return None


def _skip_reason(longrepr) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With DOCKYARD_REQUIRE_PEERS=1 no test is ever skipped: any skip (a mark, pytest.skip, an empty parameter
    set, importorskip) is reported as a failure that keeps the skip's reason."""
    outcome = yield
    rep = outcome.get_result()
    if REQUIRE_PEERS and rep.skipped and not hasattr(rep, "wasxfail"):
        rep.outcome = "failed"
        rep.longrepr = "skipped under DOCKYARD_REQUIRE_PEERS=1, which forbids skips: %s" % _skip_reason(rep.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module skipped at collection (allow_module_level=True) fails too with DOCKYARD_REQUIRE_PEERS=1."""
    outcome = yield
    rep = outcome.get_result()
    if REQUIRE_PEERS and rep.skipped:
        rep.outcome = "failed"
        rep.longrepr = "%s skipped under DOCKYARD_REQUIRE_PEERS=1, which forbids skips: %s" % (
            collector.nodeid, _skip_reason(rep.longrepr))


# ------------------------------------------------------------------------------------------- running the CLI
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DOCKYARD_DATA_ROOT", None)
    env["TZ"] = "UTC"  # docker's CLI prints local times; the oracle was recorded in UTC
    env["PYTHONPATH"] = str(_SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("LC_ALL", "C.UTF-8")
    env["COLUMNS"] = "1000"
    return env


def dy_cmd(*args: Any, root: os.PathLike | str) -> list[str]:
    return [sys.executable, "-m", "dockyard", "--data-root", str(root), *[str(a) for a in args]]


def run_dy(*args: Any, root: os.PathLike | str, input: bytes | str | None = None, stdin=None,
           check: bool = True, timeout: float = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess:
    """Run the dockyard CLI; return a CompletedProcess with *text* stdout/stderr.

    `input` may be bytes (e.g. a tar on stdin) or str; `stdin` may be an open file.  With check=True a non-zero
    exit fails the test and shows both streams.
    """
    cmd = dy_cmd(*args, root=root)
    data = input.encode() if isinstance(input, str) else input
    try:
        p = subprocess.run(cmd, input=data, stdin=None if data is not None else (stdin if stdin is not None
                           else subprocess.DEVNULL), capture_output=True, timeout=timeout, env=_env(), cwd="/")
    except subprocess.TimeoutExpired as e:
        pytest.fail("dockyard %s timed out after %ss\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(map(str, args)), timeout, _dec(e.stdout), _dec(e.stderr)))
    res = subprocess.CompletedProcess(cmd, p.returncode, _dec(p.stdout), _dec(p.stderr))
    if check and res.returncode != 0:
        pytest.fail("dockyard %s exited %d\n--- stdout:\n%s\n--- stderr:\n%s" % (
            " ".join(map(str, args)), res.returncode, res.stdout[-4000:], res.stderr[-4000:]), pytrace=False)
    return res


def show(p: subprocess.CompletedProcess) -> str:
    """A finished dockyard command, its output and exit status, for an assertion message."""
    args = p.args if isinstance(p.args, list) else [p.args]
    try:
        i = args.index("--data-root")
        cmd = " ".join(str(a) for a in args[i + 2:])
    except ValueError:
        cmd = " ".join(map(str, args))
    return "`dockyard %s` -> rc %s\n--- stdout:\n%s\n--- stderr:\n%s" % (cmd, p.returncode, str(p.stdout)[-3000:],
                                                                      str(p.stderr)[-3000:])


def _dec(b: bytes | str | None) -> str:
    if b is None:
        return ""
    if isinstance(b, str):
        return b
    return b.decode("utf-8", "replace")


def assert_clean_error(p: subprocess.CompletedProcess, what: str = "") -> str:
    """A failed command: non-zero exit, exactly one non-empty stderr line starting with 'Error: ', no traceback.
    Returns that line."""
    ctx = " (%s)" % what if what else ""
    assert p.returncode != 0, "expected a failure%s, got rc 0\nstdout:\n%s\nstderr:\n%s" % (ctx, p.stdout, p.stderr)
    assert "Traceback (most recent call last)" not in p.stderr + p.stdout, "Python traceback%s:\n%s" % (ctx, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, "stderr must hold exactly one non-empty line%s, got %d:\n%s" % (ctx, len(lines), p.stderr)
    assert lines[0].startswith("Error: "), "stderr line must start with 'Error: '%s: %r" % (ctx, lines[0])
    assert len(lines[0]) > len("Error: ") + 3, "empty error message%s: %r" % (ctx, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------- fixtures
def umount_below(root: os.PathLike | str) -> list[str]:
    """Lazily unmount every mount point at or below root (deepest first); returns what was unmounted."""
    return unmount_below(root)


def assert_no_overlay_mounts(root: os.PathLike | str) -> None:
    left = mounts_below(root)
    assert not left, "mounts left behind below %s: %s" % (root, left)


@pytest.fixture
def data_root(tmp_path):
    """A fresh, empty data-root for one test (mounts below it are lazily unmounted at teardown)."""
    root = tmp_path / "dataroot"
    root.mkdir()
    yield root
    umount_below(root)


@pytest.fixture
def dy(data_root):
    """dy(*args, root=None, input=None, check=True, timeout=...) -> CompletedProcess (text)."""
    def _dy(*args, root=None, input=None, stdin=None, check=True, timeout=DEFAULT_TIMEOUT):
        return run_dy(*args, root=root if root is not None else data_root, input=input, stdin=stdin,
                      check=check, timeout=timeout)
    return _dy


@functools.cache
def _load_oracle_text(name: str) -> str:
    p = ORACLE_DIR / (name if name.endswith(".json") else name + ".json")
    return p.read_text(encoding="utf-8")


def load_oracle(name: str) -> dict:
    """oracle/<name>.json (name = fixture file name, with or without .json); a fresh copy each call."""
    return json.loads(_load_oracle_text(name))


@pytest.fixture(scope="session")
def oracle():
    return load_oracle


def require_peer(name: str) -> str:
    """Path of a peer binary; skip when missing (fail instead with DOCKYARD_REQUIRE_PEERS=1)."""
    assert name in PEERS, "unknown peer %r" % name
    path = shutil.which(name)
    if path is None:
        for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
            cand = os.path.join(d, name)
            if os.access(cand, os.X_OK):
                path = cand
                break
    if path is None:
        missing("peer %r is not installed" % name)
    assert path is not None
    return path


# ------------------------------------------------------------------------------------------- store helpers
def read_text(p: os.PathLike | str) -> str | None:
    try:
        with open(p, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def chain_ids(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for i, d in enumerate(diff_ids):
        out.append(d if i == 0 else "sha256:" + hashlib.sha256((out[-1] + " " + d).encode()).hexdigest())
    return out


def img_root(root: os.PathLike | str) -> Path:
    return Path(root) / "image" / "overlay2"


def layer_dirs(root: os.PathLike | str) -> list[str]:
    """Names in layerdb/sha256 (all of them, valid or not)."""
    d = img_root(root) / "layerdb" / "sha256"
    return sorted(os.listdir(d)) if d.is_dir() else []


def overlay_dirs(root: os.PathLike | str) -> list[str]:
    d = Path(root) / "overlay2"
    return sorted(n for n in os.listdir(d) if n != "l") if d.is_dir() else []


def l_links(root: os.PathLike | str) -> list[str]:
    d = Path(root) / "overlay2" / "l"
    return sorted(os.listdir(d)) if d.is_dir() else []


def image_ids(root: os.PathLike | str) -> list[str]:
    d = img_root(root) / "imagedb" / "content" / "sha256"
    return sorted("sha256:" + n for n in os.listdir(d)) if d.is_dir() else []


def repositories(root: os.PathLike | str) -> dict:
    t = read_text(img_root(root) / "repositories.json")
    return json.loads(t) if t is not None else {"Repositories": {}}


def _sha256_file(p: str) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _xattrs(p: str) -> tuple:
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for n in sorted(names):
        try:
            out.append((n, os.getxattr(p, n, follow_symlinks=False).hex()))
        except OSError:
            out.append((n, None))
    return tuple(out)


def store_snapshot(root: os.PathLike | str) -> dict[str, tuple]:
    """path (relative, '.' = root) -> (type, mode, uid, gid, size, sha256|linktarget|rdev, xattrs) for EVERYTHING
    under root.  Directory sizes are not recorded (ext4 never shrinks a directory)."""
    rootb = os.fsencode(str(root))
    snap: dict[str, tuple] = {}
    stack = [b""]
    while stack:
        rel = stack.pop()
        full = os.path.join(rootb, rel) if rel else rootb
        st = os.lstat(full)
        m = st.st_mode
        key = os.fsdecode(rel) if rel else "."
        if stat.S_ISDIR(m):
            rec = ("dir", stat.S_IMODE(m), st.st_uid, st.st_gid, None, None)
            for n in os.listdir(full):
                stack.append(os.path.join(rel, n) if rel else n)
        elif stat.S_ISREG(m):
            rec = ("file", stat.S_IMODE(m), st.st_uid, st.st_gid, st.st_size, _sha256_file(os.fsdecode(full)))
        elif stat.S_ISLNK(m):
            rec = ("symlink", stat.S_IMODE(m), st.st_uid, st.st_gid, st.st_size, os.fsdecode(os.readlink(full)))
        elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
            rec = ("char" if stat.S_ISCHR(m) else "block", stat.S_IMODE(m), st.st_uid, st.st_gid, None,
                   (os.major(st.st_rdev), os.minor(st.st_rdev)))
        elif stat.S_ISFIFO(m):
            rec = ("fifo", stat.S_IMODE(m), st.st_uid, st.st_gid, None, None)
        else:
            rec = ("socket", stat.S_IMODE(m), st.st_uid, st.st_gid, None, None)
        snap[key] = (*rec, _xattrs(os.fsdecode(full)))
    return snap


def diff_snapshots(before: dict, after: dict, limit: int = 40) -> list[str]:
    """Readable list of differences between two store snapshots (empty = identical)."""
    out = []
    for p in sorted(set(before) | set(after)):
        if p not in after:
            out.append("removed: %s %s" % (p, before[p][:2]))
        elif p not in before:
            out.append("added:   %s %s" % (p, after[p][:2]))
        elif before[p] != after[p]:
            out.append("changed: %s %s -> %s" % (p, before[p], after[p]))
        if len(out) >= limit:
            out.append("...")
            break
    return out


def layerdb_tmp_leftovers(root: os.PathLike | str) -> list[str]:
    d = img_root(root) / "layerdb" / "tmp"
    return sorted(os.listdir(d)) if d.is_dir() else []
