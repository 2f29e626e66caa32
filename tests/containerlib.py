"""Shared helpers for the container test modules (test_containers_*.py).

Everything drives the real CLI in subprocesses, with a per-test ``--exec-root`` (runtime state, bundles and
runc's state dir live there, never in /run/dockyard).  Expected values come from the fixtures, the oracles
and a real dockerd -- never from dockyard itself.

- ``Dy``: the CLI bound to one data-root + exec-root (text results; ``check=True`` fails the test with
  both streams);
- ``leftovers``: everything a container operation must not leave behind (mounts below the data-root,
  runc containers in the exec-root, staging dirs, bundles, processes naming the exec-root);
- ``layer_entries`` / ``save_top_layer``: the tar headers of a layer (in order) for comparisons with what
  Docker wrote;
- ``DIFF_SCRIPT``: the file operations run in a dockyard container and in a docker container (acceptance 2).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import stat
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

import peers
from conftest import FIXTURES, _env, dy_cmd, mounts_below, show

EDGE_TAR = FIXTURES / "docker-save" / "fx-edge.docker.tar"
EDGE_REF = "fx-edge:1"
HEX64 = re.compile(r"^[a-f0-9]{64}$")


def edge_oracle() -> dict[str, Any]:
    return peers.oracle("fx-edge.docker.tar")["images"][0]


def edge_id() -> str:
    return edge_oracle()["id"]


# ------------------------------------------------------------------------------------------------ the CLI
class Dy:
    """``python -m dockyard --data-root ROOT --exec-root EXEC ...``"""

    def __init__(self, root: os.PathLike | str, exec_root: os.PathLike | str):
        self.root = Path(root)
        self.exec_root = Path(exec_root)

    def cmd(self, *args: Any) -> list[str]:
        return dy_cmd("--exec-root", self.exec_root, *args, root=self.root)

    def __call__(self, *args: Any, check: bool = True, timeout: float = 120, input: str | bytes | None = None,
                 binary: bool = False) -> subprocess.CompletedProcess:
        data = input.encode() if isinstance(input, str) else input
        try:
            p = subprocess.run(self.cmd(*args), input=data, stdin=None if data is not None else subprocess.DEVNULL,
                               capture_output=True, timeout=timeout, env=_env(), cwd="/")
        except subprocess.TimeoutExpired as e:
            pytest.fail("dockyard %s timed out after %ss\nstdout:\n%r\nstderr:\n%r" % (
                " ".join(map(str, args)), timeout, (e.stdout or b"")[-2000:], (e.stderr or b"")[-2000:]),
                pytrace=False)
        if binary:
            res = subprocess.CompletedProcess(p.args, p.returncode, p.stdout, p.stderr.decode("utf-8", "replace"))
        else:
            res = subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode("utf-8", "replace"),
                                              p.stderr.decode("utf-8", "replace"))
        assert "Traceback (most recent call last)" not in str(res.stderr), show(res)
        if check and res.returncode != 0:
            pytest.fail(show(res), pytrace=False)
        return res

    def popen(self, *args: Any, **kw: Any) -> subprocess.Popen:
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(self.cmd(*args), env=_env(), cwd="/", **kw)

    # ---------------------------------------------------------------- conveniences
    def inspect(self, ref: str) -> dict[str, Any]:
        p = self("inspect", ref)
        data = json.loads(p.stdout)
        assert isinstance(data, list) and len(data) == 1, show(p)
        return data[0]

    def ps(self, *extra: str) -> list[dict[str, Any]]:
        out = self("ps", "-a", "--no-trunc", "--format", "json", *extra).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def load_edge(self) -> str:
        self("load", "-q", "-i", EDGE_TAR)
        return edge_id()

    def cid(self, ref: str) -> str:
        return self.inspect(ref)["Id"]


# ------------------------------------------------------------------------------------------------ store paths
def img_root(root: os.PathLike | str) -> Path:
    return Path(root) / "image" / "overlay2"


def mount_record(root: os.PathLike | str, cid: str) -> Path:
    return img_root(root) / "layerdb" / "mounts" / cid


def read_nonl(p: os.PathLike | str) -> str:
    with open(p, encoding="utf-8") as f:
        return f.read()


def container_layer_paths(root: os.PathLike | str, cid: str) -> dict[str, Path]:
    """Paths of a container's records (from its layerdb/mounts entry)."""
    md = mount_record(root, cid)
    mid = read_nonl(md / "mount-id")
    return {"mounts": md, "mount_id": Path(mid), "rw": Path(root) / "overlay2" / mid,
            "init": Path(root) / "overlay2" / (mid + "-init"), "cdir": Path(root) / "containers" / cid}


def overlay_dir_names(root: os.PathLike | str) -> set[str]:
    d = Path(root) / "overlay2"
    return {n for n in os.listdir(d) if n != "l"} if d.is_dir() else set()


def link_names(root: os.PathLike | str) -> set[str]:
    d = Path(root) / "overlay2" / "l"
    return set(os.listdir(d)) if d.is_dir() else set()


# ------------------------------------------------------------------------------------------------ leftovers
def runc_list(exec_root: os.PathLike | str) -> list[dict[str, Any]]:
    """Containers runc knows under <exec-root>/runtime (the state dir dockyard gives it)."""
    state = Path(exec_root) / "runtime"
    if not state.is_dir():
        return []
    p = subprocess.run([peers.need("runc"), "--root", str(state), "list", "--format", "json"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, "runc list failed: %s" % p.stderr
    out = json.loads(p.stdout or "null") or []
    return out


def procs_naming(needle: str) -> list[tuple[int, list[str]]]:
    """(pid, argv) of live processes whose command line mentions needle (our exec-root / data-root)."""
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        argv = peers._cmdline(int(d))
        if any(needle in a for a in argv) and peers._pid_alive(int(d)):
            out.append((int(d), argv))
    return out


def staging_leftovers(root: os.PathLike | str) -> list[str]:
    """layerdb/tmp/*, containers/.tmp-*, containers/*-removing, overlay2/*-removing, <root>/tmp/* entries."""
    root = Path(root)
    out = []
    for d, pred in ((img_root(root) / "layerdb" / "tmp", lambda n: True),
                    (root / "containers", lambda n: n.startswith(".tmp-") or n.endswith("-removing")),
                    (root / "overlay2", lambda n: n.endswith("-removing") or n.startswith(".")),
                    (img_root(root) / "layerdb" / "mounts", lambda n: not HEX64.match(n)),
                    (img_root(root) / "layerdb" / "sha256", lambda n: not HEX64.match(n)),
                    (root / "tmp", lambda n: True)):
        if d.is_dir():
            out += [str(d / n) for n in sorted(os.listdir(d)) if pred(n)]
    return out


def leftovers(root: os.PathLike | str, exec_root: os.PathLike | str, *, running_ok: tuple[str, ...] = ()) -> dict:
    """What must be gone once no container runs: non-empty values are leaks."""
    res: dict[str, Any] = {}
    m = mounts_below(root)
    if m:
        res["mounts below the data-root"] = m
    rl = [c for c in runc_list(exec_root) if c.get("id") not in running_ok]
    if rl:
        res["runc containers"] = [(c.get("id"), c.get("status"), c.get("pid")) for c in rl]
    st = staging_leftovers(root)
    if st:
        res["staging leftovers"] = st
    bundles = [n for n in (os.listdir(exec_root) if os.path.isdir(exec_root) else [])
               if HEX64.match(n) and n not in running_ok]
    if bundles:
        res["bundles left in the exec-root"] = bundles
    pr = [p for p in procs_naming(str(exec_root)) if not any(r in " ".join(p[1]) for r in running_ok)]
    if pr:
        res["processes naming the exec-root"] = pr
    return res


def container_processes(cid: str) -> list[int]:
    """PIDs whose cgroup path names the container (runc puts them in .../dockyard/<cid> or similar)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cgroup" % d) as f:
                if cid in f.read() and peers._pid_alive(int(d)):
                    out.append(int(d))
        except OSError:
            pass
    return out


def wait_for(pred, timeout: float = 20, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ------------------------------------------------------------------------------------------------ tar listings
_TYPES = peers.TAR_TYPES


def tar_entries(data: bytes | os.PathLike | str) -> list[dict[str, Any]]:
    """Ordered tar headers: name, type, mode (full header value, type bits included), uid, gid, size, linkname,
    sha256 (regular files), devmajor/minor, SCHILY.xattr.* and mtime."""
    src = {"fileobj": io.BytesIO(data)} if isinstance(data, (bytes, bytearray)) else {"name": str(data)}
    out = []
    with tarfile.open(mode="r:", **src) as tf:
        for m in tf:
            e: dict[str, Any] = {"name": m.name, "type": _TYPES.get(m.type, repr(m.type)), "mode": "%04o" % (m.mode & 0o7777),
                                 "mode_type_bits": "%o" % (m.mode >> 12),
                                 "uid": m.uid, "gid": m.gid, "size": m.size, "mtime": int(m.mtime)}
            if m.issym() or m.islnk():
                e["linkname"] = m.linkname
            if m.isfile():
                f = tf.extractfile(m)
                assert f is not None
                e["sha256"] = "sha256:" + hashlib.sha256(f.read()).hexdigest()
            if m.ischr() or m.isblk():
                e["rdev"] = [m.devmajor, m.devminor]
            xa = {k: v for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            if xa:
                e["xattrs"] = xa
            out.append(e)
    return out


def save_top_layer(save_path: os.PathLike | str) -> tuple[bytes, dict[str, Any]]:
    """(layer tar bytes, image config) of the (only) image of a docker save: its TOP layer."""
    with tarfile.open(str(save_path), "r:*") as t:
        members = {m.name.rstrip("/").removeprefix("./"): m for m in t.getmembers()}

        def read(name: str) -> bytes:
            seen = set()
            while members[name].issym():
                assert name not in seen
                seen.add(name)
                name = os.path.normpath(os.path.join(os.path.dirname(name), members[name].linkname))
            f = t.extractfile(members[name])
            assert f is not None
            return f.read()

        manifest = json.loads(read("manifest.json"))
        assert len(manifest) == 1, manifest
        cfg = json.loads(read(manifest[0]["Config"]))
        layer = read(manifest[0]["Layers"][-1])
    assert hashlib.sha256(layer).hexdigest() == cfg["rootfs"]["diff_ids"][-1].split(":")[1], \
        "the top layer.tar in the save does not hash to the config's last diff_id"
    return layer, cfg


def compare_entries(actual: list[dict[str, Any]], expected: list[dict[str, Any]], *, keys: tuple[str, ...],
                    mtime_before: float | None = None, limit: int = 60) -> list[str]:
    """Differences between two ordered tar listings (matched by name).  mtime is compared only for entries
    whose expected mtime is older than mtime_before (i.e. not the time of the run)."""
    def k(e):
        return e["name"].rstrip("/")

    exp = {k(e): e for e in expected}
    act = {k(e): e for e in actual}
    diffs = []
    for n in sorted(set(exp) - set(act)):
        diffs.append("missing: %r %s" % (n, _short(exp[n])))
    for n in sorted(set(act) - set(exp)):
        diffs.append("unexpected: %r %s" % (n, _short(act[n])))
    for n in sorted(set(exp) & set(act)):
        e, a = exp[n], act[n]
        for key in keys:
            if e.get(key) != a.get(key):
                diffs.append("%r: %s expected %r, got %r" % (n, key, e.get(key), a.get(key)))
        if mtime_before is not None and e["mtime"] < mtime_before and e["mtime"] != a["mtime"]:
            diffs.append("%r: mtime expected %r (not a time of the run), got %r" % (n, e["mtime"], a["mtime"]))
        if len(diffs) >= limit:
            diffs.append("...")
            break
    if not diffs:
        eo = [k(e) for e in expected]
        ao = [k(e) for e in actual]
        if eo != ao:
            for i, (x, y) in enumerate(zip(eo, ao, strict=False)):
                if x != y:
                    diffs.append("order differs at entry %d: expected %r, got %r" % (i, x, y))
                    break
    return diffs


def _short(e: dict[str, Any]) -> str:
    return "(%s)" % ", ".join("%s=%s" % (k, e[k]) for k in ("type", "mode", "uid", "gid", "size", "linkname")
                              if k in e)


def mode_of(p: os.PathLike | str) -> str:
    return "%04o" % stat.S_IMODE(os.lstat(p).st_mode)


# ------------------------------------------------------------------------------------------------ acceptance 2
#: run in a dockyard container AND a docker container of fx-edge:1 (busybox sh); every kind of change
DIFF_SCRIPT = r"""
set -e
# new files and dirs
mkdir -p /new/dir/sub; echo hello > /new/dir/sub/f; echo top > /new/file; mkdir /new/empty
# modify a lower file, append to another, touch a third (content unchanged, metadata changed)
echo modified >> /wh/keep
echo more >> "/names/with space"
# delete a lower file and a lower dir
rm /wh/file-to-delete
rm -rf /wh/keepdir
# remove a dir and recreate it (opaque)
rm -rf /wh/recreate-later && mkdir /wh/recreate-later && echo again2 > /wh/recreate-later/fresh
# a lower file becomes a dir, a lower dir becomes a symlink
rm /wh/dir-to-file && mkdir /wh/dir-to-file && echo in > /wh/dir-to-file/inner
rm -rf /wh/sym-to-dir && ln -s keep /wh/sym-to-dir
# hard links: between new files, and to a lower file
ln /new/file /new/hard-new
ln /links/dir1/target /new/hard-lower
# symlinks
ln -s /new/file /new/sym-abs
ln -s ../wh/keep /new/sym-rel
ln -s /does/not/exist /new/sym-dangling
# chmod / chown on lower and new entries
chmod 0700 /home
chmod 4755 /perms/uid-65534
chown 1000:1000 /new/file
chown 123:456 /etc/group
chown -h 7:8 /new/sym-rel
# fifo, setuid and setgid files
mkfifo /new/fifo
echo s > /new/setuid; chmod 4755 /new/setuid
echo g > /new/setgid; chmod 2711 /new/setgid
# a file deleted in a dir that is otherwise unchanged
rm /links/dir2/lone-file
echo done
"""

#: run afterwards in containers of the committed images: a deterministic picture of every changed path
CHECK_SCRIPT = r"""
for p in /new /new/dir /new/dir/sub /new/dir/sub/f /new/file /new/empty /new/hard-new /new/hard-lower \
         /new/sym-abs /new/sym-rel /new/sym-dangling /new/fifo /new/setuid /new/setgid /wh/keep \
         "/names/with space" /wh/file-to-delete /wh/keepdir /wh/recreate-later /wh/recreate-later/fresh \
         /wh/recreate-later/again /wh/dir-to-file /wh/dir-to-file/inner /wh/sym-to-dir /home /perms/uid-65534 \
         /etc/group /links/dir2/lone-file /links/dir1/target; do
  if [ -e "$p" ] || [ -L "$p" ]; then
    stat -c '%n %F %a %u %g %s %h' "$p"
    if [ -L "$p" ]; then echo "  -> $(readlink "$p")"; elif [ -f "$p" ]; then echo "  md5 $(md5sum < "$p")"; fi
  else
    echo "$p absent"
  fi
done
ls -A /wh/recreate-later /wh/dir-to-file /new
"""
