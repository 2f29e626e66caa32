"""Containers, acceptance 6: never leak a mount, a process or a staged directory.

- SIGKILL of the CLI during a foreground `run` (plain and --rm), and of the monitor of a `run -d`: the container
  keeps running until the next dockyard command notices; after that command no overlay mount below the
  data-root remains (/proc/self/mountinfo), runc knows no container (`runc --root <exec-root>/runtime list`),
  no process of the container is alive; `fsck` is clean afterwards;
- failed creates/runs (nonexistent image, invalid bind spec, bad --user, a command missing from the image, a
  duplicate name, an unsupported network) leave no mount, process, staging dir (layerdb/tmp/*,
  containers/.tmp-*) or unowned layer dir;
- `run --rm` on success and on failure leaves nothing at all;
- a crash at every write boundary of `run --rm` (DOCKYARD_CRASH_AT): the next command leaves no mount/process,
  and `fsck --repair --yes` leaves a consistent data-root with no stray dir.

Every test has its own data-root and --exec-root under tmp.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import containerlib as cl
import peers
from conftest import _env, assert_clean_error, mounts_below

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A data-root with fx-edge:1 loaded (copied with cp -a for each test)."""
    peers.need("runc")
    root = tmp_path_factory.mktemp("leaks-tpl") / "root"
    root.mkdir()
    cl.Dy(root, tmp_path_factory.mktemp("leaks-tpl-x")).load_edge()
    return root


@pytest.fixture
def dy(template, tmp_path) -> cl.Dy:
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(template), str(root)], check=True)
    d = cl.Dy(root, tmp_path / "exec")
    yield d
    # never leave anything running behind us: kill what runc still knows in OUR exec-root, then unmount
    state = d.exec_root / "runtime"
    for c in cl.runc_list(d.exec_root) if state.is_dir() else []:
        subprocess.run(["runc", "--root", str(state), "kill", "--all", c["id"], "KILL"], capture_output=True)
        subprocess.run(["runc", "--root", str(state), "delete", "--force", c["id"]], capture_output=True)
    peers.unmount_below(root)


def _snapshot(root: Path) -> dict:
    return {"overlay": cl.overlay_dir_names(root), "links": cl.link_names(root),
            "mounts": set(os.listdir(cl.img_root(root) / "layerdb" / "mounts"))
            if (cl.img_root(root) / "layerdb" / "mounts").is_dir() else set(),
            "containers": set(os.listdir(root / "containers")) if (root / "containers").is_dir() else set()}


def _fsck_clean(dy: cl.Dy) -> None:
    p = dy("fsck", "--format", "json", check=False)
    assert p.returncode == 0, "fsck is not clean:\n" + cl.show(p)


def _container_layers_consistent(dy: cl.Dy, before: dict) -> None:
    """Every overlay dir / link / mount record that appeared belongs to a container that exists."""
    now = _snapshot(dy.root)
    cids = {c for c in now["containers"] if cl.HEX64.match(c)}
    assert now["mounts"] - before["mounts"] <= cids, "layerdb/mounts entries of no container: %s" % (
        now["mounts"] - before["mounts"] - cids)
    owned = set()
    for cid in cids:
        p = cl.container_layer_paths(dy.root, cid)
        owned |= {p["rw"].name, p["init"].name}
    stray = now["overlay"] - before["overlay"] - owned
    assert not stray, "overlay2 dirs that no container owns: %s" % stray


def _wait_line(p: subprocess.Popen, needle: bytes, timeout: float = 30) -> None:
    import select
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf:
        assert time.monotonic() < deadline, "no %r from the container (got %r)" % (needle, buf)
        r, _, _ = select.select([p.stdout], [], [], 0.2)
        if r:
            chunk = os.read(p.stdout.fileno(), 4096)
            assert chunk, "the CLI ended early: rc=%s stderr=%r" % (p.wait(), p.stderr.read())
            buf += chunk


# ------------------------------------------------------------------------------------------------ kill -9
@pytest.mark.parametrize("auto_remove", [False, True], ids=["run", "run-rm"])
def test_sigkill_of_the_cli_during_run(dy: cl.Dy, auto_remove: bool) -> None:
    before = _snapshot(dy.root)
    args = ["run", "--name", "victim", "--network", "none"] + (["--rm"] if auto_remove else []) + \
        [cl.EDGE_REF, "sh", "-c", "echo started; exec sleep 300"]
    p = dy.popen(*args, start_new_session=True)
    try:
        _wait_line(p, b"started")
        cid = next(c for c in os.listdir(dy.root / "containers") if cl.HEX64.match(c))
        assert mounts_below(dy.root), "the running container's rootfs should be mounted"
        procs = cl.container_processes(cid)
        os.kill(p.pid, signal.SIGKILL)          # only the CLI: what it started stays as a crash leaves it
        p.wait(timeout=10)
    finally:
        p.stdout.close()
        p.stderr.close()
    # the next command notices
    ps = dy("ps", "-a", "--no-trunc", "--format", "json")
    left = cl.leftovers(dy.root, dy.exec_root)
    assert not left, "after kill -9 of `run` and one `ps -a`: %s" % left
    alive = [x for x in procs if peers._pid_alive(x)] + cl.container_processes(cid)
    assert not alive, "processes of the container survive: %s" % alive
    rows = [json.loads(x) for x in ps.stdout.splitlines() if x.strip()]
    if auto_remove:
        assert not rows, "a --rm container whose CLI died must be removed once it is reaped: %s" % rows
        assert _snapshot(dy.root) == before, "run --rm left: %s" % {
            k: _snapshot(dy.root)[k] ^ before[k] for k in before}
    else:
        assert [(r["ID"], r["State"]) for r in rows] == [(cid, "exited")], rows
        st = dy.inspect(cid)["State"]
        assert st["Running"] is False and st["Pid"] == 0 and st["ExitCode"] == 137, st
        _container_layers_consistent(dy, before)
    _fsck_clean(dy)
    dy("rm", "-f", "victim", check=False)
    assert _snapshot(dy.root) == before
    assert not cl.leftovers(dy.root, dy.exec_root)


def test_sigkill_of_the_monitor_of_a_detached_container(dy: cl.Dy) -> None:
    before = _snapshot(dy.root)
    cid = dy("run", "-d", "--name", "detached", cl.EDGE_REF, "sh", "-c", "exec sleep 300").stdout.strip()
    mon = dy.exec_root / cid / "monitor"
    assert mon.is_file(), "no monitor record in the exec-root"
    mpid = int(mon.read_text().split()[0])
    assert peers._pid_alive(mpid)
    cpid = dy.inspect(cid)["State"]["Pid"]
    os.kill(mpid, signal.SIGKILL)
    assert cl.wait_for(lambda: not peers._pid_alive(mpid), 10)
    ps = dy("ps", "-a", "--format", "json")
    row = next(json.loads(x) for x in ps.stdout.splitlines() if x.strip())
    assert row["State"] == "exited", row
    assert not peers._pid_alive(cpid), "the container's process outlived its monitor and the next command"
    assert not cl.leftovers(dy.root, dy.exec_root), cl.leftovers(dy.root, dy.exec_root)
    _fsck_clean(dy)
    dy("rm", cid)
    assert _snapshot(dy.root) == before


def test_sigkill_of_start_attached(dy: cl.Dy) -> None:
    cid = dy("create", "--rm", cl.EDGE_REF, "sh", "-c", "echo started; exec sleep 300").stdout.strip()
    before_start = _snapshot(dy.root)
    p = dy.popen("start", "-a", cid, start_new_session=True)
    try:
        _wait_line(p, b"started")
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
    finally:
        p.stdout.close()
        p.stderr.close()
    dy("ps", "-a")
    assert not cl.leftovers(dy.root, dy.exec_root), cl.leftovers(dy.root, dy.exec_root)
    # created with --rm: reaping it removes it
    assert cid not in _snapshot(dy.root)["containers"]
    assert _snapshot(dy.root)["overlay"] < before_start["overlay"]
    _fsck_clean(dy)


# ------------------------------------------------------------------------------------------------ failures
FAILED_CREATES = {
    "nonexistent-image": ["no-such-image:1", "true"],
    "invalid-bind": ["-v", "/tmp:/mnt:rx", cl.EDGE_REF, "true"],
    "bad-user": ["-u", "no-such-user", cl.EDGE_REF, "true"],
    "bad-group": ["-u", "0:no-such-group", cl.EDGE_REF, "true"],
    "missing-command": [cl.EDGE_REF, "/no/such/command"],
    "command-not-in-path": [cl.EDGE_REF, "no-such-command-in-path"],
    "bad-network": ["--network", "no-such-network", cl.EDGE_REF, "true"],
    "missing-env-file": ["--env-file", "/no/such/env-file", cl.EDGE_REF, "true"],
    "workdir-is-a-file": ["-w", "/etc/passwd", cl.EDGE_REF, "true"],
}


@pytest.mark.parametrize("case", sorted(FAILED_CREATES))
@pytest.mark.parametrize("verb", ["run", "run-rm"])
def test_failed_create_or_start_leaves_nothing(dy: cl.Dy, case: str, verb: str) -> None:
    before = _snapshot(dy.root)
    args = ["run"] + (["--rm"] if verb == "run-rm" else []) + FAILED_CREATES[case]
    p = dy(*args, check=False)
    assert p.returncode != 0, "expected a failure: " + cl.show(p)
    assert "Traceback" not in p.stderr
    assert p.stderr.strip(), "a failure without a message: " + cl.show(p)
    # right after the failing command already: nothing mounted, nothing running, nothing staged
    left = cl.leftovers(dy.root, dy.exec_root)
    assert not left, "%s left: %s" % (case, left)
    dy("ps", "-a")
    assert not cl.leftovers(dy.root, dy.exec_root)
    if verb == "run-rm":
        assert _snapshot(dy.root) == before, "a failed `run --rm` left: %s" % {
            k: _snapshot(dy.root)[k] ^ before[k] for k in before if _snapshot(dy.root)[k] != before[k]}
    else:
        # docker keeps a container whose start failed (state created, an exit code and the error recorded)
        _container_layers_consistent(dy, before)
        for c in _snapshot(dy.root)["containers"] - before["containers"]:
            st = dy.inspect(c)["State"]
            assert st["Status"] == "created" and st["Running"] is False and st["Pid"] == 0, st
            assert st["ExitCode"] != 0 and st["Error"], "a failed start must be recorded (docker: ExitCode " \
                "127/126/128 and Error): %s" % st
    _fsck_clean(dy)


def test_failed_create_duplicate_name_leaves_nothing(dy: cl.Dy) -> None:
    dy("create", "--name", "taken", cl.EDGE_REF, "true")
    before = _snapshot(dy.root)
    for verb in (["create"], ["run"], ["run", "--rm"], ["run", "-d"]):
        p = dy(*verb, "--name", "taken", cl.EDGE_REF, "true", check=False)
        assert_clean_error(p, " ".join(verb))
        assert _snapshot(dy.root) == before
    assert not cl.leftovers(dy.root, dy.exec_root)
    _fsck_clean(dy)


@pytest.mark.parametrize("script,code", [("echo ok", 0), ("echo bad >&2; exit 3", 3)], ids=["success", "exit-3"])
def test_run_rm_leaves_nothing(dy: cl.Dy, script: str, code: int, tmp_path: Path) -> None:
    before = _snapshot(dy.root)
    host = tmp_path / "bind"
    host.mkdir()
    for extra in ([], ["-d"], ["-v", "%s:/mnt" % host, "-i"]):
        p = dy("run", "--rm", *extra, cl.EDGE_REF, "sh", "-c", script, check=False)
        if "-d" in extra:
            assert p.returncode == 0, cl.show(p)
            assert cl.wait_for(lambda: _snapshot(dy.root) == before, 20), \
                "a detached --rm container was not removed completely when it ended: %s" % {
                    k: _snapshot(dy.root)[k] ^ before[k] for k in before if _snapshot(dy.root)[k] != before[k]}
        elif p.returncode != code:
            # report the leak check too, but fail on the status
            pytest.fail("run --rm %s: rc %d, expected %d\n%s" % (extra, p.returncode, code, cl.show(p)))
        assert not mounts_below(dy.root)
        assert _snapshot(dy.root) == before, "run --rm %s left: %s" % (
            extra, {k: _snapshot(dy.root)[k] ^ before[k] for k in before if _snapshot(dy.root)[k] != before[k]})
        assert not cl.leftovers(dy.root, dy.exec_root), cl.leftovers(dy.root, dy.exec_root)
    _fsck_clean(dy)


# ------------------------------------------------------------------------------------------------ crash injection
def _boundaries(dy: cl.Dy, tmp_path: Path) -> list[str]:
    log = tmp_path / "boundaries.log"
    e = _env()
    e["DOCKYARD_CRASH_LOG"] = str(log)
    p = subprocess.run(dy.cmd("run", "--rm", cl.EDGE_REF, "true"), env=e, capture_output=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    return [line.split(" ", 1)[1] for line in log.read_text().splitlines()]


def test_crash_at_every_boundary_of_run_rm(dy: cl.Dy, tmp_path: Path) -> None:
    """Kill `run --rm` at each of its write boundaries.  The next command (`ps -a`) leaves no mount and no
    process; `fsck --repair --yes` then leaves a clean data-root without any stray dir; removing what is left
    returns the data-root to where it was before."""
    before = _snapshot(dy.root)
    names = _boundaries(dy, tmp_path)
    assert _snapshot(dy.root) == before
    assert len(names) >= 5, names
    problems = []
    for n in range(1, len(names) + 1):
        e = _env()
        e["DOCKYARD_CRASH_AT"] = str(n)
        p = subprocess.run(dy.cmd("run", "--rm", cl.EDGE_REF, "sh", "-c", "echo hi"), env=e, capture_output=True,
                           timeout=120, stdin=subprocess.DEVNULL, start_new_session=True)
        where = "crash at boundary %d (%s)" % (n, names[n - 1])
        if p.returncode != -signal.SIGKILL:
            problems.append("%s: the command did not die (rc %s)" % (where, p.returncode))
        dy("ps", "-a")
        for k, v in cl.leftovers(dy.root, dy.exec_root).items():
            if k in ("mounts below the data-root", "runc containers", "processes naming the exec-root"):
                problems.append("%s, after `ps -a`: %s %s" % (where, k, v))
        r = dy("fsck", "--repair", "--yes", check=False)
        if r.returncode != 0:
            problems.append("%s: fsck --repair --yes did not end clean:\n%s" % (where, r.stdout[-1500:]))
        left = cl.leftovers(dy.root, dy.exec_root)
        if left:
            problems.append("%s, after fsck --repair: %s" % (where, left))
        # a crash after the record was complete may leave a (stopped) container: removing it restores the root
        for c in sorted(_snapshot(dy.root)["containers"] - before["containers"]):
            if not cl.HEX64.match(c):
                continue          # staging leftovers are reported above
            rm = dy("rm", "-f", c, check=False)
            if rm.returncode != 0:
                problems.append("%s: rm of the left container failed: %s" % (where, rm.stderr.strip()))
        now = _snapshot(dy.root)
        if now != before:
            problems.append("%s: stray entries remain: %s" % (
                where, {k: sorted(now[k] ^ before[k]) for k in before if now[k] != before[k]}))
            # start the next round from a clean state anyway
            peers.unmount_below(dy.root)
    assert not problems, "\n".join(problems)
    _fsck_clean(dy)


# ------------------------------------------------------------------------------------------------ concurrency
def test_concurrent_commands_do_not_reap_a_starting_container(dy: cl.Dy) -> None:
    """`ps -a` (which reaps what dead monitors left) running while `run` starts a container must not take the
    starting container for a leftover: every run prints its output and exits with its code."""
    import threading

    stop = threading.Event()
    errors: list[str] = []

    def ps_loop() -> None:
        while not stop.is_set():
            p = subprocess.run(dy.cmd("ps", "-a"), env=_env(), capture_output=True, timeout=60,
                               stdin=subprocess.DEVNULL)
            if p.returncode != 0:
                errors.append(p.stderr.decode(errors="replace"))

    th = threading.Thread(target=ps_loop)
    th.start()
    bad = []
    try:
        for i in range(12):
            p = dy("run", "--rm", cl.EDGE_REF, "sh", "-c", "echo run-%d; exit 42" % i, check=False)
            if (p.returncode, p.stdout) != (42, "run-%d\n" % i):
                bad.append("run %d: rc %d, stdout %r, stderr %r" % (i, p.returncode, p.stdout, p.stderr.strip()))
    finally:
        stop.set()
        th.join(timeout=60)
    assert not bad, "runs disturbed by a concurrent `ps -a`:\n" + "\n".join(bad)
    assert not errors, errors[:3]
    assert not cl.leftovers(dy.root, dy.exec_root)
