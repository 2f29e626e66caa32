"""Whole-image transfers that touch files outside the store: save and import."""

from __future__ import annotations

import os
import platform as _platform
import sys
import tempfile
from collections.abc import Callable
from typing import IO, Any

from dockyard import __version__, gojson
from dockyard.archive import compression
from dockyard.destinations.archive import ProgressFn, write_docker_save, write_oci_archive
from dockyard.destinations.store import ExtractJob, extract_layer
from dockyard.errors import DockyardError, InvalidInput
from dockyard.image.changes import apply_changes
from dockyard.image.config import ImageConfig
from dockyard.image.container_config import container_config
from dockyard.image.reference import parse_reference
from dockyard.sources.base import LayerBlob
from dockyard.store import Store
from dockyard.store.atomic import fsync_dir, syncfs
from dockyard.store.selection import select_images


def intact_images(store: Store, warn: Callable[[str], None]) -> list[str]:
    """Every image whose layers all rebuild to their diffIDs (the salvage set of a sick host)."""
    from dockyard.engine.health.fsck import Checker

    report = Checker(store, deep=True).run()
    out = []
    for image_id in store.images.ids():
        if image_id in report.damaged_images:
            why = "; ".join(dict.fromkeys(report.damaged_images[image_id]))
            warn(f"skipping damaged image {image_id}: {why}")
            continue
        out.append(image_id)
    return out


def save(
    store: Store,
    names: list[str],
    output: str | None,
    *,
    fmt: str = "docker",
    progress: ProgressFn | None = None,
    all_intact: bool = False,
    warn: Callable[[str], None] | None = None,
) -> None:
    """``docker save``: to ``output`` (written to a temp file, then renamed) or to stdout.

    ``all_intact`` adds every image whose layers verify (with its tags) and skips damaged ones.
    """
    if all_intact:
        ids = intact_images(store, warn or (lambda m: None))
        for i in ids:
            tags = [r.familiar_string() for r in store.refs.references_to(i) if r.tag]
            names = [*names, *(tags or [i])]
        if not names:
            raise InvalidInput("no intact image to save")
    images = select_images(store, names)
    writer = write_oci_archive if fmt == "oci" else write_docker_save
    if output is None or output == "-":
        if sys.stdout.isatty():
            raise InvalidInput("cowardly refusing to save to a terminal. Use the -o flag or redirect")
        out = sys.stdout.buffer
        writer(store, images, out.write, progress)
        out.flush()
        return
    d = os.path.dirname(os.path.abspath(output)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".dockyard-save-", dir=d)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            writer(store, images, f.write, progress)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644 & ~_umask())
        os.rename(tmp, output)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


class _StreamOpener:
    """Opener for an already-open stream (import reads stdin or a file in this process)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f

    def open(self) -> Any:
        return _NoClose(self.f)


class _NoClose:
    def __init__(self, f: IO[bytes]) -> None:
        self.f = f

    def read(self, n: int = -1) -> bytes:
        return self.f.read(n)

    def close(self) -> None:
        pass


def import_image(
    store: Store,
    source: str,
    repo_tag: str | None,
    *,
    changes: list[str],
    message: str,
    platform: str | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
    stream: IO[bytes] | None = None,
) -> str:
    """``docker import``: a rootfs tar (optionally compressed) becomes a one-layer image.

    ``source`` is a path or ``-`` (stdin); ``stream``, when given, is read instead.
    """
    ref = parse_reference(repo_tag).tagged_or_latest() if repo_tag else None
    if ref is not None and ref.digest is not None:
        raise InvalidInput("cannot import to a digest reference")
    os_name, arch, variant = "linux", _host_arch(), ""
    if platform:
        from dockyard.image.platform import parse_platform

        p = parse_platform(platform)
        os_name, arch, variant = p.os, p.architecture, p.variant
    config = container_config(apply_changes({}, changes))
    own = False
    if stream is not None:
        f: IO[bytes] = stream
    elif source == "-":
        if sys.stdin.isatty():
            raise InvalidInput("import from stdin: nothing is piped in")
        f = sys.stdin.buffer
    else:
        if "://" in source:
            raise InvalidInput("importing from a URL is not supported; download the tarball first")
        try:
            f = open(source, "rb")  # noqa: SIM115
            own = True
        except OSError as e:
            raise InvalidInput(f"open {source}: {e.strerror}") from None
    with store.write_lock():
        store.layers.ensure_dirs()
        store.images.ensure_dirs()
        pending = store.layers.begin(None)
        try:
            blob = LayerBlob(opener=_StreamOpener(f), diff_id="", description=f"import {source}")
            job = ExtractJob(blob, store.driver.diff_path(pending.cache_id), pending.tar_split_path, source)
            out = extract_layer(job, lambda n: progress("import", n, None) if progress else None)
            syncfs(store.root)
            layer = store.layers.publish(pending, out.result.diff_id, out.result.size, None)
        except BaseException:
            if os.path.isdir(pending.staging):
                store.layers.discard(pending)
            raise
        finally:
            if own:
                f.close()
        created = gojson.format_rfc3339nano(gojson.now_ns())
        img: dict[str, Any] = {
            "architecture": arch,
            "config": config,
            "container_config": container_config({}),
            "created": created,
            "docker_version": f"dockyard-{__version__}",
            "history": [{"created": created, **({"comment": message} if message else {})}],
            "os": os_name,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
        if message:
            img["comment"] = message
        if variant:
            img["variant"] = variant
        cfg = ImageConfig(gojson.marshal_image_config(img))
        image_id = store.images.create(cfg)
        fsync_dir(store.layout.imagedb_content)
        if ref is not None:
            store.refs.add(ref, image_id)
            store.images.set_last_updated(image_id, gojson.format_rfc3339nano(gojson.now_ns()))
    return image_id


def _host_arch() -> str:
    from dockyard.image.platform import host_platform

    return host_platform().architecture or _platform.machine()


__all__ = ["DockyardError", "compression", "import_image", "save"]
