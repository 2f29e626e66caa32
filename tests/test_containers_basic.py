"""Containers, acceptance 1 and the command surface (no docker daemon needed; runc is).

`dockyard run --rm --network none fx-edge:1 ...` prints the output and exits with the container's code;
-d + logs + ps -a + stop + rm; bind mounts (rw and ro); -e/--env-file/-w/-u/--entrypoint/--hostname/
--read-only/-i; signals forwarded by a foreground run; wait/kill/stop exit codes; logs --tail / -f; inspect;
rm -f; name conflicts; rmi refusing an image a container uses; what create/start/rm leave on disk (compared
with the fact sheet and the Docker-written dataroot fixture); cp both ways; mount/umount; export (compared
with the oracle's `docker export` listing of a fresh fx-edge:1 container, init-layer files included).

Expected values come from the oracles (fx-edge.docker.tar.json, dataroot-docker20.json), from the Docker-written
data-root fixture and from the image's own files, never from dockyard.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import select
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

import containerlib as cl
import peers
from conftest import assert_clean_error, mounts_below

pytestmark = [pytest.mark.timeout(300)]

FIXTURE_WRITER = "fd87baca1d0d83eb181d2bb0b86c8f73d19e95d22229e48573f1a9816f28f17a"   # fx-writer in the fixture
FIXTURE_CREATED = "b21d6dc391395f5403ec309e5be9897377b6f3eb1be695f6b9c5c8fb70e7ee13"  # fx-created


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def env(tmp_path_factory) -> cl.Dy:
    peers.need("runc")
    base = tmp_path_factory.mktemp("ctr-basic")
    dy = cl.Dy(base / "root", base / "exec")
    (base / "root").mkdir()
    dy.load_edge()
    yield dy
    # after the module's last test, whichever ran last and whichever ran at all (random order, -k): the data-root
    # is consistent, no container of this module still runs, nothing leaked and nothing stays mounted
    p = dy("fsck", check=False)
    leaks = cl.leftovers(dy.root, dy.exec_root)
    left = mounts_below(dy.root)
    peers.unmount_below(dy.root)
    assert p.returncode == 0, cl.show(p)
    assert not leaks, leaks
    assert not left, "mounts left below the data-root after the module: %s" % left


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    """The Docker-written data-root fixture, extracted (read only here)."""
    return peers.extract_dataroot_fixture(tmp_path_factory.mktemp("ctr-basic-fx") / "root")


@pytest.fixture(scope="module")
def image_files() -> dict[str, bytes]:
    """Small regular files of fx-edge:1, read from the docker-save fixture's layers (later layers win)."""
    files: dict[str, bytes] = {}
    with tarfile.open(str(cl.EDGE_TAR)) as t:
        manifest = json.load(t.extractfile("manifest.json"))
        for layer in manifest[0]["Layers"]:
            m = t.getmember(layer)
            while m.issym():
                m = t.getmember(os.path.normpath(os.path.join(os.path.dirname(m.name), m.linkname)))
            data = t.extractfile(m).read()
            with tarfile.open(fileobj=io.BytesIO(data)) as lt:
                for e in lt:
                    if e.isfile() and e.size < 65536:
                        files[e.name.removeprefix("./")] = lt.extractfile(e).read()
    return files


def _name(request) -> str:
    return "t-" + request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:40].strip("-")


def _rm(dy: cl.Dy, *refs: str) -> None:
    dy("rm", "-f", *refs, check=False)


def _passwd_uid(image_files: dict[str, bytes], user: str) -> tuple[int, int]:
    for line in image_files["etc/passwd"].decode().splitlines():
        f = line.split(":")
        if f[0] == user:
            return int(f[2]), int(f[3])
    raise AssertionError("user %s not in the image's /etc/passwd" % user)


# ------------------------------------------------------------------------------------------------ acceptance 1
@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_run_rm_output_and_exit_code(env: cl.Dy, code: int) -> None:
    """`run --rm --network none IMAGE sh -c ...`: stdout/stderr of the container, exit status = its exit code,
    and nothing of the container stays behind."""
    before_dirs, before_links = cl.overlay_dir_names(env.root), cl.link_names(env.root)
    before_ctrs = set(os.listdir(env.root / "containers")) if (env.root / "containers").is_dir() else set()
    p = env("run", "--rm", "--network", "none", cl.EDGE_REF, "sh", "-c",
            "echo out-$0; echo err-$0 >&2; pwd; exit %d" % code, check=False)
    assert p.returncode == code, cl.show(p)
    assert p.stdout == "out-sh\n%s\n" % cl.edge_oracle()["config"]["WorkingDir"], cl.show(p)
    assert p.stderr == "err-sh\n", cl.show(p)
    assert cl.overlay_dir_names(env.root) == before_dirs, "overlay2 dirs left by run --rm"
    assert cl.link_names(env.root) == before_links, "overlay2/l links left by run --rm"
    after_ctrs = set(os.listdir(env.root / "containers"))
    assert after_ctrs == before_ctrs, "containers/ entries left by run --rm: %s" % (after_ctrs - before_ctrs)
    assert not cl.leftovers(env.root, env.exec_root)


def test_exit_code_is_never_lost(env: cl.Dy) -> None:
    """The exit status of `run` is the container's, every time (a race between reaping the container's init
    and reading its status would turn some of them into 0)."""
    wrong = []
    for i in range(14):
        code = 40 + i % 7
        p = env("run", "--rm", cl.EDGE_REF, "sh", "-c", "exit %d" % code, check=False)
        if p.returncode != code:
            wrong.append((code, p.returncode, p.stderr.strip()))
    assert not wrong, "run returned another status than the container's exit code in %d of 14 runs: %s" % (
        len(wrong), wrong)
    # the same through start -a, and the recorded State.ExitCode
    cid = env("create", cl.EDGE_REF, "sh", "-c", "exit 77").stdout.strip()
    try:
        bad = []
        for _ in range(10):
            p = env("start", "-a", cid, check=False)
            st = env.inspect(cid)["State"]["ExitCode"]
            if p.returncode != 77 or st != 77:
                bad.append((p.returncode, st))
        assert not bad, "start -a of `exit 77`: (rc, State.ExitCode) = %s" % bad
    finally:
        _rm(env, cid)


def test_run_rm_output_bytes_unbuffered(env: cl.Dy) -> None:
    """Binary output and output without a trailing newline arrive unchanged."""
    p = env("run", "--rm", cl.EDGE_REF, "sh", "-c", "printf 'a\\000b\\377c'; printf 'no-newline' >&2", binary=True)
    assert p.stdout == b"a\x00b\xffc"
    assert p.stderr == "no-newline"


def test_detached_logs_ps_stop_rm(env: cl.Dy, request) -> None:
    name = _name(request)
    # stdout and stderr are two pipes: their relative order in the log is not defined (in docker neither), so
    # stderr is written first and the tail checks only use stdout lines written after it
    p = env("run", "-d", "--name", name, "--network", "none", cl.EDGE_REF, "sh", "-c",
            "echo line0 >&2; sleep 0.5; echo line1; echo line2; echo line3; while :; do sleep 1; done")
    cid = p.stdout.strip()
    assert cl.HEX64.match(cid), "run -d must print the full container ID, got %r" % p.stdout
    try:
        assert cl.wait_for(lambda: "line3" in env("logs", name).stdout, 15), "the log never showed line3"
        lg = env("logs", name)
        assert lg.stdout == "line1\nline2\nline3\n" and lg.stderr == "line0\n", cl.show(lg)
        assert env("logs", "--tail", "1", name).stdout == "line3\n"
        assert env("logs", "--tail", "2", name).stdout == "line2\nline3\n"
        assert env("logs", "--tail", "3", name).stdout == "line1\nline2\nline3\n"
        assert env("logs", "--tail", "0", name).stdout == ""
        running = {r["Names"]: r for r in env.ps()}
        assert running[name]["State"] == "running" and running[name]["Status"].startswith("Up"), running[name]
        assert running[name]["ID"] == cid
        # `ps` without -a lists running containers only
        plain = env("ps", "--format", "json").stdout
        assert name in plain
        # the container's process is alive; stop: sh as PID 1 ignores SIGTERM -> SIGKILL after -t
        insp = env.inspect(name)
        assert insp["State"]["Running"] is True and insp["State"]["Pid"] > 0
        assert insp["State"]["Status"] == "running"
        pid = insp["State"]["Pid"]
        assert peers._pid_alive(pid)
        env("stop", "-t", "1", name)  # exit code 137 below: SIGKILL after the grace period
        insp = env.inspect(name)
        assert insp["State"]["Status"] == "exited" and insp["State"]["ExitCode"] == 137, insp["State"]
        assert not peers._pid_alive(pid), "the container's process survived stop"
        row = {r["Names"]: r for r in env.ps()}[name]
        assert row["State"] == "exited" and row["Status"].startswith("Exited (137)"), row
        assert name not in env("ps", "--format", "json").stdout
        assert not mounts_below(env.root), "rootfs still mounted after stop"
        env("rm", name)
        assert name not in env("ps", "-a", "--format", "json").stdout
        assert not (env.root / "containers" / cid).exists()
    finally:
        _rm(env, name)
    assert not cl.leftovers(env.root, env.exec_root)


def test_stop_delivers_sigterm_to_a_trapping_container(env: cl.Dy, request) -> None:
    name = _name(request)
    env("run", "-d", "--name", name, cl.EDGE_REF, "sh", "-c",
        "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.1; done")
    try:
        assert cl.wait_for(lambda: "ready" in env("logs", name).stdout, 15)
        env("stop", "-t", "10", name)
        assert env("wait", name).stdout == "42\n"
        assert "got-term" in env("logs", name).stdout
    finally:
        _rm(env, name)


def test_kill_and_wait(env: cl.Dy, request) -> None:
    name = _name(request)
    env("run", "-d", "--name", name, cl.EDGE_REF, "sh", "-c", "while :; do sleep 1; done")
    try:
        waiter = env.popen("wait", name)
        time.sleep(0.5)
        assert waiter.poll() is None, "wait returned while the container runs"
        env("kill", name)
        out, err = waiter.communicate(timeout=30)
        assert waiter.returncode == 0 and out.decode() == "137\n", (out, err)
        assert env.inspect(name)["State"]["ExitCode"] == 137
        # kill of a stopped container is an error
        p = env("kill", name, check=False)
        assert_clean_error(p, "kill of a stopped container")
        assert "is not running" in p.stderr
    finally:
        _rm(env, name)


def test_wait_prints_exit_code(env: cl.Dy, request) -> None:
    name = _name(request)
    env("run", "-d", "--name", name, cl.EDGE_REF, "sh", "-c", "sleep 1; exit 9")
    try:
        p = env("wait", name, timeout=60)
        assert p.stdout == "9\n"
        assert env("wait", name).stdout == "9\n", "wait on an exited container prints its code at once"
    finally:
        _rm(env, name)


@pytest.mark.parametrize("sig,code", [("TERM", 42), ("INT", 43)])
def test_foreground_run_forwards_signals(env: cl.Dy, sig: str, code: int) -> None:
    """Ctrl-C / SIGTERM to a foreground `run` go to the container; the CLI exits with the container's code."""
    p = env.popen("run", "--rm", cl.EDGE_REF, "sh", "-c",
                  "trap 'echo got-%s; exit %d' %s; echo ready; while :; do sleep 0.1; done" % (sig, code, sig),
                  start_new_session=True)
    try:
        ready = _read_until(p, b"ready\n", 20)
        assert ready, "the container never printed ready"
        p.send_signal(getattr(signal, "SIG" + sig))
        out, err = p.communicate(timeout=30)
    finally:
        cl.kill_group(p)
    assert p.returncode == code, (p.returncode, out, err)
    assert b"got-" + sig.encode() in out, out


def _read_until(p: subprocess.Popen, needle: bytes, timeout: float) -> bytes:
    buf = b""
    fd = p.stdout.fileno()
    deadline = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    return buf if needle in buf else b""


def test_logs_follow_ends_when_container_stops(env: cl.Dy, request) -> None:
    name = _name(request)
    env("run", "-d", "--name", name, cl.EDGE_REF, "sh", "-c", "echo first >&2; sleep 2; echo second; echo third")
    try:
        f = env.popen("logs", "-f", name)
        try:
            out, err = f.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            f.kill()
            raise AssertionError("logs -f did not end after the container stopped") from None
        assert f.returncode == 0
        assert out.decode() == "second\nthird\n" and err.decode() == "first\n", (out, err)
        assert env("logs", "--tail", "1", name).stdout == "third\n"
    finally:
        _rm(env, name)


def test_bind_mounts_rw_and_ro(env: cl.Dy, tmp_path: Path) -> None:
    host = tmp_path / "share"
    host.mkdir()
    (host / "from-host").write_text("hello from the host\n")
    p = env("run", "--rm", "-v", "%s:/mnt/share" % host, cl.EDGE_REF, "sh", "-c",
            "cat /mnt/share/from-host; echo written-inside > /mnt/share/from-ctr")
    assert p.stdout == "hello from the host\n"
    assert (host / "from-ctr").read_text() == "written-inside\n"
    p = env("run", "--rm", "-v", "%s:/mnt/ro:ro" % host, cl.EDGE_REF, "sh", "-c",
            "cat /mnt/ro/from-host; echo x > /mnt/ro/nope", check=False)
    assert p.returncode != 0 and p.stdout == "hello from the host\n", cl.show(p)
    assert "Read-only file system" in p.stderr, cl.show(p)
    assert not (host / "nope").exists()
    # recorded as Docker records binds
    cid = env("create", "-v", "%s:/mnt/ro:ro" % host, "-v", "%s:/mnt/rw" % host, cl.EDGE_REF, "true").stdout.strip()
    try:
        hc = json.loads((env.root / "containers" / cid / "hostconfig.json").read_text())
        assert hc["Binds"] == ["%s:/mnt/ro:ro" % host, "%s:/mnt/rw" % host]
        cfg = json.loads((env.root / "containers" / cid / "config.v2.json").read_text())
        mp = cfg["MountPoints"]
        assert set(mp) == {"/mnt/ro", "/mnt/rw"}
        assert mp["/mnt/ro"]["RW"] is False and mp["/mnt/rw"]["RW"] is True
        assert mp["/mnt/ro"]["Source"] == str(host) and mp["/mnt/ro"]["Type"] == "bind"
        mounts = {m["Destination"]: m for m in env.inspect(cid)["Mounts"]}
        assert mounts["/mnt/ro"]["RW"] is False and mounts["/mnt/ro"]["Mode"] == "ro"
    finally:
        _rm(env, cid)


def test_env_flags(env: cl.Dy, tmp_path: Path) -> None:
    ef = tmp_path / "env.list"
    ef.write_text("# a comment\n\nFROM_FILE=file value\nOVERRIDE=from-file\n")
    p = env("run", "--rm", "-e", "A=1", "-e", "EMPTY=", "--env-file", ef, "-e", "OVERRIDE=from-flag",
            cl.EDGE_REF, "env")
    got = dict(line.split("=", 1) for line in p.stdout.splitlines())
    for kv in cl.edge_oracle()["config"]["Env"]:          # the image's Env stays
        k, v = kv.split("=", 1)
        assert got.get(k) == v, (k, got)
    assert got["A"] == "1" and got["EMPTY"] == "" and got["FROM_FILE"] == "file value", got
    assert got["OVERRIDE"] == "from-flag", "a later -e wins over --env-file (docker's order): %r" % got["OVERRIDE"]
    # -e overrides an image variable
    k, _ = cl.edge_oracle()["config"]["Env"][-1].split("=", 1)
    p = env("run", "--rm", "-e", "%s=overridden" % k, cl.EDGE_REF, "sh", "-c", "echo $%s" % k)
    assert p.stdout == "overridden\n"


def test_workdir_user_entrypoint_hostname(env: cl.Dy, image_files) -> None:
    o = cl.edge_oracle()["config"]
    assert env("run", "--rm", cl.EDGE_REF, "pwd").stdout == o["WorkingDir"] + "\n"
    assert env("run", "--rm", "-w", "/tmp", cl.EDGE_REF, "pwd").stdout == "/tmp\n"
    # a workdir that does not exist is created (as docker does)
    assert env("run", "--rm", "-w", "/made/by/run", cl.EDGE_REF, "pwd").stdout == "/made/by/run\n"
    assert env("run", "--rm", "-u", "1000:1001", cl.EDGE_REF, "sh", "-c", "id -u; id -g").stdout == "1000\n1001\n"
    uid, gid = _passwd_uid(image_files, "nobody")
    assert env("run", "--rm", "-u", "nobody", cl.EDGE_REF, "sh", "-c", "id -u; id -g").stdout == "%d\n%d\n" % (uid, gid)
    p = env("run", "--rm", "--entrypoint", "/bin/echo", cl.EDGE_REF, "a b", "c")
    assert p.stdout == "a b c\n"
    p = env("run", "--rm", "--hostname", "my-host", cl.EDGE_REF, "sh", "-c", "hostname; cat /etc/hostname")
    assert p.stdout == "my-host\nmy-host\n"
    # the default hostname is the first 12 characters of the ID
    cid = env("create", cl.EDGE_REF, "sh", "-c", "hostname; cat /etc/hostname").stdout.strip()
    try:
        p = env("start", "-a", cid)
        assert p.stdout == (cid[:12] + "\n") * 2
        assert (env.root / "containers" / cid / "hostname").read_text() == cid[:12] + "\n"
    finally:
        _rm(env, cid)


def test_read_only_rootfs(env: cl.Dy, tmp_path: Path) -> None:
    host = tmp_path / "rw"
    host.mkdir()
    p = env("run", "--rm", "--read-only", "-v", "%s:/data" % host, cl.EDGE_REF, "sh", "-c",
            "echo ok > /data/f && touch /rootfile", check=False)
    assert p.returncode != 0, cl.show(p)
    assert "Read-only file system" in p.stderr, cl.show(p)
    assert (host / "f").read_text() == "ok\n", "a bind mount stays writable under --read-only"
    assert env("run", "--rm", cl.EDGE_REF, "sh", "-c", "touch /rootfile && echo writable").stdout == "writable\n"


def test_interactive_stdin_and_tty(env: cl.Dy) -> None:
    p = env("run", "--rm", "-i", cl.EDGE_REF, "sh", "-c", "cat; echo end", input="line a\nline b\n")
    assert p.stdout == "line a\nline b\nend\n"
    # without -i the container's stdin is empty
    p = env("run", "--rm", cl.EDGE_REF, "sh", "-c", "cat; echo end", input="ignored\n")
    assert p.stdout == "end\n"


def test_tty(tmp_path_factory) -> None:
    """-t: the container gets a terminal (exec-root short enough for any unix socket path)."""
    import shutil
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="dyt-", dir="/tmp"))
    try:
        dy = cl.Dy(base / "r", base / "x")
        (base / "r").mkdir()
        dy.load_edge()
        p = dy("run", "--rm", "-t", cl.EDGE_REF, "sh", "-c", "tty; echo $TERM; exit 4", check=False)
        assert p.returncode == 4, cl.show(p)
        assert p.stdout.replace("\r\n", "\n").split("\n")[:2] == ["/dev/pts/0", "xterm"], cl.show(p)
        assert not cl.leftovers(dy.root, dy.exec_root)
    finally:
        peers.unmount_below(base)
        shutil.rmtree(base, ignore_errors=True)


def test_tty_with_a_long_exec_root(env: cl.Dy) -> None:
    """-t must not depend on the length of --exec-root (a unix socket path is limited to 107 bytes: the
    console socket has to live somewhere short, as containerd's does)."""
    assert len(str(env.exec_root)) > 40
    p = env("run", "--rm", "-t", cl.EDGE_REF, "sh", "-c", "tty; exit 4", check=False)
    assert p.returncode == 4 and p.stdout.replace("\r\n", "\n").startswith("/dev/pts/"), cl.show(p)
    assert not cl.leftovers(env.root, env.exec_root)


# ------------------------------------------------------------------------------------------------ inspect / ps
def test_inspect_container_fields(env: cl.Dy, request) -> None:
    name = _name(request)
    o = cl.edge_oracle()
    cid = env("create", "--name", name, "-l", "extra=yes", cl.EDGE_REF, "sh", "-c", "exit 6").stdout.strip()
    try:
        i = env.inspect(name)
        assert i["Id"] == cid and i["Name"] == "/" + name
        assert i["Image"] == o["id"]
        assert i["Path"] == "sh" and i["Args"] == ["-c", "exit 6"]
        assert i["State"]["Status"] == "created" and i["State"]["Running"] is False
        assert i["State"]["StartedAt"] == "0001-01-01T00:00:00Z"
        c = i["Config"]
        assert c["Image"] == cl.EDGE_REF and c["Cmd"] == ["sh", "-c", "exit 6"]
        assert c["Env"] == o["config"]["Env"] and c["WorkingDir"] == o["config"]["WorkingDir"]
        assert c["Labels"] == {**o["config"]["Labels"], "extra": "yes"}
        assert c["Hostname"] == cid[:12]
        assert i["HostConfig"]["NetworkMode"] == "none"
        assert i["Driver"] == "overlay2" and i["GraphDriver"]["Name"] == "overlay2"
        paths = cl.container_layer_paths(env.root, cid)
        gd = i["GraphDriver"]["Data"]
        assert gd["UpperDir"] == str(paths["rw"] / "diff") and gd["WorkDir"] == str(paths["rw"] / "work")
        assert gd["MergedDir"] == str(paths["rw"] / "merged")
        lowers = gd["LowerDir"].split(":")
        assert lowers[0] == str(paths["init"] / "diff"), "the first lower dir is the init layer's diff"
        assert len(lowers) == 1 + len(o["diff_ids"])
        assert all(os.path.isdir(x) for x in lowers)
        env("start", "-a", name, check=False)
        i = env.inspect(cid)
        assert i["State"]["Status"] == "exited" and i["State"]["ExitCode"] == 6
        assert i["State"]["StartedAt"] != "0001-01-01T00:00:00Z" and i["State"]["FinishedAt"] >= i["State"]["StartedAt"]
        for k in ("HostnamePath", "HostsPath", "ResolvConfPath", "LogPath"):
            assert os.path.isfile(i[k]), (k, i[k])
        # image inspect still works for the image; --type container refuses an image
        assert env("inspect", "--type", "image", cl.EDGE_REF).returncode == 0
        assert_clean_error(env("inspect", "--type", "container", cl.EDGE_REF, check=False))
    finally:
        _rm(env, cid)


def test_ps_format_json_keys_and_values(env: cl.Dy, request) -> None:
    """`ps -a --format json` rows carry the keys docker's `{{json .}}` rows have (the oracle's rows, recorded
    from the docker CLI), with docker's formats for Labels/Networks/Names/Image."""
    name = _name(request)
    oracle_rows = [json.loads(r) for r in peers.oracle("dataroot-docker20")["docker_ps_cli"]]
    # keys whose value the oracle's CLI filled in (Platform is null there: newer CLIs add it, 20.10 has none)
    exp_keys = {k for k in oracle_rows[0] if oracle_rows[0][k] is not None}
    writer = next(r for r in oracle_rows if r["Names"] == "fx-writer")   # also an fx-edge:1 container
    env("run", "--name", name, cl.EDGE_REF, "true")
    try:
        rows = [json.loads(x) for x in env("ps", "-a", "--format", "json").stdout.splitlines() if x.strip()]
        row = next(r for r in rows if r["Names"] == name)
        missing = exp_keys - set(row)
        assert not missing, "ps --format json lacks keys docker prints: %s (row: %s)" % (missing, row)
        extra = set(row) - set(oracle_rows[0])
        assert not extra, "keys docker does not print: %s" % extra
        assert len(row["ID"]) == 12 and row["Image"] == cl.EDGE_REF
        assert row["Labels"] == writer["Labels"] and row["Networks"] == writer["Networks"]
        assert row["State"] == "exited" and row["Status"].startswith("Exited (0) ")
        assert row["Command"] == '"true"'
        assert row["LocalVolumes"] == "0" and row["Mounts"] == "" and row["Ports"] == ""
        full = [json.loads(x) for x in env("ps", "-a", "--no-trunc", "--format", "json").stdout.splitlines()]
        assert any(r["ID"] == env.cid(name) for r in full)
        q = env("ps", "-a", "-q").stdout.split()
        assert env.cid(name)[:12] in q
    finally:
        _rm(env, name)


# ------------------------------------------------------------------------------------------------ rm / names / rmi
def test_rm_force_of_running_container(env: cl.Dy, request) -> None:
    name = _name(request)
    cid = env("run", "-d", "--name", name, cl.EDGE_REF, "sh", "-c", "while :; do sleep 1; done").stdout.strip()
    pid = env.inspect(cid)["State"]["Pid"]
    assert peers._pid_alive(pid)
    p = env("rm", name, check=False)
    err = assert_clean_error(p, "rm of a running container")
    assert "You cannot remove a running container %s" % cid in err, err
    assert peers._pid_alive(pid), "a refused rm must not stop the container"
    env("rm", "-f", name)
    assert cl.wait_for(lambda: not peers._pid_alive(pid), 10), "the container's process survived rm -f"
    assert not (env.root / "containers" / cid).exists()
    assert not cl.mount_record(env.root, cid).exists()
    assert not cl.leftovers(env.root, env.exec_root)


def test_name_conflict_and_invalid_names(env: cl.Dy, request) -> None:
    name = _name(request)
    cid = env("create", "--name", name, cl.EDGE_REF, "true").stdout.strip()
    try:
        dirs = cl.overlay_dir_names(env.root)
        p = env("create", "--name", name, cl.EDGE_REF, "true", check=False)
        err = assert_clean_error(p, "duplicate name")
        assert 'The container name "/%s" is already in use by container "%s"' % (name, cid) in err, err
        p = env("run", "--rm", "--name", name, cl.EDGE_REF, "true", check=False)
        assert_clean_error(p, "run with a duplicate name")
        assert cl.overlay_dir_names(env.root) == dirs, "a refused create left layer dirs"
        for bad in ("a", "-lead", "has space", "sl/ash"):
            p = env("create", "--name", bad, cl.EDGE_REF, "true", check=False)
            assert_clean_error(p, "invalid name %r" % bad)
        assert cl.overlay_dir_names(env.root) == dirs
        assert sum(1 for r in env.ps() if r["Names"] == name) == 1
    finally:
        _rm(env, cid)


def test_resolve_by_id_prefix_and_name(env: cl.Dy, request) -> None:
    name = _name(request)
    cid = env("create", "--name", name, cl.EDGE_REF, "true").stdout.strip()
    try:
        assert env.cid(cid[:10]) == cid and env.cid(name) == cid and env.cid(cid) == cid
        assert_clean_error(env("inspect", "--type", "container", "no-such-container", check=False))
        assert "No such container" in env("rm", "no-such-container", check=False).stderr
    finally:
        _rm(env, cid)


def test_rmi_refuses_an_image_used_by_a_container(tmp_path: Path) -> None:
    dy = cl.Dy(tmp_path / "root", tmp_path / "exec")
    (tmp_path / "root").mkdir()
    img = dy.load_edge()
    cid = dy("create", cl.EDGE_REF, "true").stdout.strip()
    p = dy("rmi", img, check=False)
    err = assert_clean_error(p, "rmi of an image a container uses (by ID)")
    assert err == "Error: conflict: unable to delete %s (must be forced) - image is being used by stopped " \
                  "container %s" % (img.split(":")[1][:12], cid[:12]), err
    # by its only tag: docker refuses too ("unable to remove repository reference")
    p = dy("rmi", cl.EDGE_REF, check=False)
    assert p.returncode != 0, "rmi %s (its only tag) succeeded while container %s uses the image:\n%s" % (
        cl.EDGE_REF, cid[:12], cl.show(p))
    err = assert_clean_error(p)
    assert 'conflict: unable to remove repository reference "%s" (must force) - container %s is using its ' \
           'referenced image %s' % (cl.EDGE_REF, cid[:12], img.split(":")[1][:12]) in err, err
    assert dy("images", "-q").stdout.strip() == img.split(":")[1][:12]
    dy("rm", cid)
    dy("rmi", cl.EDGE_REF)
    assert dy("images", "-q").stdout.strip() == ""


def test_rmi_refuses_by_id_even_with_a_running_container(env: cl.Dy, request) -> None:
    name = _name(request)
    cid = env("run", "-d", "--name", name, cl.EDGE_REF, "sh", "-c", "while :; do sleep 1; done").stdout.strip()
    try:
        p = env("rmi", cl.edge_id(), check=False)
        err = assert_clean_error(p)
        assert "image is being used by running container %s" % cid[:12] in err, err
        p = env("rmi", "-f", cl.edge_id(), check=False)
        assert p.returncode != 0, "rmi -f of an image a RUNNING container uses must fail (docker: cannot be forced)"
        assert env.inspect(cid)["State"]["Running"] is True
    finally:
        _rm(env, cid)


# ------------------------------------------------------------------------------------------------ on disk
def _modes(d: Path) -> dict[str, str]:
    return {n: cl.mode_of(d / n) for n in os.listdir(d)}


def test_layer_records_after_create_and_removed_by_rm(env: cl.Dy) -> None:
    o = cl.edge_oracle()
    cid = env("create", cl.EDGE_REF, "true").stdout.strip()
    paths = cl.container_layer_paths(env.root, cid)
    md, rw, init = paths["mounts"], paths["rw"], paths["init"]
    mid = str(paths["mount_id"])
    try:
        # layerdb/mounts/<cid>: mount-id, init-id, parent -- no newline, 0644 files in a 0755 dir (§0, §4)
        assert sorted(os.listdir(md)) == ["init-id", "mount-id", "parent"]
        assert cl.mode_of(md) == "0755" and all(m == "0644" for m in _modes(md).values()), _modes(md)
        assert cl.HEX64.match(mid) and mid != cid
        assert cl.read_nonl(md / "init-id") == mid + "-init"
        assert cl.read_nonl(md / "parent") == o["chain_ids"][-1]
        # overlay2/<mid>-init and overlay2/<mid> (§7.1): dirs 0710, diff 0755, work 0700, link/lower 0644,
        # committed 0600 in the init dir (the rw layer was created on it)
        assert sorted(os.listdir(init)) == ["committed", "diff", "link", "lower", "work"]
        assert sorted(os.listdir(rw)) == ["diff", "link", "lower", "work"]
        for d in (init, rw):
            assert cl.mode_of(d) == "0710" and cl.mode_of(d / "diff") == "0755" and cl.mode_of(d / "work") == "0700"
            assert cl.mode_of(d / "link") == "0644" and cl.mode_of(d / "lower") == "0644"
        assert cl.mode_of(init / "committed") == "0600" and (init / "committed").stat().st_size == 0
        init_link, rw_link = cl.read_nonl(init / "link"), cl.read_nonl(rw / "link")
        for ln, target in ((init_link, init), (rw_link, rw)):
            assert len(ln) == 26 and os.readlink(env.root / "overlay2" / "l" / ln) == "../%s/diff" % target.name
        rw_lower = cl.read_nonl(rw / "lower").split(":")
        init_lower = cl.read_nonl(init / "lower").split(":")
        assert rw_lower[0] == "l/" + init_link and rw_lower[1:] == init_lower
        assert len(init_lower) == len(o["diff_ids"])
        # init layer's diff = Docker's init files (§7.6), compared with the fixture's oracle
        fx = next(c for c in peers.oracle("dataroot-docker20")["containers"] if c["name"] == "/fx-writer")
        exp = {e["path"]: e for e in fx["init_layer_diff"] if e["path"] != "."}
        got = {e["path"]: e for e in peers.tree_listing(init / "diff")}
        assert set(got) == set(exp), "init layer diff: missing %s, extra %s" % (set(exp) - set(got), set(got) - set(exp))
        for p, e in exp.items():
            for k in ("type", "mode", "uid", "gid", "size", "target"):
                assert got[p].get(k) == e.get(k), (p, k, got[p].get(k), e.get(k))
        assert not os.listdir(rw / "diff"), "a created container's upper dir is empty"
        env("rm", cid)
        for gone in (md, rw, init, env.root / "containers" / cid, env.root / "overlay2" / "l" / init_link,
                     env.root / "overlay2" / "l" / rw_link):
            assert not os.path.lexists(gone), "rm left %s" % gone
    finally:
        _rm(env, cid)


def test_container_dir_after_create_and_after_start(env: cl.Dy, fixture_root: Path) -> None:
    """containers/<id>/ has exactly the files (and modes) Docker's fx-created (never started) and fx-writer
    (exited) have in the fixture; formats as the fact sheet §9 says."""
    fx = {c["name"]: c for c in peers.oracle("dataroot-docker20")["containers"]}
    cid = env("create", "--network", "none", cl.EDGE_REF, "sh", "-c", "echo logged; echo warned >&2").stdout.strip()
    cdir = env.root / "containers" / cid
    try:
        assert sorted(os.listdir(cdir)) == sorted(fx["/fx-created"]["containers_dir_files"])
        fx_created = fixture_root / "containers" / FIXTURE_CREATED
        assert cl.mode_of(cdir) == cl.mode_of(fx_created) == "0710"
        assert cl.mode_of(env.root / "containers") == cl.mode_of(fixture_root / "containers")
        assert _modes(cdir) == _modes(fx_created), "modes after create"
        env("start", "-a", cid)
        writer = fixture_root / "containers" / FIXTURE_WRITER
        exp_files = sorted(n.replace(FIXTURE_WRITER, cid) for n in fx["/fx-writer"]["containers_dir_files"])
        assert sorted(os.listdir(cdir)) == exp_files
        assert _modes(cdir) == {n.replace(FIXTURE_WRITER, cid): m for n, m in _modes(writer).items()}, \
            "modes after start differ from Docker's"
        # contents / formats
        assert (cdir / "hostname").read_bytes() == (cid[:12] + "\n").encode()
        assert (cdir / "hosts").read_bytes() == (writer / "hosts").read_bytes(), "--network none hosts file"
        rc = (cdir / "resolv.conf").read_bytes()
        assert (cdir / "resolv.conf.hash").read_bytes() == b"sha256:" + hashlib.sha256(rc).hexdigest().encode()
        for f in ("config.v2.json", "hostconfig.json"):
            raw = (cdir / f).read_bytes()
            assert raw.endswith(b"}\n") and raw.count(b"\n") == 1, "%s: one line + newline (json.Encoder)" % f
            mine, docker = json.loads(raw), json.loads((writer / f).read_bytes())
            assert list(mine) == list(docker), "%s: keys/order differ from dockerd's:\n%s\n%s" % (f, list(mine), list(docker))
        cfg = json.loads((cdir / "config.v2.json").read_bytes())
        dcfg = json.loads((writer / "config.v2.json").read_bytes())
        assert list(cfg["State"]) == list(dcfg["State"])
        assert list(cfg["Config"]) == [k for k in dcfg["Config"] if k in cfg["Config"]]
        assert set(dcfg["Config"]) <= set(cfg["Config"]), set(dcfg["Config"]) - set(cfg["Config"])
        assert cfg["HasBeenStartedBefore"] is True and cfg["Driver"] == "overlay2" and cfg["OS"] == "linux"
        assert cfg["HostnamePath"] == str(cdir / "hostname") and cfg["LogPath"] == str(cdir / ("%s-json.log" % cid))
        assert cfg["ShmPath"] == dcfg["ShmPath"] == ""
        # the json-file log (§9.3)
        lines = (cdir / ("%s-json.log" % cid)).read_text().splitlines()
        objs = [json.loads(x) for x in lines]
        assert [(x["log"], x["stream"]) for x in objs] in ([("logged\n", "stdout"), ("warned\n", "stderr")],
                                                            [("warned\n", "stderr"), ("logged\n", "stdout")])
        for line, x in zip(lines, objs, strict=False):
            assert list(x) == ["log", "stream", "time"], line
            assert x["time"].endswith("Z") and x["time"][:2] == "20"
    finally:
        _rm(env, cid)


# ------------------------------------------------------------------------------------------------ cp / mount / export
def test_cp_both_ways(env: cl.Dy, tmp_path: Path, image_files) -> None:
    cid = env("create", cl.EDGE_REF, "sh", "-c", "cat /app/in.txt; ls /app/indir").stdout.strip()
    try:
        src = tmp_path / "in.txt"
        src.write_bytes(b"from host\n")
        env("cp", src, "%s:/app/" % cid)
        d = tmp_path / "indir"
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "f").write_text("deep\n")
        env("cp", d, "%s:/app/indir" % cid)
        p = env("start", "-a", cid)
        assert p.stdout == "from host\nsub\n"
        # container -> host: a file of the image, a file copied in, a directory
        out = tmp_path / "out"
        out.mkdir()
        env("cp", "%s:/etc/passwd" % cid, out / "passwd")
        assert (out / "passwd").read_bytes() == image_files["etc/passwd"]
        env("cp", "%s:/app/in.txt" % cid, out)
        assert (out / "in.txt").read_bytes() == b"from host\n"
        env("cp", "%s:/app/indir" % cid, out / "copied")
        assert (out / "copied" / "sub" / "f").read_text() == "deep\n"
        # to stdout: a tar
        p = env("cp", "%s:/etc/group" % cid, "-", binary=True)
        with tarfile.open(fileobj=io.BytesIO(p.stdout)) as t:
            names = t.getnames()
            assert names == ["group"], names
            assert t.extractfile("group").read() == image_files["etc/group"]
        # the copies are changes of the container
        diff = env("diff", cid).stdout.splitlines()
        assert "A /app/in.txt" in diff and "A /app/indir" in diff, diff
        assert_clean_error(env("cp", "%s:/no/such/file" % cid, out, check=False), "cp of a missing path")
    finally:
        _rm(env, cid)
    assert not mounts_below(env.root)


def test_mount_and_umount(env: cl.Dy) -> None:
    cid = env("create", cl.EDGE_REF, "true").stdout.strip()
    try:
        p = env("mount", cid)
        merged = p.stdout.strip()
        paths = cl.container_layer_paths(env.root, cid)
        assert merged == str(paths["rw"] / "merged")
        assert merged in mounts_below(env.root)
        assert os.path.isfile(os.path.join(merged, ".dockerenv")) and os.path.isdir(os.path.join(merged, "app"))
        with open(os.path.join(merged, "app", "via-mount"), "w") as f:
            f.write("x")
        env("umount", cid)
        assert not mounts_below(env.root), "umount left the rootfs mounted"
        assert not os.path.exists(paths["rw"] / "merged"), "Put removes merged/ (§7.2)"
        assert "A /app/via-mount" in env("diff", cid).stdout.splitlines()
    finally:
        _rm(env, cid)
    assert not mounts_below(env.root)


def test_export_matches_dockers_export_of_a_fresh_container(env: cl.Dy, tmp_path: Path) -> None:
    """`export` of a fresh fx-edge:1 container = the oracle's `docker export` listing, the -init layer's files
    (.dockerenv, /etc/hostname, /etc/hosts, /etc/resolv.conf, /etc/mtab, /dev/console, ...) included."""
    cid = env("create", cl.EDGE_REF, "true").stdout.strip()
    try:
        out = tmp_path / "export.tar"
        env("export", "-o", out, cid)
        assert not mounts_below(env.root), "export left the rootfs mounted"
        got = {e["path"].rstrip("/"): e for e in peers.tar_listing(out)}
        exp = {e["path"].rstrip("/"): e for e in cl.edge_oracle()["export_listing"]}
        diffs = []
        for p in sorted(set(exp) - set(got)):
            diffs.append("missing: %s" % p)
        for p in sorted(set(got) - set(exp)):
            diffs.append("unexpected: %s" % p)
        for p in sorted(set(exp) & set(got)):
            for k in ("type", "mode", "uid", "gid", "size", "sha256", "target", "link_target", "rdev", "xattrs"):
                if exp[p].get(k) != got[p].get(k):
                    diffs.append("%s: %s expected %r got %r" % (p, k, exp[p].get(k), got[p].get(k)))
            if "mtime" not in exp[p].get("volatile", []) and exp[p]["mtime"] != got[p]["mtime"]:
                diffs.append("%s: mtime expected %r got %r" % (p, exp[p]["mtime"], got[p]["mtime"]))
        assert not diffs, "export differs from docker export:\n" + "\n".join(diffs[:60])
        # to stdout too
        p = env("export", cid, binary=True)
        to_stdout = tmp_path / "stdout.tar"
        to_stdout.write_bytes(p.stdout)
        assert peers.tar_listing(to_stdout) == peers.tar_listing(out), "export to stdout differs from export -o"
    finally:
        _rm(env, cid)


def test_start_attached_reruns_and_detached_start(env: cl.Dy, request) -> None:
    name = _name(request)
    cid = env("create", "--name", name, cl.EDGE_REF, "sh", "-c", "echo run >> /app/count; wc -l < /app/count").stdout.strip()
    try:
        assert env("start", "-a", name).stdout.strip() == "1"
        assert env("start", "-a", name).stdout.strip() == "2"
        p = env("start", name)
        assert p.stdout == name + "\n"
        assert env("wait", name).stdout == "0\n"
        assert env("logs", name).stdout.split() == ["1", "2", "3"]
        assert env.inspect(cid)["State"]["Status"] == "exited"
    finally:
        _rm(env, cid)


def test_fsck_clean_between_tests(env: cl.Dy) -> None:
    """Wherever it runs (the module's teardown checks the same after the last test), the data-root is
    consistent and nothing leaked: every test cleans up after itself."""
    p = env("fsck", check=False)
    assert p.returncode == 0, cl.show(p)
    assert not cl.leftovers(env.root, env.exec_root), cl.leftovers(env.root, env.exec_root)
