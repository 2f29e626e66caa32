"""`dockyard fs` on a copy of the Docker-written data-root, bind-mounted read-only: every command works,
a container's view equals the kernel's overlay mount of its layers (rw + init + image), and the tree is
byte-for-byte unchanged afterwards."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import run_dy, umount_below
from peers import extract_dataroot_fixture, oracle


def _tree_hash(root: Path) -> str:
    """Names, metadata, xattrs and contents of every entry below root."""
    h = hashlib.sha256()
    rb = os.fsencode(root)
    for dp, dn, fn in os.walk(rb):
        dn.sort()
        for n in sorted(dn + fn):
            p = os.path.join(dp, n)
            st = os.lstat(p)
            h.update(b"%s %o %d %d %d %d %d\n" % (os.path.relpath(p, rb), st.st_mode, st.st_uid, st.st_gid,
                                                 st.st_size, st.st_mtime_ns, st.st_rdev))
            for a in sorted(os.listxattr(p, follow_symlinks=False)):
                h.update(a.encode() + b"=" + os.getxattr(p, a, follow_symlinks=False))
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


@pytest.fixture(scope="module")
def ro_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("view-ro")
    src = extract_dataroot_fixture(base / "src")
    ro = base / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        before = _tree_hash(src)
        yield ro, base
        assert _tree_hash(src) == before, "the read-only data-root changed"
    finally:
        umount_below(base)


def _kernel_tar(ro: Path, mount_id: str, tmp: Path) -> bytes:
    from dockyard.archive.export import write_dir_tar

    lower = (ro / "overlay2" / mount_id / "lower").read_text().strip()
    dirs = [str(ro / "overlay2" / mount_id / "diff")] + [str(ro / "overlay2" / x) for x in lower.split(":")]
    mnt = tmp / ("k-" + mount_id[:12])
    mnt.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "ro,lowerdir=" + ":".join(dirs), str(mnt)], check=True)
    chunks: list[bytes] = []
    try:
        write_dir_tar(str(mnt), lambda b: chunks.append(bytes(b)))
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    return b"".join(chunks)


@pytest.mark.parametrize("name", ["fx-writer", "fx-created"])
def test_container_view_equals_kernel_overlay(ro_root, name):
    ro, base = ro_root
    c = next(c for c in oracle("dataroot-docker20")["containers"] if c["name"] == "/" + name)
    out = base / (name + ".tar")
    run_dy("fs", "tar", "-o", out, name, root=ro)
    mount_id = (ro / "image/overlay2/layerdb/mounts" / c["id"] / "mount-id").read_text().strip()
    assert out.read_bytes() == _kernel_tar(ro, mount_id, base), "%s: fs tar != kernel overlay mount" % name


def test_every_fs_command_works_read_only(ro_root):
    ro, _ = ro_root
    for target in ["fx-writer", "fx-created", "fx-edge:1", "fx-tags:1"]:
        assert run_dy("fs", "ls", "-l", target, "/", root=ro).stdout.strip()
        assert run_dy("fs", "ls", "-R", "--json", target, "/etc", root=ro).stdout.strip()
        json.loads(run_dy("fs", "stat", "--json", target, "/etc/passwd", root=ro).stdout)
        assert run_dy("fs", "cat", target, "/etc/passwd", root=ro).stdout.startswith("root:")
        run_dy("fs", "find", "--type", "d", "--newer-than", "0", target, root=ro)
    # the writer's deletions are whiteouts in its rw layer: gone from the view
    rw = next(c for c in oracle("dataroot-docker20")["containers"] if c["name"] == "/fx-writer")["rw_layer_diff"]
    whiteouts = [e["path"] for e in rw if e["type"] == "char" and e.get("rdev") == [0, 0]]
    assert whiteouts
    for w in whiteouts:
        assert run_dy("fs", "stat", "fx-writer", "/" + w, root=ro, check=False).returncode == 1
    assert not (ro / ".dockyard.lock").exists()


def test_explain_container_read_only_matches_oracle(ro_root):
    ro, _ = ro_root
    for c in oracle("dataroot-docker20")["containers"]:
        info = json.loads(run_dy("explain", "--format", "json", c["name"].lstrip("/"), root=ro).stdout)
        files = c["layerdb_mounts_files"]
        assert info["id"] == c["id"]
        assert info["parent"] == c["mount_parent"]
        assert info["init_id"] == info["mount_id"] + "-init"
        assert all("chain_id" in lw or lw.get("layer") == "init" for lw in info["lowers"]), info["lowers"]
        assert len(info["lowers"]) == c["rw_layer_lower_count"]
        assert {f["path"].split("/")[0] for f in info["container_files"]} <= set(c["containers_dir_files"]) | {
            "checkpoints", "mounts"}
        assert "mount-id" in files
        vols = [m for m in info["mounts"] if m["type"] == "volume"]
        assert len(vols) == len([m for m in c["mounts"] if m.get("Type") == "volume"])
        assert "lowerdir=" in info["mount_options"] and "upperdir=" in info["mount_options"]
        assert run_dy("explain", c["name"].lstrip("/"), root=ro).stdout.startswith("Container ")
