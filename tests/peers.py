"""Helpers for tests that talk to REAL peers: a private dockerd 20.10, docker-registry, skopeo, umoci, tar-split.

Plain functions and classes only (no pytest fixtures here); test modules build their own fixtures on top.

Safety rules these helpers follow:
  * every daemon is private: its own data-root, exec-root, pidfile, unix socket (short path under /tmp because of
    the 108-byte sun_path limit), daemon.json (so /etc/docker/daemon.json is not read) and its own containerd;
  * a daemon is stopped ONLY by the PID this module started (never by name), and anything left mounted below
    its data-root / exec-root is unmounted afterwards (read from /proc/self/mountinfo);
  * nothing here ever talks to /var/run/docker.sock or a system containerd.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gzip
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REQUIRE_PEERS = os.environ.get("DOCKYARD_REQUIRE_PEERS") == "1"

#: dockerd 20.10 looks for a system containerd here and USES it when the socket exists
SYSTEM_CONTAINERD_SOCK = "/run/containerd/containerd.sock"

_REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------- peers / fixtures
def _missing(what: str) -> None:
    """A precondition of the running test is not met: skip it, or fail naming `what` with DOCKYARD_REQUIRE_PEERS=1."""
    if REQUIRE_PEERS:
        pytest.fail("%s (DOCKYARD_REQUIRE_PEERS=1)" % what, pytrace=False)
    pytest.skip(what)


#: the public name of the skip/fail rule (conftest re-exports it)
missing = _missing


def need(binary: str) -> str:
    """Path of a peer binary; skip the test when it is missing (fail with DOCKYARD_REQUIRE_PEERS=1)."""
    path = shutil.which(binary)
    if path is None:
        for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
            cand = os.path.join(d, binary)
            if os.access(cand, os.X_OK):
                path = cand
                break
    if path is None:
        _missing("peer %r not installed" % binary)
    assert path is not None
    return path


def need_root() -> None:
    if os.geteuid() != 0:
        _missing("real-peer tests need root (dockerd, overlayfs, device nodes); running as uid %d" % os.geteuid())


def fixture_candidates() -> list[Path]:
    """Where the shared fixture tree is looked for, in order: $DOCKYARD_FIXTURES alone when it is set."""
    if os.environ.get("DOCKYARD_FIXTURES"):
        return [Path(os.environ["DOCKYARD_FIXTURES"])]
    return [_REPO / "tests" / "fixtures", _REPO.parent / "shared" / "fixtures", Path("/work/shared/fixtures")]


def find_fixtures() -> Path | None:
    """The shared fixture tree (docker-save/, oci/, dataroot/, oracle/), or None when it is not there."""
    for c in fixture_candidates():
        if (c / "oracle").is_dir() and (c / "docker-save").is_dir():
            return c
    return None


def fixtures_missing_reason() -> str:
    return "fixture tree not found (set DOCKYARD_FIXTURES); looked in %s" % ", ".join(map(str, fixture_candidates()))


def fixtures_dir() -> Path:
    """The shared fixture tree (docker-save/, oci/, dataroot/, oracle/)."""
    found = find_fixtures()
    if found is None:
        _missing(fixtures_missing_reason())
        raise AssertionError("unreachable")
    return found


def oracle(name: str) -> dict[str, Any]:
    """oracle/<name>.json (name = fixture file name, e.g. 'fx-edge.docker.tar', or 'dataroot-docker20')."""
    with open(fixtures_dir() / "oracle" / (name + ".json"), encoding="utf-8") as f:
        return json.load(f)


def extract_dataroot_fixture(dest: str | os.PathLike[str]) -> Path:
    """Unpack fixtures/dataroot/dataroot-docker20.tar.gz into dest with GNU tar (xattrs, devices, owners)."""
    need_root()
    tar = need("tar")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    src = fixtures_dir() / "dataroot" / "dataroot-docker20.tar.gz"
    p = subprocess.run([tar, "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", str(dest), "-xzpf", str(src)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("tar -x %s failed (%d): %s" % (src, p.returncode, p.stderr))
    return dest


# --------------------------------------------------------------------------------------------- small utils
def sha256_file(path: str | os.PathLike[str]) -> str:
    with open(path, "rb") as f:
        return hash_stream(f)[0]


def hash_stream(f: Any, keep: list[bytes] | None = None) -> tuple[str, int]:
    """(sha256 digest string, length) of a binary stream; chunks are appended to `keep` when given."""
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
        if keep is not None:
            keep.append(chunk)
    return "sha256:" + h.hexdigest(), n


def sha256_bytes(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + hashlib.sha256((out[-1] + " " + d).encode()).hexdigest())
    return out


def run(cmd: list[str], *, check: bool = True, timeout: float = 300, env: dict[str, str] | None = None,
        input: bytes | None = None, cwd: str | None = None,
        unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess[bytes]:
    e = {k: v for k, v in os.environ.items() if k not in unset}
    if env:
        e.update(env)
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, env=e, input=input, cwd=cwd)
    if check and p.returncode != 0:
        raise AssertionError("%s failed (rc=%d)\nstdout: %s\nstderr: %s" % (
            " ".join(map(str, cmd)), p.returncode, p.stdout.decode(errors="replace")[-3000:],
            p.stderr.decode(errors="replace")[-3000:]))
    return p


def dockyard(root: str | os.PathLike[str], *args: str, check: bool = True, timeout: float = 300,
             input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the dockyard CLI (`python -m dockyard --data-root ROOT ...`) from this checkout's src/."""
    src = str(_REPO / "src")
    env = {"PYTHONPATH": src + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""),
           "TZ": "UTC"}
    return run([sys.executable, "-m", "dockyard", "--data-root", str(root), *args], check=check,
               timeout=timeout, input=input, env=env, unset=("DOCKYARD_DATA_ROOT",))


def dockyard_json_lines(root: str | os.PathLike[str], *args: str) -> list[Any]:
    out = dockyard(root, *args).stdout.decode()
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def pick_files(orc_image: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, sha256) of a small regular file of the top-most layer that has one and of the base layer (from the
    oracle's diff dirs) that is visible unchanged in the merged rootfs (oracle export listing)."""
    final = {e["path"]: e.get("sha256") for e in orc_image["export_listing"] if e["type"] == "file"}

    def ok(e: dict[str, Any]) -> bool:
        p = e["path"]
        return (e["type"] == "file" and 0 < e.get("size", 0) <= 65536 and p.isascii()
                and all(c.isalnum() or c in "/-_." for c in p) and final.get(p) == e.get("sha256"))

    layers = orc_image["layers"]
    picks = []
    for layer in reversed(layers[1:]):
        cand = [e for e in layer.get("diff_dir", []) if ok(e)]
        if cand:
            picks.append((cand[0]["path"], cand[0]["sha256"]))
            break
    base = [e for e in layers[0].get("diff_dir", []) if ok(e)]
    assert base, "no suitable base-layer file in the oracle"
    picks.append((base[0]["path"], base[0]["sha256"]))
    return picks


def parse_mountinfo() -> list[str]:
    """Mount points (decoded) from /proc/self/mountinfo."""
    pts = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4:
                pts.append(_unescape_mount(fields[4]))
    return pts


def _unescape_mount(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mounts_below(*roots: str | os.PathLike[str]) -> list[str]:
    res = []
    for mp in parse_mountinfo():
        for r in roots:
            r = os.path.realpath(str(r)).rstrip("/")
            if mp == r or mp.startswith(r + "/"):
                res.append(mp)
                break
    return res


_libc = None


def unmount_below(*roots: str | os.PathLike[str]) -> list[str]:
    """Lazily unmount everything mounted at or below the given roots (deepest first). Returns what was unmounted."""
    global _libc
    done: list[str] = []
    for _ in range(5):
        pts = mounts_below(*roots)
        if not pts:
            break
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        for mp in sorted(set(pts), key=lambda p: (-p.count("/"), p)):
            if _libc.umount2(mp.encode("utf-8", "surrogateescape"), 2) == 0:  # MNT_DETACH
                done.append(mp)
    return done


def _proc_stats():
    """(pid, fields of /proc/PID/stat after the command name: state, ppid, pgrp, ...) of every process."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2:
            yield int(d), fields


def group_pids(pgid: int) -> list[int]:
    """Live processes (not zombies) of a process group."""
    return [pid for pid, fields in _proc_stats() if fields[2] == str(pgid) and fields[0] != "Z"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child counts as dead
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    return [child for child, fields in _proc_stats() if fields[1] == str(pid)]


def _cmdline(pid: int) -> list[str]:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _procs_referencing(needle: str) -> list[int]:
    """PIDs whose command line mentions `needle` (e.g. our private exec-root)."""
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != me and any(needle in a for a in _cmdline(int(d))):
            out.append(int(d))
    return out


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


def stop_pid(pid: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    """SIGTERM the given PID (one we started), wait, then SIGKILL. Reaps it when it is our child."""
    if not _pid_alive(pid):
        if proc is not None:
            proc.poll()
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        if proc is None and not _pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait(timeout=30)
    else:
        for _ in range(100):
            if not _pid_alive(pid):
                return
            time.sleep(0.1)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


# --------------------------------------------------------------------------------------------- dockerd
class Dockerd:
    """A private dockerd (20.10, overlay2) on `data_root`.

        with Dockerd(tmp_path / "root") as d:
            d.docker("load", "-i", tar)

    Runtime files (exec-root, socket, pidfile, daemon.json, log) live in a short mkdtemp dir under /tmp.
    containerd: when no system containerd socket exists, dockerd starts its own *managed* containerd under the
    exec-root (this is verified after start). If /run/containerd/containerd.sock exists (or own_containerd=True),
    dockerd 20.10 would connect to that system daemon, so a private containerd is started by this class and
    passed with --containerd instead.
    """

    API = "v1.41"

    def __init__(self, data_root: str | os.PathLike[str], *, own_containerd: bool | None = None,
                 start_timeout: float = 90, extra_args: tuple[str, ...] = ()):
        self.data_root = os.path.realpath(str(data_root))
        self.own_containerd = own_containerd
        self.start_timeout = start_timeout
        self.extra_args = tuple(extra_args)
        self.base = ""
        self.exec_root = ""
        self.sock = ""
        self.pidfile = ""
        self.log_path = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.ctd_proc: subprocess.Popen[bytes] | None = None  # private containerd we started ourselves
        self.managed_ctd_pid = 0  # containerd that dockerd started under our exec-root
        self.containerd_sock = ""
        self.env: dict[str, str] = {}
        self.unmounted: list[str] = []
        self.start_seconds = 0.0
        self.server_version = ""

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> Dockerd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def start(self) -> None:
        need_root()
        dockerd = need("dockerd")
        need("docker")
        need("containerd")
        need("runc")
        os.makedirs(self.data_root, exist_ok=True)
        self.base = tempfile.mkdtemp(prefix="dyd-", dir="/tmp")
        self.exec_root = os.path.join(self.base, "x")
        self.sock = os.path.join(self.base, "d.sock")
        self.pidfile = os.path.join(self.base, "d.pid")
        self.log_path = os.path.join(self.base, "dockerd.log")
        cfg = os.path.join(self.base, "daemon.json")
        with open(cfg, "w") as f:
            f.write("{}\n")  # keep /etc/docker/daemon.json out of the picture
        os.makedirs(os.path.join(self.base, "cli"), exist_ok=True)
        self.env = {"DOCKER_HOST": "unix://" + self.sock, "DOCKER_CONFIG": os.path.join(self.base, "cli"),
                    "DOCKER_CLI_HINTS": "false", "DOCKER_CONTEXT": "default"}
        own = self.own_containerd
        if own is None:
            own = os.path.lexists(SYSTEM_CONTAINERD_SOCK)
        args = [dockerd, "--data-root", self.data_root, "--exec-root", self.exec_root, "--pidfile", self.pidfile,
                "-H", "unix://" + self.sock, "--config-file", cfg, "--storage-driver", "overlay2",
                "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false", "--ip-forward=false",
                "--userland-proxy=false", "--log-level", "info", *self.extra_args]
        if own:
            self._start_own_containerd()
            args += ["--containerd", self.containerd_sock]
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.pid = self.proc.pid
        try:
            self._wait_ready()
            self._check_containerd(own)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0

    def _start_own_containerd(self) -> None:
        ctd = need("containerd")
        cdir = os.path.join(self.base, "ctd")
        os.makedirs(cdir)
        self.containerd_sock = os.path.join(cdir, "c.sock")
        toml = os.path.join(cdir, "config.toml")
        with open(toml, "w") as f:
            f.write('version = 2\nroot = "%s/root"\nstate = "%s/state"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    '[grpc]\n  address = "%s"\n[ttrpc]\n  address = "%s.ttrpc"\n'
                    '[debug]\n  address = ""\n[metrics]\n  address = ""\n'
                    % (cdir, cdir, self.containerd_sock, self.containerd_sock))
        with open(os.path.join(cdir, "containerd.log"), "ab") as log:
            self.ctd_proc = subprocess.Popen([ctd, "--config", toml], stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        for _ in range(200):
            if os.path.exists(self.containerd_sock):
                return
            if self.ctd_proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("private containerd did not start: %s" % self._tail(os.path.join(cdir, "containerd.log")))

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dockerd exited with %s during start-up:\n%s" % (self.proc.returncode,
                                                                                   self.log_tail()))
            if os.path.exists(self.sock):
                try:
                    if self._request("GET", "/_ping", timeout=2)[0] == 200:
                        break
                except OSError:
                    pass
            time.sleep(0.1)
        else:
            raise RuntimeError("dockerd did not answer /_ping within %ss:\n%s" % (self.start_timeout,
                                                                                 self.log_tail()))
        # the CLI must work too (API negotiation of a newer client against 1.41)
        p = self.docker("version", "--format", "{{.Server.Version}}", check=False)
        if p.returncode != 0:
            raise RuntimeError("docker version failed: %s\n%s" % (p.stderr, self.log_tail()))
        self.server_version = p.stdout.strip()

    def _check_containerd(self, own: bool) -> None:
        """Make sure this dockerd does not use a system containerd."""
        log = self.log_tail(200000)
        if own:
            return
        if "started new containerd process" not in log and "starting managed containerd" not in log:
            raise RuntimeError("dockerd did not start a managed containerd (system containerd in use?):\n" + log[-3000:])
        kids = [k for k in _children(self.pid) if os.path.basename((_cmdline(k) or [""])[0]) == "containerd"]
        for k in kids:
            if any(self.exec_root in a for a in _cmdline(k)):
                self.managed_ctd_pid = k
        if not self.managed_ctd_pid:
            raise RuntimeError("no containerd child of dockerd %d under %s (children: %s)"
                               % (self.pid, self.exec_root, [(k, _cmdline(k)) for k in _children(self.pid)]))
        self.containerd_sock = os.path.join(self.exec_root, "containerd", "containerd.sock")
        if not os.path.exists(self.containerd_sock):
            raise RuntimeError("managed containerd socket %s missing" % self.containerd_sock)

    def stop(self) -> None:
        """Stop dockerd (by our PID), then its containerd, unmount leftovers below data-root/exec-root."""
        if self.proc is not None:
            stop_pid(self.pid, self.proc, timeout=45)
            self.proc = None
        if self.managed_ctd_pid and _pid_alive(self.managed_ctd_pid) \
                and any(self.exec_root in a for a in _cmdline(self.managed_ctd_pid)):
            stop_pid(self.managed_ctd_pid, None, timeout=15)
        self.managed_ctd_pid = 0
        if self.ctd_proc is not None:
            stop_pid(self.ctd_proc.pid, self.ctd_proc, timeout=15)
            self.ctd_proc = None
        if self.base:
            # after a crash, containerd shims (and the containers below them) of OUR containerd can survive;
            # they name our private socket on their command line.
            for shim in _procs_referencing(self.base + "/"):
                for kid in reversed(_descendants(shim)):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(kid, signal.SIGKILL)
                stop_pid(shim, None, timeout=10)
            self.unmounted += unmount_below(self.data_root, self.base)

    def cleanup(self) -> None:
        """stop() and remove the runtime dir (not the data-root)."""
        self.stop()
        if self.base and not mounts_below(self.base):
            shutil.rmtree(self.base, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ---------------------------------------------------------------- use
    def docker(self, *args: str, check: bool = True, timeout: float = 300, input: bytes | str | None = None,
               text: bool = True) -> subprocess.CompletedProcess[Any]:
        """Run the docker CLI against this daemon."""
        e = dict(os.environ)
        e.update(self.env)
        p = subprocess.run([need("docker"), *args], capture_output=True, timeout=timeout, env=e, input=input,
                           text=text)
        if check and p.returncode != 0:
            raise AssertionError("docker %s failed (rc=%d)\nstdout: %s\nstderr: %s\ndockerd log tail:\n%s" % (
                " ".join(args), p.returncode, str(p.stdout)[-2000:], str(p.stderr)[-3000:], self.log_tail(3000)))
        return p

    def _request(self, method: str, path: str, timeout: float = 60) -> tuple[int, bytes]:
        c = _UnixHTTPConnection(self.sock, timeout=timeout)
        try:
            c.request(method, path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def api(self, path: str, method: str = "GET") -> Any:
        """Engine API call (JSON) over the private socket, e.g. api('/images/json?all=1')."""
        status, body = self._request(method, "/%s%s" % (self.API, path))
        if status >= 300:
            raise AssertionError("API %s %s -> %d: %s" % (method, path, status, body[:2000]))
        return json.loads(body) if body else None

    def images_cli(self, *extra: str) -> list[dict[str, Any]]:
        """`docker images --no-trunc --format '{{json .}}'` rows."""
        out = self.docker("images", "--no-trunc", "--format", "{{json .}}", *extra).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    @staticmethod
    def _tail(path: str, n: int = 4000) -> str:
        try:
            with open(path, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - n))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 4000) -> str:
        """The end of dockerd's log, without the gRPC connection chatter."""
        text = self._tail(self.log_path, 50 * n)
        lines = [ln for ln in text.splitlines() if "module=grpc" not in ln]
        return "\n".join(lines)[-n:]


# --------------------------------------------------------------------------------------------- registry
def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Registry:
    """docker-registry (distribution 2.8) on a free 127.0.0.1 port with a temp storage dir; stopped by PID."""

    def __init__(self, storage: str | os.PathLike[str] | None = None):
        self._storage = str(storage) if storage else None
        self.base = ""
        self.addr = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Registry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        reg = need("docker-registry")
        self.base = tempfile.mkdtemp(prefix="dyreg-", dir="/tmp")
        storage = self._storage or os.path.join(self.base, "data")
        os.makedirs(storage, exist_ok=True)
        for _attempt in range(3):
            self.addr = "127.0.0.1:%d" % free_port()
            cfg = os.path.join(self.base, "config.yml")
            with open(cfg, "w") as f:
                f.write("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n"
                        "  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n"
                        % (storage, self.addr))
            env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
            with open(os.path.join(self.base, "registry.log"), "ab") as log:
                self.proc = subprocess.Popen([reg, "serve", cfg], stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True, env=env)
            for _ in range(150):
                if self.proc.poll() is not None:
                    break
                try:
                    with urllib.request.urlopen("http://%s/v2/" % self.addr, timeout=2) as r:
                        if r.status == 200:
                            return
                except OSError:
                    pass
                time.sleep(0.1)
            self.stop()
        raise RuntimeError("docker-registry did not start: %s" % Dockerd._tail(os.path.join(self.base,
                                                                                             "registry.log")))

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid, self.proc, timeout=15)
            self.proc = None
        if self.base and not self._storage:
            shutil.rmtree(self.base, ignore_errors=True)

    def url(self, path: str = "/v2/") -> str:
        return "http://%s%s" % (self.addr, path)

    def get_json(self, path: str, accept: str | None = None) -> Any:
        req = urllib.request.Request(self.url(path))
        if accept:
            req.add_header("Accept", accept)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())


# --------------------------------------------------------------------------------------------- archives
def read_tar_members(path: str | os.PathLike[str]) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path, "r:*") as t:
        return {m.name.rstrip("/"): m for m in t.getmembers()}


def layer_digests_in_save(path: str | os.PathLike[str]) -> dict[str, str]:
    """member name -> sha256 of its content for every regular-file layer.tar (also `<hex>.tar`) of a docker save."""
    out = {}
    with tarfile.open(path, "r:*") as t:
        for m in t:
            if m.isfile() and (m.name.endswith("/layer.tar") or m.name.endswith(".tar")):
                f = t.extractfile(m)
                assert f is not None
                out[m.name] = hash_stream(f)[0]
    return out


def gunzip_file(path: str | os.PathLike[str]) -> bytes:
    with gzip.open(path, "rb") as f:
        return f.read()


# --------------------------------------------------------------------------------------------- listings / saves
def loaded_refs(output: str | bytes) -> list[str]:
    """Names/IDs from `Loaded image: X` / `Loaded image ID: X` lines (docker load and dockyard load)."""
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    out = []
    for line in output.splitlines():
        line = line.strip()
        for prefix in ("Loaded image ID: ", "Loaded image: "):
            if line.startswith(prefix):
                out.append(line[len(prefix):].strip())
                break
    return out


TAR_TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.LNKTYPE: "hardlink",
             tarfile.SYMTYPE: "symlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block",
             tarfile.DIRTYPE: "dir", tarfile.FIFOTYPE: "fifo", tarfile.CONTTYPE: "file"}

#: paths created by Docker's per-container -init layer (+ their parents): not part of the image
INIT_LAYER_PATHS = {".dockerenv", "dev/console", "dev/pts", "dev/shm", "etc/hostname", "etc/hosts",
                    "etc/resolv.conf", "etc/mtab", "proc", "sys"}
INIT_LAYER_PARENTS = {"dev", "etc"}


def tar_listing(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Listing of a tar in the oracle's `export_listing` format (path, type, mode, uid, gid, mtime, size+sha256,
    target, link_target, rdev, xattrs)."""
    entries = []
    with open(path, "rb") as fobj, tarfile.open(fileobj=fobj, mode="r|", errors="surrogateescape") as tf:
        for m in tf:
            e: dict[str, Any] = {}
            try:
                m.name.encode("utf-8")
                e["path"] = m.name
            except UnicodeEncodeError:
                b = m.name.encode("utf-8", "surrogateescape")
                e["path"], e["path_hex"] = b.decode("utf-8", "backslashreplace"), b.hex()
            e["type"] = TAR_TYPES.get(m.type, "typeflag-%r" % m.type)
            e["mode"] = "%04o" % (m.mode & 0o7777)
            e["uid"], e["gid"] = m.uid, m.gid
            e["mtime"] = int(m.mtime) if float(m.mtime).is_integer() else m.mtime
            if e["type"] == "file":
                e["size"] = m.size
                f = tf.extractfile(m)
                assert f is not None
                e["sha256"] = hash_stream(f)[0]
            elif e["type"] == "symlink":
                e["target"] = m.linkname
            elif e["type"] == "hardlink":
                e["link_target"] = m.linkname
            elif e["type"] in ("char", "block"):
                e["rdev"] = [m.devmajor, m.devminor]
            xa = {k[len("SCHILY.xattr."):]: v for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            if xa:
                e["xattrs"] = {k: {"hex": v.encode("utf-8", "surrogateescape").hex()} for k, v in sorted(xa.items())}
            entries.append(e)
    return entries


_EXPORT_KEYS = ("type", "mode", "uid", "gid", "size", "sha256", "target", "link_target", "rdev", "path_hex")


def compare_export(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> list[str]:
    """Differences between a `docker export` listing and the oracle's export_listing (init-layer entries and
    volatile mtimes are ignored; xattrs compared by hex value)."""

    def key(e: dict[str, Any]) -> str:
        return e["path"].rstrip("/")

    def relevant(e: dict[str, Any]) -> bool:
        return not e.get("init_layer") and key(e) not in INIT_LAYER_PATHS

    exp = {key(e): e for e in expected if relevant(e)}
    act = {key(e): e for e in actual if relevant(e)}
    diffs = []
    for p in sorted(set(exp) - set(act)):
        # `dev`/`etc` may exist in an export only because the -init layer created files in them
        if p in INIT_LAYER_PARENTS and not any(q.startswith(p + "/") for q in exp):
            continue
        diffs.append("missing in export: %r" % p)
    for p in sorted(set(act) - set(exp)):
        diffs.append("unexpected in export: %r (%s)" % (p, act[p]["type"]))
    for p in sorted(set(exp) & set(act)):
        e, a = exp[p], act[p]
        for k in _EXPORT_KEYS:
            if e.get(k) != a.get(k):
                diffs.append("%r: %s expected %r, got %r" % (p, k, e.get(k), a.get(k)))
        if "mtime" not in e.get("volatile", []) and e.get("mtime") != a.get("mtime"):
            diffs.append("%r: mtime expected %r, got %r" % (p, e.get("mtime"), a.get("mtime")))
        ex = {k: v["hex"] for k, v in (e.get("xattrs") or {}).items()}
        ax = {k: v["hex"] for k, v in (a.get("xattrs") or {}).items()}
        if ex != ax:
            diffs.append("%r: xattrs expected %r, got %r" % (p, ex, ax))
    return diffs


class SaveTar:
    """A docker-save tarball opened for checks: members, symlink resolution, layer hashes."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        self.members: dict[str, tarfile.TarInfo] = {}
        self.order: list[str] = []
        self.data: dict[str, bytes] = {}  # small non-layer files
        self.sha: dict[str, str] = {}  # every regular file
        with tarfile.open(self.path, "r:*") as t:
            for m in t:
                name = m.name.rstrip("/")
                if name.startswith("./"):
                    name = name[2:]
                self.members[name] = m
                self.order.append(name)
                if m.isfile():
                    f = t.extractfile(m)
                    assert f is not None
                    keep = m.size <= 1 << 20 and not name.endswith(".tar")
                    buf: list[bytes] | None = [] if keep else None
                    self.sha[name] = hash_stream(f, buf)[0]
                    if buf is not None:
                        self.data[name] = b"".join(buf)

    def json(self, name: str) -> Any:
        return json.loads(self.data[name])

    def resolve(self, name: str) -> str:
        """Follow (relative) symlinks inside the archive to a regular member."""
        seen = set()
        while name in self.members and self.members[name].issym():
            if name in seen:
                raise AssertionError("symlink loop at %s" % name)
            seen.add(name)
            name = os.path.normpath(os.path.join(os.path.dirname(name), self.members[name].linkname))
        return name

    def kinds(self) -> dict[str, str]:
        out = {}
        for n, m in self.members.items():
            out[n] = "dir" if m.isdir() else "symlink" if m.issym() else "file" if m.isfile() else "other"
        return out


def tree_listing(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Listing of an extracted rootfs in the export_listing format; hard links show as what they link to."""
    import stat as _stat

    out = []
    rootb = os.fsencode(root)
    for dp, dn, fn in os.walk(rootb):
        for n in sorted(dn) + sorted(fn):
            full = os.path.join(dp, n)
            relb = os.path.relpath(full, rootb)
            st = os.lstat(full)
            e: dict[str, Any] = {}
            try:
                e["path"] = relb.decode("utf-8")
            except UnicodeDecodeError:
                e["path"], e["path_hex"] = relb.decode("utf-8", "backslashreplace"), relb.hex()
            e.update(mode="%04o" % _stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, mtime=int(st.st_mtime))
            m = st.st_mode
            if _stat.S_ISREG(m):
                e.update(type="file", size=st.st_size, sha256=sha256_file(full))
            elif _stat.S_ISDIR(m):
                e["type"] = "dir"
            elif _stat.S_ISLNK(m):
                e.update(type="symlink", target=os.readlink(full).decode("utf-8", "surrogateescape"))
            elif _stat.S_ISCHR(m) or _stat.S_ISBLK(m):
                e.update(type="char" if _stat.S_ISCHR(m) else "block", rdev=[os.major(st.st_rdev), os.minor(st.st_rdev)])
            elif _stat.S_ISFIFO(m):
                e["type"] = "fifo"
            else:
                e["type"] = "socket"
            try:
                names = os.listxattr(full, follow_symlinks=False)
            except OSError:
                names = []
            if names:
                e["xattrs"] = {k: {"hex": os.getxattr(full, k, follow_symlinks=False).hex()} for k in sorted(names)}
            out.append(e)
    return out


def flatten_hardlinks(listing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turn tar hardlink entries into what they link to (as a directory walk sees them)."""
    by_path = {e["path"].rstrip("/"): e for e in listing}
    out = []
    for e in listing:
        e = dict(e)
        if e["type"] == "hardlink":
            t = by_path[e.pop("link_target").rstrip("/")]
            for k in ("type", "sha256", "size", "target", "rdev"):
                if k in t:
                    e[k] = t[k]
        out.append(e)
    return out


# --------------------------------------------------------------------------------------------- networking
DOCKER0_LOCK = "/tmp/dockyard-tests-docker0.lock"


@contextlib.contextmanager
def docker0_lock() -> Any:
    """Hold flock(/tmp/dockyard-tests-docker0.lock) for a test that uses docker0 / 172.17.0.0/16 or starts a
    dockerd with its bridge enabled (wrap it in a fixture; every such test serialises on it)."""
    import fcntl

    fd = os.open(DOCKER0_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def iptables_lines() -> list[str]:
    """iptables-save's rule and chain lines (counters stripped), for leak checks by the test's own names."""
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return [ln.split(" [", 1)[0] if ln.startswith(":") else ln for ln in out.splitlines()
            if ln and not ln.startswith("#")]
