"""Shared helpers for the fault-injection modules (fsck corruption, crash injection, disk full, concurrency).

Everything here drives the real CLI in subprocesses (``python -m dockyard --data-root ROOT ...``) the way
``conftest.run_dy`` does, but adds what the fault tests need and conftest lacks:

- ``dy`` with extra environment (``DOCKYARD_CRASH_AT`` / ``DOCKYARD_CRASH_LOG``), in its own process group,
  and ``run_killed`` (SIGKILL at a boundary or after a delay, then wait until every process of the group is gone);
- ``fsck_report``: ``fsck --format json`` parsed, with a guard against tracebacks;
- oracles that do not come from dockyard: ``fixture_images`` reads a docker-save tar / OCI layout (image ID =
  sha256 of the config bytes, RepoTags, diff_ids -> chainIDs), ``StoreView`` reads a data-root with plain
  Python (no dockyard code), ``structural_problems`` is an independent consistency check of a data-root
  (links, lower files of layers AND containers, layerdb files, chainIDs, references, leftovers);
- data-root templates (one loaded by dockyard, the Docker-written fixture) built once per session and copied
  with ``cp -a`` for each case;
- per-image file sets (``image_paths``) to prove "the files of an intact image did not change";
- ``prefix_save``: a docker-save tar of a new image made of the bottom layers of a fixture image (a store that
  already holds part of a chain);
- container leftovers: ``container_ids_in`` (every trace of a container in a data-root), ``runtime_leftovers``
  (mounts below the data-root, ``runc --root <exec-root>/runtime list``, bundles, processes naming the exec-root or
  in a container's cgroup), ``force_cleanup`` (kills only what a test's own containers and exec-root hold).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURES, _env, _sha256_file, _xattrs, dy_cmd, mounts_below, show, umount_below
from peers import group_pids

SAVE = FIXTURES / "docker-save"
OCI = FIXTURES / "oci"
DOCKER_DATAROOT_TGZ = FIXTURES / "dataroot" / "dataroot-docker20.tar.gz"

#: what a dockyard-made data-root is built from (in this order), for the corruption corpus
DOCKYARD_ROOT_INPUTS = (SAVE / "fx-edge.docker.tar", SAVE / "fx-shared.docker.tar", SAVE / "fx-tags.docker.tar")

HEX64 = re.compile(r"^[a-f0-9]{64}$")
LINK_RE = re.compile(r"^[A-Z2-7]{26}$")


# ------------------------------------------------------------------------------------------------ running
def dy(root: os.PathLike | str, *args: Any, env: dict[str, str] | None = None, timeout: float = 180,
       input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run the CLI (text output, never raises on a non-zero exit). Its own session, so nothing it forks
    outlives it unnoticed."""
    e = _env()
    e.pop("DOCKYARD_CRASH_AT", None)
    e.pop("DOCKYARD_CRASH_LOG", None)
    if env:
        e.update(env)
    p = subprocess.run(dy_cmd(*args, root=root), input=input, stdin=None if input is not None else subprocess.DEVNULL,
                       capture_output=True, env=e, cwd="/", timeout=timeout, start_new_session=True)
    return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode("utf-8", "replace"),
                                       p.stderr.decode("utf-8", "replace"))


def dy_ok(root: os.PathLike | str, *args: Any, **kw: Any) -> subprocess.CompletedProcess:
    p = dy(root, *args, **kw)
    assert p.returncode == 0, show(p)
    assert "Traceback (most recent call last)" not in p.stderr, show(p)
    return p


def no_traceback(p: subprocess.CompletedProcess) -> None:
    assert "Traceback (most recent call last)" not in p.stderr + p.stdout, show(p)
    assert "internal error" not in p.stderr, show(p)


def fsck_report(root: os.PathLike | str, *flags: str) -> tuple[int, dict]:
    """``fsck [flags] --format json`` -> (rc, report)."""
    p = dy(root, "fsck", *flags, "--format", "json")
    no_traceback(p)
    try:
        rep = json.loads(p.stdout)
    except ValueError:
        raise AssertionError("fsck --format json did not print JSON\n" + show(p)) from None
    assert p.returncode in (0, 1), show(p)
    assert (p.returncode == 0) == (not rep["findings"]), "fsck rc does not match its findings\n" + show(p)
    return p.returncode, rep


def fmt_findings(rep: dict) -> str:
    lines = ["%s %s %s (repairable=%s): %s" % (f["severity"], f["code"], f["path"], f["repairable"], f["message"])
             for f in rep.get("findings", [])]
    if rep.get("damaged_images"):
        lines.append("damaged_images: %s" % json.dumps(rep["damaged_images"]))
    return "\n".join(lines) or "(no findings)"


@dataclass
class KillResult:
    returncode: int
    killed: bool                 # died of SIGKILL (from the crash hook or from us)
    stdout: str
    stderr: str
    boundaries: list[str] = field(default_factory=list)
    stragglers: list[int] = field(default_factory=list)   # processes of its group alive after it died


def run_killed(root: os.PathLike | str, *args: Any, crash_at: int | None = None, delay: float | None = None,
               log: os.PathLike | str | None = None, timeout: float = 120,
               env: dict[str, str] | None = None) -> KillResult:
    """Run a dockyard command that dies: at its ``crash_at``-th write boundary (its own SIGKILL via
    DOCKYARD_CRASH_AT) or ``delay`` seconds after it started (our SIGKILL to the dockyard process only,
    as a crash of that process would). Afterwards waits up to 3 s for every process of its group to be
    gone (workers die with their parent by PR_SET_PDEATHSIG); anything still alive is reported in
    ``stragglers`` and then killed -- by its process group, which this function created."""
    e = _env()
    e.pop("DOCKYARD_CRASH_AT", None)
    e.pop("DOCKYARD_CRASH_LOG", None)
    if env:
        e.update(env)
    if crash_at is not None:
        e["DOCKYARD_CRASH_AT"] = str(crash_at)
    if log is not None:
        e["DOCKYARD_CRASH_LOG"] = str(log)
    p = subprocess.Popen(dy_cmd(*args, root=root), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=e, cwd="/", start_new_session=True)
    if delay is not None:
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError("dockyard %s hung (> %ss)" % (" ".join(map(str, args)), timeout)) from None
    stragglers: list[int] = []
    deadline = time.monotonic() + 60  # generous: the group normally goes at once; stragglers fail the test
    while True:
        left = group_pids(p.pid)
        if not left:
            break
        if time.monotonic() > deadline:
            stragglers = left
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            time.sleep(0.2)
            break
        time.sleep(0.02)
    res = KillResult(p.returncode, p.returncode == -signal.SIGKILL, out.decode("utf-8", "replace"),
                     err.decode("utf-8", "replace"), stragglers=stragglers)
    if log is not None and os.path.exists(log):
        res.boundaries = read_boundaries(log)
    return res


def read_boundaries(log: os.PathLike | str) -> list[str]:
    """Names of the boundaries in a DOCKYARD_CRASH_LOG, checking they are numbered 1..N."""
    names = []
    with open(log) as f:
        for i, line in enumerate(f, 1):
            n, _, name = line.rstrip("\n").partition(" ")
            assert int(n) == i, "crash log %s: line %d is numbered %s" % (log, i, n)
            names.append(name)
    return names


def count_boundaries(root: os.PathLike | str, *args: Any, logdir: os.PathLike | str) -> tuple[list[str],
                                                                                             subprocess.CompletedProcess]:
    """Dry run with DOCKYARD_CRASH_LOG: the boundaries the command passes (and its result)."""
    log = Path(logdir) / ("boundaries-%d.log" % time.monotonic_ns())
    p = dy(root, *args, env={"DOCKYARD_CRASH_LOG": str(log)})
    return (read_boundaries(log) if log.exists() else []), p


# ------------------------------------------------------------------------------------------------ data-roots
def clone_root(src: os.PathLike | str, dst: os.PathLike | str) -> Path:
    """Byte-exact copy (modes, owners, xattrs incl. trusted.*, device nodes, hard links)."""
    dst = Path(dst)
    assert not dst.exists(), dst
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst


def build_dockyard_root(dst: os.PathLike | str, inputs=DOCKYARD_ROOT_INPUTS) -> Path:
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for x in inputs:
        dy_ok(dst, "load", "-q", "-i", x)
    return dst


def extract_docker_root(dst: os.PathLike | str) -> Path:
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xzpf", str(DOCKER_DATAROOT_TGZ),
                    "-C", str(dst)], check=True)
    return dst


@pytest.fixture(scope="session")
def dockyard_template(tmp_path_factory) -> Path:
    """A data-root that dockyard loaded from fx-edge + fx-shared + fx-tags (do not modify: clone it)."""
    root = build_dockyard_root(tmp_path_factory.mktemp("tpl-dockyard") / "root")
    rc, rep = fsck_report(root, "--deep")
    assert rc == 0, "the freshly loaded template is not clean:\n" + fmt_findings(rep)
    assert not structural_problems(root, strict=True)
    return root


@pytest.fixture(scope="session")
def docker_template(tmp_path_factory) -> Path:
    """The Docker-written data-root fixture, extracted (do not modify: clone it)."""
    root = extract_docker_root(tmp_path_factory.mktemp("tpl-docker") / "root")
    rc, rep = fsck_report(root, "--deep")
    assert rc == 0, "the Docker-written fixture is not clean for dockyard:\n" + fmt_findings(rep)
    assert not structural_problems(root, strict=True), structural_problems(root, strict=True)
    return root


@pytest.fixture
def scratch(tmp_path):
    """A temp dir; every mount below it is lazily unmounted at teardown."""
    yield tmp_path
    umount_below(tmp_path)


# ------------------------------------------------------------------------------------------------ fixture oracle
def chain_of(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for i, d in enumerate(diff_ids):
        out.append(d if i == 0 else "sha256:" + hashlib.sha256((out[-1] + " " + d).encode()).hexdigest())
    return out


@dataclass(frozen=True)
class ImageSpec:
    id: str
    repo_tags: tuple[str, ...]
    diff_ids: tuple[str, ...]

    @property
    def chain_ids(self) -> list[str]:
        return chain_of(list(self.diff_ids))

    @property
    def top(self) -> str | None:
        c = self.chain_ids
        return c[-1] if c else None


def _familiar(tag: str) -> str:
    for p in ("docker.io/library/", "docker.io/"):
        if tag.startswith(p):
            return tag[len(p):]
    return tag


def fixture_images(path: os.PathLike | str) -> list[ImageSpec]:
    """Images in a docker-save tar or an OCI layout dir, read without dockyard (ID = sha256 of config bytes)."""
    path = Path(path)
    out = []
    if path.is_dir():  # OCI layout
        def blob(d: str) -> bytes:
            alg, hx = d.split(":", 1)
            return (path / "blobs" / alg / hx).read_bytes()
        index = json.loads((path / "index.json").read_text())
        stack = list(index["manifests"])
        while stack:
            desc = stack.pop(0)
            m = json.loads(blob(desc["digest"]))
            if "manifests" in m:
                stack.extend(m["manifests"])
                continue
            cfg_raw = blob(m["config"]["digest"])
            cfg = json.loads(cfg_raw)
            out.append(ImageSpec("sha256:" + hashlib.sha256(cfg_raw).hexdigest(), (),
                                 tuple(cfg["rootfs"]["diff_ids"])))
        return out
    with tarfile.open(path) as t:
        manifest = json.load(t.extractfile("manifest.json"))
        for item in manifest:
            raw = t.extractfile(item["Config"]).read()
            cfg = json.loads(raw)
            out.append(ImageSpec("sha256:" + hashlib.sha256(raw).hexdigest(),
                                 tuple(_familiar(x) for x in (item.get("RepoTags") or [])),
                                 tuple(cfg["rootfs"]["diff_ids"])))
    return out


# ------------------------------------------------------------------------------------------------ store view
def _rd(p: os.PathLike | str) -> bytes | None:
    try:
        with open(p, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _rt(p: os.PathLike | str) -> str | None:
    b = _rd(p)
    return None if b is None else b.decode("utf-8", "replace")


@dataclass
class StoreView:
    """A data-root read with plain Python (no dockyard code): what exists and what refers to what."""
    root: Path
    images: dict[str, list[str]] = field(default_factory=dict)           # image id -> chain ids (bottom first)
    bad_images: list[str] = field(default_factory=list)                 # content that does not hash / parse
    refs: dict[str, str] = field(default_factory=dict)                   # familiar ref -> image id
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)      # chain id -> {diff, parent, cache_id, size}
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)  # container id -> {image, mount_id, ...}

    @classmethod
    def read(cls, root: os.PathLike | str) -> StoreView:
        root = Path(root)
        v = cls(root)
        img = root / "image" / "overlay2"
        cdir = img / "imagedb" / "content" / "sha256"
        for n in sorted(os.listdir(cdir)) if cdir.is_dir() else []:
            if not HEX64.match(n):
                continue
            raw = _rd(cdir / n) or b""
            if hashlib.sha256(raw).hexdigest() != n:
                v.bad_images.append("sha256:" + n)
                continue
            try:
                v.images["sha256:" + n] = chain_of(json.loads(raw)["rootfs"]["diff_ids"])
            except (ValueError, KeyError, TypeError):
                v.bad_images.append("sha256:" + n)
        repos = _rt(img / "repositories.json")
        if repos:
            try:
                for refs in json.loads(repos).get("Repositories", {}).values():
                    v.refs.update(refs)
            except (ValueError, AttributeError):
                pass
        ldir = img / "layerdb" / "sha256"
        for n in sorted(os.listdir(ldir)) if ldir.is_dir() else []:
            if not HEX64.match(n):
                continue
            d = ldir / n
            v.layers["sha256:" + n] = {
                "diff": _rt(d / "diff"), "parent": _rt(d / "parent"), "cache_id": (_rt(d / "cache-id") or "").strip(),
                "size": _rt(d / "size"),
            }
        mdir = img / "layerdb" / "mounts"
        for n in sorted(os.listdir(mdir)) if mdir.is_dir() else []:
            cfg = _rt(root / "containers" / n / "config.v2.json")
            try:
                image = json.loads(cfg)["Image"] if cfg else None
            except (ValueError, KeyError):
                image = None
            v.containers[n] = {"image": image, "mount_id": _rt(mdir / n / "mount-id"),
                               "init_id": _rt(mdir / n / "init-id"), "parent": _rt(mdir / n / "parent")}
        return v

    def users_of(self, chain: str) -> list[str]:
        return sorted(i for i, chains in self.images.items() if chain in chains)

    def tags_of(self, image_id: str) -> list[str]:
        return sorted(r for r, i in self.refs.items() if i == image_id and "@" not in r)

    def container_images(self) -> set[str]:
        return {c["image"] for c in self.containers.values() if c["image"]}

    def cache_id(self, chain: str) -> str:
        return self.layers[chain]["cache_id"]

    def link(self, chain: str) -> str:
        return (_rt(self.root / "overlay2" / self.cache_id(chain) / "link") or "").strip()


def image_paths(view: StoreView, image_id: str) -> list[str]:
    """Relative path prefixes of everything that makes up an image: its config, metadata, and for every layer
    of its chain the layerdb dir, the overlay2 dir and its l/ link."""
    out = ["image/overlay2/imagedb/content/sha256/" + image_id[7:],
           "image/overlay2/imagedb/metadata/sha256/" + image_id[7:]]
    for chain in view.images[image_id]:
        out.append("image/overlay2/layerdb/sha256/" + chain[7:])
        info = view.layers.get(chain)
        if info and info["cache_id"]:
            out.append("overlay2/" + info["cache_id"])
            link = view.link(chain)
            if link:
                out.append("overlay2/l/" + link)
    return out


def under(path: str, prefixes: list[str]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def files_of(snap: dict[str, tuple], prefixes: list[str]) -> dict[str, tuple]:
    return {p: v for p, v in snap.items() if under(p, prefixes)}


def compare_files(before: dict[str, tuple], after: dict[str, tuple], *, allow_committed: bool = True,
                  limit: int = 30) -> list[str]:
    """Differences between two snapshot subsets. An added empty ``committed`` marker is allowed (Docker
    writes it into a layer's dir when a child layer is created on it)."""
    out = []
    counts = {"removed": 0, "added": 0, "changed": 0}
    for p in sorted(set(before) | set(after)):
        if p not in after:
            kind, line = "removed", "removed: %s %s" % (p, before[p][:2])
        elif p not in before:
            if allow_committed and p.endswith("/committed") and after[p][0] == "file" and after[p][4] == 0:
                continue
            kind, line = "added", "added:   %s %s" % (p, after[p][:2])
        elif before[p] != after[p]:
            kind, line = "changed", "changed: %s %s -> %s" % (p, before[p], after[p])
        else:
            continue
        counts[kind] += 1
        if len(out) < limit:
            out.append(line)
    if sum(counts.values()) > len(out):
        out.append("... (%d removed, %d added, %d changed in all)" % (counts["removed"], counts["added"],
                                                                    counts["changed"]))
    return out


def snapshot(root: os.PathLike | str) -> dict[str, tuple]:
    """conftest.store_snapshot's records (type, mode, uid, gid, size, sha256|target|rdev, xattrs) for everything
    under root, without dockyard's own lock file (not part of Docker's layout); a hard-linked file is hashed
    once (busybox has 269 links to one inode)."""
    rootb = os.fsencode(str(root))
    snap: dict[str, tuple] = {}
    hashes: dict[tuple, str] = {}
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
            ik = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if ik not in hashes:
                hashes[ik] = _sha256_file(os.fsdecode(full))
            rec = ("file", stat.S_IMODE(m), st.st_uid, st.st_gid, st.st_size, hashes[ik])
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
    snap.pop(".dockyard.lock", None)
    return snap


# ------------------------------------------------------------------------------------------------ independent check
def structural_problems(root: os.PathLike | str, *, strict: bool = True) -> list[str]:
    """An independent consistency check of a data-root (what dockerd needs to load and mount everything).

    Always: l/ links point to ``../<dir>/diff`` of an existing dir; every overlay2 dir with a ``link`` file names
    an l/ link that points back; every ``lower`` file (image layers AND container rw/init layers) lists l/ links
    that exist; layerdb dirs have valid diff/size/cache-id (+parent), their chainID recomputes, their overlay2 dir
    and parent exist; images hash to their names and their top layer exists; references and mount records
    point at things that exist. ``strict`` also rejects leftovers: staging dirs, ``-removing`` dirs, ``.tmp-``
    files, overlay2 dirs and layers nothing uses.
    """
    root = Path(root)
    probs: list[str] = []
    ov = root / "overlay2"
    ldir = ov / "l"
    img = root / "image" / "overlay2"
    v = StoreView.read(root)
    dirs = sorted(n for n in os.listdir(ov) if n != "l") if ov.is_dir() else []
    links = sorted(os.listdir(ldir)) if ldir.is_dir() else []
    for name in links:
        p = ldir / name
        if not p.is_symlink():
            probs.append("l/%s is not a symlink" % name)
            continue
        t = os.readlink(p)
        m = re.match(r"^\.\./([a-f0-9]{64}(?:-init)?)/diff$", t)
        if not m or not (ov / m.group(1) / "diff").is_dir():
            probs.append("l/%s -> %s: target missing or not ../<id>/diff" % (name, t))
        elif strict and (_rt(ov / m.group(1) / "link") or "").strip() != name:
            probs.append("l/%s -> %s but that dir's link file says %r" % (name, t, _rt(ov / m.group(1) / "link")))
    for d in dirs:
        link = _rt(ov / d / "link")
        if link is None:
            probs.append("overlay2/%s has no link file" % d)
        elif not LINK_RE.match(link):
            probs.append("overlay2/%s/link is invalid: %r" % (d, link))
        else:
            lp = ldir / link
            if not lp.is_symlink() or os.readlink(lp) != "../%s/diff" % d:
                probs.append("overlay2/%s/link names l/%s, which does not point back" % (d, link))
        lower = _rt(ov / d / "lower")
        if lower is not None:
            for item in lower.split(":"):
                if not item.startswith("l/") or not (ov / item).is_symlink() or not (ov / item).exists():
                    probs.append("overlay2/%s/lower names %s, which does not exist" % (d, item))
    used_cache: set[str] = set()
    for chain, info in v.layers.items():
        where = "layerdb/sha256/%s" % chain[7:]
        if not info["diff"] or not re.match(r"^sha256:[a-f0-9]{64}$", info["diff"]):
            probs.append("%s/diff is missing or invalid: %r" % (where, info["diff"]))
        if info["size"] is None or not re.match(r"^[0-9]+$", info["size"]):
            probs.append("%s/size is missing or invalid: %r" % (where, info["size"]))
        if not HEX64.match(info["cache_id"]):
            probs.append("%s/cache-id is missing or invalid: %r" % (where, info["cache_id"]))
        elif not (ov / info["cache_id"] / "diff").is_dir():
            probs.append("%s: overlay2/%s/diff is missing" % (where, info["cache_id"]))
        used_cache.add(info["cache_id"])
        parent = info["parent"]
        if parent is not None and parent not in v.layers:
            probs.append("%s/parent names %s, which does not exist" % (where, parent))
        if info["diff"]:
            want = info["diff"] if parent is None else \
                "sha256:" + hashlib.sha256((parent + " " + info["diff"]).encode()).hexdigest()
            if want != chain:
                probs.append("%s: chainID does not recompute from parent + diff" % where)
        if not (img / "layerdb" / "sha256" / chain[7:] / "tar-split.json.gz").is_file():
            probs.append("%s/tar-split.json.gz is missing" % where)
    for i in v.bad_images:
        probs.append("image %s: config does not hash to its name or does not parse" % i)
    for i, chains in v.images.items():
        if chains and chains[-1] not in v.layers:
            probs.append("image %s: top layer %s does not exist" % (i, chains[-1]))
    for ref, i in v.refs.items():
        if i not in v.images:
            probs.append("reference %s -> %s: no such image" % (ref, i))
    for cid, c in v.containers.items():
        for key in ("mount_id", "init_id"):
            if c[key] and not (ov / c[key]).is_dir():
                probs.append("container %s: %s %s has no overlay2 dir" % (cid[:12], key, c[key]))
            if c[key]:
                used_cache.add(c[key])
        if c["parent"] and c["parent"] not in v.layers:
            probs.append("container %s: parent layer %s does not exist" % (cid[:12], c["parent"]))
        if not (root / "containers" / cid).is_dir():
            probs.append("layerdb/mounts/%s without containers/%s" % (cid[:12], cid[:12]))
    if strict:
        for sub in ("layerdb/tmp",):
            d = img / sub
            if d.is_dir() and os.listdir(d):
                probs.append("leftovers in %s: %s" % (sub, sorted(os.listdir(d))))
        ls = img / "layerdb" / "sha256"
        for n in sorted(os.listdir(ls)) if ls.is_dir() else []:
            if not HEX64.match(n):
                probs.append("layerdb/sha256/%s is not a layer" % n)
        for d in dirs:
            if d not in used_cache:
                probs.append("overlay2/%s: nothing uses it" % d)
        used_chains = {c[-1] for c in v.images.values() if c}
        used_chains |= {info["parent"] for info in v.layers.values() if info["parent"]}
        used_chains |= {c["parent"] for c in v.containers.values() if c["parent"]}
        for chain in v.layers:
            if chain not in used_chains:
                probs.append("layer %s: nothing uses it" % chain)
        for dp, dn, fn in os.walk(img):
            for n in fn + dn:
                if n.startswith(".tmp-"):
                    probs.append("tmp leftover %s" % os.path.relpath(os.path.join(dp, n), root))
        cdir = root / "containers"
        for n in sorted(os.listdir(cdir)) if cdir.is_dir() else []:
            if not HEX64.match(n):
                probs.append("containers/%s is not a container" % n)
    return probs


def assert_no_mounts(root: os.PathLike | str) -> None:
    left = mounts_below(root)
    assert not left, "mounts left behind below %s: %s" % (root, left)


def rmtree(p: os.PathLike | str) -> None:
    umount_below(p)
    shutil.rmtree(p, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ derived fixtures
def prefix_save(src: os.PathLike | str, keep: int, dst: os.PathLike | str, tag: str) -> ImageSpec:
    """Write a docker-save tar holding a NEW image made of the first ``keep`` layers of the (only) image of the
    docker-save ``src``: same layer tars, a config whose rootfs and history are cut after those layers. Loaded
    into a data-root, it gives a store that already holds the bottom of ``src``'s chain (a later load or pull
    of ``src`` finds those layers there). Returns what the new image is (ID = sha256 of the config bytes)."""
    with tarfile.open(src) as t:
        manifest = json.load(t.extractfile("manifest.json"))
        assert len(manifest) == 1, "%s holds %d images" % (src, len(manifest))
        item = manifest[0]
        cfg = json.load(t.extractfile(item["Config"]))
        assert 0 < keep < len(cfg["rootfs"]["diff_ids"]), keep
        layers = item["Layers"][:keep]
        blobs = {name: t.extractfile(name).read() for name in layers}
    hist, n = [], 0
    for h in cfg.get("history") or []:
        if n == keep:
            break
        hist.append(h)
        n += 0 if h.get("empty_layer") else 1
    cfg["rootfs"]["diff_ids"] = cfg["rootfs"]["diff_ids"][:keep]
    cfg["history"] = hist
    cfg["config"]["Labels"] = dict(cfg["config"].get("Labels") or {}, **{"org.fx.derived": "prefix-%d" % keep})
    raw = json.dumps(cfg, separators=(",", ":")).encode()
    image_id = hashlib.sha256(raw).hexdigest()
    for name in layers:
        assert "sha256:" + hashlib.sha256(blobs[name]).hexdigest() in cfg["rootfs"]["diff_ids"], name
    out_manifest = json.dumps([{"Config": image_id + ".json", "RepoTags": [tag], "Layers": layers}]).encode()

    def add(t: tarfile.TarFile, name: str, data: bytes) -> None:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = len(data), 0o644, 1_700_000_000
        t.addfile(ti, io.BytesIO(data))

    with tarfile.open(dst, "w", format=tarfile.GNU_FORMAT) as t:
        for name in layers:
            add(t, name, blobs[name])
        add(t, image_id + ".json", raw)
        add(t, "manifest.json", out_manifest)
    return ImageSpec("sha256:" + image_id, (_familiar(tag),), tuple(cfg["rootfs"]["diff_ids"]))


# ------------------------------------------------------------------------------------------------ containers
def container_ids_in(root: os.PathLike | str) -> set[str]:
    """IDs of every container the data-root has a trace of: containers/<id>, containers/.tmp-<id> (a creation
    that did not finish), containers/<id>-removing (a removal that did not finish), layerdb/mounts/<id>."""
    root = Path(root)
    out = set()
    for d in (root / "containers", root / "image" / "overlay2" / "layerdb" / "mounts"):
        for n in sorted(os.listdir(d)) if d.is_dir() else []:
            m = re.match(r"^(?:\.tmp-)?([a-f0-9]{64})(?:-removing)?$", n)
            if m:
                out.add(m.group(1))
    return out


def container_record(root: os.PathLike | str, cid: str) -> dict | None:
    raw = _rd(Path(root) / "containers" / cid / "config.v2.json")
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def never_started(rec: dict) -> bool:
    """A container record that was created and never started (docker's status "Created")."""
    st = rec.get("State") or {}
    return (not st.get("Running") and not rec.get("HasBeenStartedBefore")
            and str(st.get("StartedAt") or "0001-01-01T00:00:00Z").startswith("0001-01-01"))


def cgroup_processes(cids: set[str]) -> dict[str, list[int]]:
    """Live processes (not zombies) whose cgroup path names one of the containers (dockyard puts a container
    in ``/dockyard/<id>``)."""
    out: dict[str, list[int]] = {}
    if not cids:
        return out
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cgroup" % d) as f:
                cg = f.read()
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        if st[st.rfind(")") + 2:].split()[:1] == ["Z"]:
            continue
        for cid in cids:
            if "/dockyard/" + cid in cg:
                out.setdefault(cid, []).append(int(d))
    return out


def _runc() -> str:
    for cand in (shutil.which("runc"), "/usr/sbin/runc", "/usr/local/sbin/runc", "/sbin/runc"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise AssertionError("runc is not installed")


def runc_state(exec_root: os.PathLike | str) -> list[dict]:
    """``runc --root <exec-root>/runtime list`` (what the runtime still knows of, whatever dockyard thinks)."""
    state = Path(exec_root) / "runtime"
    if not state.is_dir():
        return []
    p = subprocess.run([_runc(), "--root", str(state), "list", "--format", "json"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, "runc list failed: %s" % p.stderr
    return json.loads(p.stdout or "null") or []


def procs_naming(needle: str) -> list[tuple[int, str]]:
    """Live processes whose command line mentions ``needle`` (an exec-root: monitors, runc, shims)."""
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().decode("utf-8", "replace").split("\0")
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        if st[st.rfind(")") + 2:].split()[:1] == ["Z"]:
            continue
        if any(needle in a for a in argv):
            out.append((int(d), " ".join(argv).strip()))
    return out


def monitor_pid(exec_root: os.PathLike | str, cid: str) -> int | None:
    """The pid dockyard recorded as the monitor of a container (``<exec-root>/<id>/monitor``)."""
    raw = _rt(Path(exec_root) / cid / "monitor")
    try:
        return int(raw.split()[0]) if raw else None
    except ValueError:
        return None


def runtime_leftovers(root: os.PathLike | str, exec_root: os.PathLike | str, cids: set[str], *,
                      running: dict[str, str] | None = None, settle: float = 5.0) -> list[str]:
    """What must be gone once no container runs: mounts below the data-root (/proc/self/mountinfo), containers
    runc still knows (``runc --root <exec-root>/runtime list``), bundle dirs in the exec-root, processes naming
    the exec-root, processes in the cgroup of one of ``cids``. ``running`` = {container id: mount id} of
    containers that legitimately run: their mount, runtime state, bundle, monitor and processes are fine.
    Waits up to ``settle`` seconds for things a SIGKILL is still tearing down (process exits are asynchronous)."""
    running = running or {}
    root, exec_root = Path(root), Path(exec_root)
    deadline = time.monotonic() + settle
    monitors = {monitor_pid(exec_root, c) for c in running}
    while True:
        probs = []
        ok_mounts = [str(root / "overlay2" / mid) for mid in running.values()]
        m = [x for x in mounts_below(root) if not any(x == o or x.startswith(o + "/") for o in ok_mounts)]
        if m:
            probs.append("mounts below the data-root: %s" % m)
        rs = [(c.get("id"), c.get("status"), c.get("pid")) for c in runc_state(exec_root)
              if c.get("id") not in running]
        if rs:
            probs.append("runc still knows containers: %s" % rs)
        bundles = [n for n in (os.listdir(exec_root) if exec_root.is_dir() else [])
                   if HEX64.match(n) and n not in running]
        if bundles:
            probs.append("bundle dirs left in the exec-root: %s" % bundles)
        pr = [p for p in procs_naming(str(exec_root)) if p[0] not in monitors]
        if pr:
            probs.append("processes naming the exec-root: %s" % pr)
        cg = cgroup_processes(cids - set(running))
        if cg:
            probs.append("container processes still alive: %s" % cg)
        if not probs or time.monotonic() > deadline:
            return probs
        time.sleep(0.1)


def force_cleanup(root: os.PathLike | str, exec_root: os.PathLike | str, cids: set[str]) -> None:
    """After a failed case: kill what the case started (container processes by the cgroup of ITS containers,
    monitors naming ITS exec-root), delete its runtime state, unmount below its data-root."""
    for pids in cgroup_processes(set(cids)).values():
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for pid, _argv in procs_naming(str(exec_root)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    state = Path(exec_root) / "runtime"
    if state.is_dir():
        for c in runc_state(exec_root):
            subprocess.run([_runc(), "--root", str(state), "delete", "--force", str(c.get("id"))],
                           capture_output=True, timeout=30)
    umount_below(root)
