"""``dockyard demo``: the seed's walkthrough on real data, offline and in seconds.

An OCI image layout with three gzip layers is built here (a base rootfs; the host's ``/bin/sh``,
``sleep`` and ``cat`` with the shared libraries they need; an app layer), loaded through the
normal pipeline, then a container is started from it detached with a bind mount, changed,
diffed and committed. Each step reports what it did as a :class:`Section`; the CLI renders them.
Steps that need root or an OCI runtime are skipped with the reason when either is missing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from dockyard.errors import DockyardError
from dockyard.store import Store

MTIME = 1700000000
IMAGE = "dockyard-demo:latest"
COMMITTED = "dockyard-demo:committed"
CONTAINER = "dockyard-demo"
MOTD = b"Welcome to the dockyard demo image.\n"
CHANGED = "changed inside the container"

BASE_FILES = {
    "etc/os-release": b'NAME="dockyard demo"\nID=dockyard-demo\n',
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    "etc/group": b"root:x:0:\nnogroup:x:65534:\n",
    "etc/motd": MOTD,
}
APP_FILES = {
    "hello.txt": b"Hello from a layer that dockyard stored in Docker's own layout.\n",
    "usr/share/dockyard/README": b"This image was made by `dockyard demo`.\n",
}
BINARIES = ("sh", "sleep", "cat")


@dataclass
class Section:
    """One step of the walkthrough: a title, prose lines, optional tables, or why it was skipped."""

    title: str
    lines: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    skipped: str | None = None


@dataclass
class DemoResult:
    image_id: str = ""
    layers: list[dict[str, str]] = field(default_factory=list)
    container_id: str | None = None
    lowerdir: str | None = None
    committed_id: str | None = None
    skipped: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- building the image
def _info(name: str) -> tarfile.TarInfo:
    """An entry owned by root, or by the current user when not root (who cannot chown to root)."""
    ti = tarfile.TarInfo(name)
    ti.mtime = MTIME
    ti.uid, ti.gid = os.geteuid(), os.getegid()
    ti.uname = ti.gname = ""
    return ti


def _add_dirs(tf: tarfile.TarFile, names: list[str], done: set[str]) -> None:
    for n in names:
        parts = n.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in done:
                done.add(d)
                ti = _info(d)
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tf.addfile(ti)


def _layer_tar(
    out: BinaryIO, files: dict[str, bytes | str], extra_dirs: dict[str, int] | None = None
) -> None:
    """Write a tar of ``files`` (bytes = content, str = path of a host file to copy in) to ``out``."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        done: set[str] = set()
        for d, mode in sorted((extra_dirs or {}).items()):
            done.add(d)
            ti = _info(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = mode
            tf.addfile(ti)
        _add_dirs(tf, sorted(files), done)
        for name, data in sorted(files.items()):
            ti = _info(name)
            if isinstance(data, str):
                with open(data, "rb") as f:
                    ti.size = os.fstat(f.fileno()).st_size
                    ti.mode = 0o755
                    tf.addfile(ti, f)
            else:
                ti.size = len(data)
                ti.mode = 0o644
                tf.addfile(ti, io.BytesIO(data))


def _host_binaries() -> tuple[dict[str, bytes | str], str | None]:
    """The host's sh, sleep and cat with the libraries ``ldd`` names, or why they cannot be used."""
    files: dict[str, bytes | str] = {}
    for b in BINARIES:
        path = shutil.which(b)
        if path is None:
            return {}, f"the host has no {b!r} to put in the image"
        files[f"bin/{b}"] = os.path.realpath(path)
        try:
            out = subprocess.run(["ldd", path], capture_output=True, text=True, check=False).stdout
        except OSError:
            return {}, "ldd is missing, so the host binaries' libraries are unknown"
        for line in out.splitlines():
            words = line.split()
            lib = words[2] if "=>" in words and len(words) > 2 else (words[0] if words else "")
            if lib.startswith("/") and os.path.exists(lib):
                files[lib.lstrip("/")] = os.path.realpath(lib)
    return files, None


def build_layout(dest: str) -> tuple[str | None, list[str]]:
    """Write an OCI image layout with gzip layers to ``dest``; returns (skip reason, blob digests)."""
    binaries, why = _host_binaries()
    layers: list[tuple[dict[str, bytes | str], dict[str, int] | None]] = [
        (dict(BASE_FILES), {"tmp": 0o1777, "root": 0o700, "data": 0o755}),
        *([(binaries, None)] if binaries else []),
        (dict(APP_FILES), None),
    ]
    blobs = os.path.join(dest, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(data: bytes) -> str:
        d = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, d), "wb") as f:
            f.write(data)
        return "sha256:" + d

    descs, diff_ids = [], []
    for files, dirs in layers:  # streamed through temp files: tar -> sha256 (diffID) + gzip -> blob
        with (
            tempfile.TemporaryFile(dir=dest) as raw,
            tempfile.NamedTemporaryFile(dir=dest, delete=False) as blob,
        ):
            _layer_tar(raw, files, dirs)
            raw.seek(0)
            tar_hash = hashlib.sha256()
            with gzip.GzipFile(filename="", fileobj=blob, mode="wb", mtime=0) as gz:
                while chunk := raw.read(1 << 20):
                    tar_hash.update(chunk)
                    gz.write(chunk)
            size = blob.tell()
        blob_hash = hashlib.sha256()
        with open(blob.name, "rb") as fb:
            while chunk := fb.read(1 << 20):
                blob_hash.update(chunk)
        os.rename(blob.name, os.path.join(blobs, blob_hash.hexdigest()))
        diff_ids.append("sha256:" + tar_hash.hexdigest())
        descs.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": "sha256:" + blob_hash.hexdigest(),
                "size": size,
            }
        )
    created = "2023-11-14T22:13:20Z"
    history = [
        {"created": created, "created_by": "dockyard demo: base files (/etc, /tmp, /root)"},
        *(
            [
                {
                    "created": created,
                    "created_by": "dockyard demo: the host's sh, sleep, cat and their libraries",
                }
            ]
            if binaries
            else []
        ),
        {"created": created, "created_by": "dockyard demo: /hello.txt and /usr/share/dockyard"},
    ]
    config = {
        "architecture": "amd64",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "created": created,
        "history": history,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    cfg = json.dumps(config, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": put(cfg),
            "size": len(cfg),
        },
        "layers": descs,
    }
    mb = json.dumps(manifest, separators=(",", ":")).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": put(mb),
                "size": len(mb),
                "annotations": {"org.opencontainers.image.ref.name": IMAGE},
            }
        ],
    }
    with open(os.path.join(dest, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(dest, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    return why, [str(d["digest"]) for d in descs]


# ----------------------------------------------------------------------------- the walkthrough
def _rel(store: Store, path: str) -> str:
    return os.path.relpath(path, store.root)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def chain_id(parent: str | None, diff_id: str) -> str:
    if parent is None:
        return diff_id
    return "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()


def _layer_rows(store: Store, diff_ids: list[str], digests: list[str | None]) -> list[dict[str, str]]:
    rows, parent = [], None
    for diff_id, digest in zip(diff_ids, digests, strict=True):
        chain = chain_id(parent, diff_id)
        layer = store.layers.get(chain)
        link = _read(os.path.join(store.layout.driver_dir(layer.cache_id), "link"))
        rows.append(
            {
                "digest": digest or "(not known)",
                "diff_id": diff_id,
                "chain_id": chain,
                "cache_id": layer.cache_id,
                "link": link,
            }
        )
        parent = chain
    return rows


def _short(d: str) -> str:
    return d.split(":", 1)[-1][:12]


def _proc_mount_options(target: str) -> str | None:
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 4 and parts[1] == target and parts[2] == "overlay":
                return parts[3]
    return None


def run_demo(
    store: Store,
    emit: Callable[[Section], None],
    *,
    keep: bool,
    exec_root: str | None = None,
    runtime: str | None = None,
) -> DemoResult:
    """Replay the walkthrough on ``store``; every step is reported through ``emit``."""
    from dockyard.destinations.store import load_images
    from dockyard.sources import open_input
    from dockyard.store.atomic import makedirs

    res = DemoResult()
    lay = store.layout
    with store.write_lock():
        makedirs(lay.tmp, 0o700)
        with tempfile.TemporaryDirectory(prefix="demo-oci-", dir=lay.tmp) as src:
            why_no_bin, digests = build_layout(src)
            with open_input(src, spool_dir=lay.tmp, platform=None) as images:
                loaded = load_images(store, images)
    res.image_id = loaded[0].image_id
    img = store.images.get(res.image_id)
    rows = _layer_rows(store, img.diff_ids, list(digests))
    res.layers = rows
    emit(
        Section(
            "1. An image with real layers",
            [
                f"Built an OCI image layout with {len(rows)} gzip layers and loaded it as {IMAGE}.",
                f"Image ID = sha256 of its config: {res.image_id}",
                f"config: {_rel(store, lay.image_config(res.image_id))}",
                *([f"(no binaries layer: {why_no_bin})"] if why_no_bin else []),
            ],
        )
    )
    emit(
        Section(
            "2. The ID chain: blob digest -> diffID -> chainID -> cache-id -> l/ link",
            [
                "digest = sha256 of the gzip blob; diffID = sha256 of the tar; chainID(n) = "
                "sha256(chainID(n-1) + ' ' + diffID(n)); cache-id = random, read from layerdb.",
            ],
            [
                (
                    ["#", "blob digest", "diffID", "chainID", "cache-id", "l/ link"],
                    [
                        [
                            str(i),
                            _short(r["digest"]),
                            _short(r["diff_id"]),
                            _short(r["chain_id"]),
                            r["cache_id"][:12],
                            r["link"],
                        ]
                        for i, r in enumerate(rows, 1)
                    ],
                ),
                (
                    ["file", "content"],
                    [
                        [
                            _rel(store, os.path.join(lay.layer_dir(r["chain_id"]), n)),
                            _read(os.path.join(lay.layer_dir(r["chain_id"]), n))[:71],
                        ]
                        for r in rows[-1:]
                        for n in ("diff", "cache-id", "parent", "size")
                        if os.path.exists(os.path.join(lay.layer_dir(r["chain_id"]), n))
                    ]
                    + [
                        [
                            _rel(store, os.path.join(lay.overlay2_links, r["link"])),
                            "-> " + os.readlink(os.path.join(lay.overlay2_links, r["link"])),
                        ]
                        for r in rows
                    ]
                    + [
                        [
                            _rel(store, os.path.join(lay.driver_dir(rows[-1]["cache_id"]), "lower")),
                            _read(os.path.join(lay.driver_dir(rows[-1]["cache_id"]), "lower")),
                        ]
                    ],
                ),
            ],
        )
    )
    if os.geteuid() != 0:
        why = "not running as root: creating and mounting a container's overlay layers needs root"
    elif why_no_bin:
        why = why_no_bin
    elif not any(shutil.which(r) for r in ([runtime] if runtime else ["runc", "crun"])):
        why = (
            f"the OCI runtime {runtime!r} is not installed"
            if runtime
            else "no OCI runtime (runc or crun) is installed"
        )
    else:
        why = ""
    if why:
        res.skipped.append(why)
        emit(Section("3-7. A container, its layers, diff and commit", skipped=why))
        return res
    _container_part(store, res, emit, keep=keep, exec_root=exec_root, runtime=runtime)
    return res


def _container_part(
    store: Store,
    res: DemoResult,
    emit: Callable[[Section], None],
    *,
    keep: bool,
    exec_root: str | None,
    runtime: str | None,
) -> None:
    from dockyard.containers.lifecycle import Containers, CreateOptions
    from dockyard.engine import containers as ops

    lay = store.layout
    rt = runtime or ("runc" if shutil.which("runc") else "crun")
    mgr = Containers(store, exec_root=exec_root, runtime=rt)
    for c in _existing(mgr):
        ops.remove(mgr, c, force=True)
    bind = tempfile.mkdtemp(prefix="demo-bind-", dir=lay.tmp)  # removed with the data-root
    with open(os.path.join(bind, "from-the-host.txt"), "w") as f:
        f.write("written on the host, visible in the container at /data\n")
    script = f"echo '{CHANGED}' > /etc/motd; cat /data/from-the-host.txt > /root/seen.txt; exec sleep 3600"
    opts = CreateOptions(
        name=CONTAINER, cmd=["/bin/sh", "-c", script], binds=[f"{bind}:/data"], network="none"
    )
    try:
        cid, _ = ops.run(mgr, IMAGE, opts, detach=True)
    except DockyardError as e:  # e.g. the runtime cannot run here: say so, leave nothing behind
        why = f"the container could not start with {rt}: {e}"
        res.skipped.append(why)
        for c in _existing(mgr):
            ops.remove(mgr, c, force=True)
        shutil.rmtree(bind, ignore_errors=True)
        emit(Section("3-7. A container, its layers, diff and commit", skipped=why))
        return
    res.container_id = cid
    try:
        _wait_changed(mgr, cid)
        mid = mgr.mount_id(cid)
        mdir = lay.mount_dir(cid)
        merged = os.path.join(lay.driver_dir(mid), "merged")
        options = _proc_mount_options(merged) or ""
        lower = next((o[len("lowerdir=") :] for o in options.split(",") if o.startswith("lowerdir=")), "")
        res.lowerdir = lower
        emit(
            Section(
                "3. A container, started detached with a bind mount",
                [
                    f'run -d --name {CONTAINER} --network none -v {bind}:/data {IMAGE} sh -c "{script}"',
                    f"container ID: {cid}",
                ],
                [
                    (
                        ["layerdb/mounts entry", "content"],
                        [
                            [_rel(store, os.path.join(mdir, n)), _read(os.path.join(mdir, n))]
                            for n in ("mount-id", "init-id", "parent")
                        ],
                    ),
                    (
                        ["layer", "dir", "lower (file)"],
                        [
                            [
                                "init (hosts, hostname, resolv.conf, /.dockerenv, /dev stubs)",
                                _rel(store, lay.driver_dir(mid + "-init")),
                                _read(os.path.join(lay.driver_dir(mid + "-init"), "lower")),
                            ],
                            [
                                "read-write (the container's changes)",
                                _rel(store, lay.driver_dir(mid)),
                                _read(os.path.join(lay.driver_dir(mid), "lower")),
                            ],
                        ],
                    ),
                ],
            )
        )
        emit(
            Section(
                "4. The live overlay mount (/proc/mounts)",
                [
                    f"mount point: {_rel(store, merged)}",
                    "lowerdir (init layer first, then the image's layers top to base), upperdir and workdir:",
                    *[f"  {o}" for o in options.split(",")],
                ],
            )
        )
        cdir = lay.container_dir(cid)
        files = [f"{_rel(store, cdir)}/: " + ", ".join(sorted(os.listdir(cdir))), ""]
        for n in ("hostname", "hosts", "resolv.conf"):
            files += [f"--- {_rel(store, os.path.join(cdir, n))} (bind-mounted at /etc/{n})"]
            files += ["    " + ln for ln in _read(os.path.join(cdir, n)).splitlines()]
        emit(Section("5. The container's files", files))
        changes = ops.diff(mgr, cid)
        emit(
            Section(
                "6. diff: what changed inside the container",
                tables=[(["kind", "path"], [[c.kind, c.path] for c in changes])],
            )
        )
        new_id = ops.commit(mgr, cid, COMMITTED, message="dockyard demo commit")
        res.committed_id = new_id
        new = store.images.get(new_id)
        new_rows = _layer_rows(store, new.diff_ids, [r["digest"] for r in res.layers] + [None])
        top = new_rows[-1]
        emit(
            Section(
                "7. commit: one new layer on top of the image's chain",
                [
                    f"{COMMITTED} = {new_id}",
                    f"layers: {len(res.layers)} -> {len(new_rows)}; the new layer is the container's upper dir "
                    "against its init layer, so hosts/hostname/resolv.conf are not in it.",
                ],
                [
                    (
                        ["diffID", "chainID", "cache-id", "parent chainID"],
                        [
                            [
                                _short(top["diff_id"]),
                                _short(top["chain_id"]),
                                top["cache_id"][:12],
                                _short(new_rows[-2]["chain_id"]),
                            ]
                        ],
                    )
                ],
            )
        )
    finally:
        if keep:
            emit(
                Section(
                    "Kept for exploring",
                    [
                        f"container {CONTAINER} ({cid[:12]}) is running; bind dir {bind}",
                        "explore it with, for example:",
                        f"  dockyard --data-root {store.root} explain {CONTAINER}",
                        f"  dockyard --data-root {store.root} explain {COMMITTED}",
                        f"  ls {os.path.join(lay.driver_dir(mgr.mount_id(cid)), 'merged')}",
                        f"  grep {lay.overlay2} /proc/mounts",
                        f"remove it with: dockyard --data-root {store.root} rm -f {CONTAINER}",
                    ],
                )
            )
        else:
            ops.remove(mgr, cid, force=True)
            shutil.rmtree(bind, ignore_errors=True)
            emit(
                Section(
                    "Cleaned up",
                    [f"container {CONTAINER} removed (use --keep to leave it running); the images stay."],
                )
            )


def _existing(mgr: object) -> Iterator[str]:
    """A container left by an earlier ``demo --keep`` (by name), so the demo can run again."""
    from dockyard.containers.lifecycle import Containers

    assert isinstance(mgr, Containers)
    for c in mgr.all():
        if c.get("Name") == "/" + CONTAINER:
            yield str(c["ID"])


def _wait_changed(mgr: object, cid: str) -> None:
    """Wait (generously) until the container has written its change."""
    from dockyard.containers.lifecycle import Containers

    assert isinstance(mgr, Containers)
    upper = os.path.join(mgr.store.layout.driver_dir(mgr.mount_id(cid)), "diff", "root", "seen.txt")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if os.path.exists(upper) and os.path.getsize(upper) > 0:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the demo container {cid[:12]} did not make its change within 30 s")
