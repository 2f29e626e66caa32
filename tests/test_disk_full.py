"""Disk full: a data-root on a small tmpfs (issue acceptance, automated).

Each test mounts its own tmpfs (``mount -t tmpfs -o size=...,nr_inodes=...``; unmounted at teardown), loads a
small image into a data-root on it (fx-tags: the "already there" image), snapshots it, then:

- ``test_fills_during_load``: a load whose compressed input fits but whose contents do not -- fx-bigfile.oci (a
  9 MiB file in an 11 kB gzip blob) on 5 MiB, and fx-manyfiles.oci-zstd (3000 files, zstd) with 300 inodes.
  The pre-flight check cannot see this coming (compressed sizes), so the filesystem fills while extracting.
  Expected: non-zero exit, exactly one ``Error:`` line saying there is no space, nothing half-registered -- the
  data-root is byte-identical to before (no layerdb/overlay2/l/ leftovers, no staging dir), the space and inodes
  are free again, ``fsck`` is clean, and the store still works (a load that fits succeeds afterwards).
- ``test_preflight_refuses``: a load that clearly does not fit -- the uncompressed docker-save of fx-bigfile
  (9 MiB of layer data, in place) on 5 MiB, and the uncompressed docker-save of fx-manyfiles (3000+ entries) with
  300 inodes -- is refused BEFORE anything is written: one ``Error:`` line naming space resp. inodes, no write
  boundary passed (``DOCKYARD_CRASH_LOG`` stays empty), the data-root byte-identical.
"""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import assert_clean_error, diff_snapshots, umount_below
from faultlib import (
    OCI,
    SAVE,
    StoreView,
    dy,
    dy_ok,
    fixture_images,
    fmt_findings,
    fsck_report,
    read_boundaries,
    show,
    snapshot,
    structural_problems,
)


@pytest.fixture
def small_fs(tmp_path):
    """small_fs(size, nr_inodes) -> a fresh tmpfs mount point (unmounted at teardown)."""
    mounted: list[Path] = []

    def mount(size: str, nr_inodes: int) -> Path:
        d = tmp_path / ("fs%d" % len(mounted))
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,nr_inodes=%d,mode=0755" % (size, nr_inodes),
                        "tmpfs", str(d)], check=True)
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        umount_below(d)


@pytest.fixture(scope="module")
def uncompressed(tmp_path_factory):
    """The gzip'd docker-save fixtures, decompressed (docker load accepts both; uncompressed layers are what the
    pre-flight check can measure exactly)."""
    d = tmp_path_factory.mktemp("uncompressed")
    out = {}
    for name in ("fx-bigfile", "fx-manyfiles"):
        dst = d / (name + ".docker.tar")
        with gzip.open(SAVE / (name + ".docker.tar.gz"), "rb") as src, open(dst, "wb") as f:
            shutil.copyfileobj(src, f)
        out[name] = dst
    return out


def _prepare(fs: Path) -> tuple[Path, dict, os.statvfs_result]:
    root = fs / "root"
    dy_ok(root, "load", "-q", "-i", SAVE / "fx-tags.docker.tar")
    rc, rep = fsck_report(root)
    assert rc == 0, fmt_findings(rep)
    return root, snapshot(root), os.statvfs(fs)


def _unchanged(root: Path, before: dict, what: str) -> None:
    d = diff_snapshots(before, snapshot(root))
    assert not d, "%s changed the data-root:\n  %s" % (what, "\n  ".join(d))


@pytest.mark.parametrize("source,size,inodes,words", [
    (OCI / "fx-bigfile.oci", "5m", 4096, ["no space"]),
    (OCI / "fx-manyfiles.oci-zstd", "64m", 300, ["no space"]),
], ids=["bytes-fx-bigfile.oci", "inodes-fx-manyfiles.oci-zstd"])
def test_fills_during_load(small_fs, source, size, inodes, words):
    fs = small_fs(size, inodes)
    root, before, st0 = _prepare(fs)
    # the input really does not fit once extracted, and the compressed blobs do
    if inodes < 1000:
        assert st0.f_favail < 3000, "the tmpfs has enough inodes for 3000 files: the test would not fill it"
    else:
        assert st0.f_bavail * st0.f_frsize < 9 * 1024 * 1024, "the tmpfs would hold the 9 MiB file"
    p = dy(root, "load", "-i", source)
    line = assert_clean_error(p, "load that fills the filesystem")
    assert any(w in line.lower() for w in words), "the error does not say there is no space: %r" % line
    # nothing half-registered
    _unchanged(root, before, "the failed load")
    st1 = os.statvfs(fs)
    assert (st1.f_bfree, st1.f_ffree) == (st0.f_bfree, st0.f_ffree), \
        "space/inodes not given back: free blocks %d -> %d, free inodes %d -> %d" % (
            st0.f_bfree, st1.f_bfree, st0.f_ffree, st1.f_ffree)
    rc, rep = fsck_report(root)
    assert rc == 0, "fsck after the failed load:\n" + fmt_findings(rep)
    assert not structural_problems(root, strict=True)
    # the store still works
    dy_ok(root, "load", "-q", "-i", SAVE / "fx-shared.docker.tar")
    v = StoreView.read(root)
    for s in fixture_images(SAVE / "fx-shared.docker.tar"):
        assert s.id in v.images and v.tags_of(s.id) == sorted(s.repo_tags), s
    rc, rep = fsck_report(root, "--deep")
    assert rc == 0, fmt_findings(rep)


@pytest.mark.parametrize("name,size,inodes,word", [
    ("fx-bigfile", "5m", 4096, "space"),
    ("fx-manyfiles", "64m", 300, "inodes"),
], ids=["bytes-fx-bigfile-uncompressed", "inodes-fx-manyfiles-uncompressed"])
def test_preflight_refuses(small_fs, tmp_path, uncompressed, name, size, inodes, word):
    fs = small_fs(size, inodes)
    root, before, st0 = _prepare(fs)
    src = uncompressed[name]
    if word == "space":
        assert src.stat().st_size > st0.f_bavail * st0.f_frsize, "the archive would fit: the test proves nothing"
    else:
        assert st0.f_favail < 3000, "the tmpfs has enough inodes: the test proves nothing"
    log = tmp_path / "boundaries.log"
    p = dy(root, "load", "-i", src, env={"DOCKYARD_CRASH_LOG": str(log)})
    line = assert_clean_error(p, "load that clearly does not fit")
    assert word in line.lower() and ("not enough" in line.lower() or "no space" in line.lower()), \
        "the refusal does not say what is short (%s): %r" % (word, line)
    passed = read_boundaries(log) if log.exists() else []
    assert not passed, "the load wrote to the store before refusing: boundaries %s\n%s" % (passed, show(p))
    _unchanged(root, before, "the refused load")
    rc, rep = fsck_report(root)
    assert rc == 0, fmt_findings(rep)
