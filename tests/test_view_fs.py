"""`dockyard fs`: the merged view in user space equals the kernel's overlay mount and docker export.

* every fixture image: `fs tar` against the oracle's `export_listing` (what docker export of a fresh
  container made) and byte for byte against a tar of the kernel's own overlay mount of the same layers;
* a container with changes of every kind (delete, dir replaced by a file, opaque dir, hard link into a
  lower layer, chmod, chown, dangling and cyclic symlinks): `fs tar` byte for byte equal to
  `dockyard export` (which tars the kernel's overlay mount);
* ls/cat/stat/find, hostile names, and the data-root unchanged (no lock file, nothing written).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURES, assert_clean_error, load_oracle, run_dy, umount_below
from peers import compare_export, tar_listing

SAVES = ["fx-edge.docker.tar", "fx-tags.docker.tar", "fx-shared.docker.tar", "fx-dup.docker.tar",
         "fx-bigfile.docker.tar.gz", "fx-manyfiles.docker.tar.gz", "fx-buildah.skopeo.docker-archive.tar",
         "fx-multi-arm64.docker.tar"]

CHANGES = (
    "rm /etc/group; rm -rf /links/dir2; rm -rf /perms; echo x > /perms; rm -rf /names; mkdir /names; "
    "echo n > /names/new; ln /bin/ls /app/ls-hard; chmod 700 /home; chown 5:6 /etc/passwd; "
    "ln -s /nowhere /app/dangle; ln -s loop2 /app/loop1; ln -s loop1 /app/loop2; "
    "mkdir -p /app/deep/a/b/c; printf 'new\\nline' > /app/deep/\"$(printf 'nl\\nname')\""
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("view-fs") / "root"
    r.mkdir()
    for s in SAVES:
        run_dy("load", "-i", FIXTURES / "docker-save" / s, root=r)
    yield r
    umount_below(r)


def _images(name: str) -> list[dict]:
    return load_oracle(name)["images"]


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for dp, dn, fn in os.walk(root):
        dn.sort()
        for n in sorted(dn + fn):
            p = os.path.join(dp, n)
            st = os.lstat(p)
            h.update(("%s %o %d %d %d %d\n" % (os.path.relpath(p, root), st.st_mode, st.st_uid, st.st_gid,
                                               st.st_size, st.st_mtime_ns)).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _layer_diffs(root: Path, image_id: str) -> list[str]:
    """The image's diff dirs, top first (read the way a test reads the store: layerdb files)."""
    img = json.loads((root / "image/overlay2/imagedb/content/sha256" / image_id[7:]).read_bytes())
    diffs = img["rootfs"]["diff_ids"]
    chain, out = None, []
    for d in diffs:
        chain = d if chain is None else "sha256:" + hashlib.sha256(("%s %s" % (chain, d)).encode()).hexdigest()
        cache = (root / "image/overlay2/layerdb/sha256" / chain[7:] / "cache-id").read_text().strip()
        out.append(str(root / "overlay2" / cache / "diff"))
    return out[::-1]


def _kernel_tar(root: Path, image_id: str, tmp: Path) -> bytes:
    """docker's archiver over the kernel's read-only overlay mount of the image's layers."""
    from dockyard.archive.export import write_dir_tar

    lowers = _layer_diffs(root, image_id)
    if len(lowers) == 1:
        src = lowers[0]
        mnt = None
    else:
        mnt = tmp / ("mnt-" + image_id[7:19])
        mnt.mkdir()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "ro,lowerdir=" + ":".join(lowers), str(mnt)],
                       check=True)
        src = str(mnt)
    chunks: list[bytes] = []
    try:
        write_dir_tar(src, lambda b: chunks.append(bytes(b)))
    finally:
        if mnt is not None:
            subprocess.run(["umount", str(mnt)], check=True)
    return b"".join(chunks)


@pytest.mark.parametrize("save", SAVES)
def test_fs_tar_equals_docker_export_and_kernel_overlay(root, tmp_path, save):
    for img in _images(save):
        out = tmp_path / (img["id"][7:19] + ".tar")
        run_dy("fs", "tar", "-o", out, img["id"], root=root)
        diffs = compare_export(tar_listing(out), img["export_listing"])
        assert diffs == [], "%s %s: fs tar differs from docker export:\n%s" % (save, img["id"], "\n".join(diffs[:30]))
        assert out.read_bytes() == _kernel_tar(root, img["id"], tmp_path), "%s: fs tar != kernel overlay tar" % save


def test_container_with_changes_equals_export(root, tmp_path):
    name = "view-chg-%d" % os.getpid()
    run_dy("run", "--name", name, "fx-edge:1", "sh", "-c", CHANGES, root=root)
    exp, got = tmp_path / "export.tar", tmp_path / "fs.tar"
    run_dy("export", "-o", exp, name, root=root)
    before = _tree_hash(root)
    run_dy("fs", "tar", "-o", got, name, root=root)
    assert _tree_hash(root) == before, "fs tar changed the data-root"
    assert got.read_bytes() == exp.read_bytes(), "fs tar of the container differs from its export"
    names = {e["path"] for e in tar_listing(got)}
    assert "etc/group" not in names and "links/dir2/" not in names and "names/new" in names
    assert not any(n.startswith("perms/") for n in names)
    # ls / stat / find / cat on the same container
    ls = run_dy("fs", "ls", "--json", name, "/app", root=root).stdout.splitlines()
    recs = {json.loads(x)["path"]: json.loads(x) for x in ls}
    assert recs["/app/dangle"]["target"] == "/nowhere" and recs["/app/dangle"]["layer"] == "rw"
    st = json.loads(run_dy("fs", "stat", "--json", name, "/etc/passwd", root=root).stdout)
    assert (st["uid"], st["gid"], st["layer"]) == (5, 6, "rw")
    assert json.loads(run_dy("fs", "stat", "--json", name, "/home", root=root).stdout)["mode"] == "0700"
    found = run_dy("fs", "find", "--type", "f", "--name", "new", name, "/names", root=root).stdout.split()
    assert found == ["/names/new"]
    assert run_dy("fs", "cat", name, "/names/new", root=root).stdout == "n\n"
    # a table escapes the newline in a name; JSON keeps the exact name
    table = run_dy("fs", "ls", name, "/app/deep", root=root).stdout
    assert "nl\\nname" in table and len([x for x in table.splitlines() if x]) == 2
    js = [json.loads(x) for x in run_dy("fs", "ls", "--json", name, "/app/deep", root=root).stdout.splitlines()]
    assert "/app/deep/nl\nname" in {j["path"] for j in js}
    # symlinks are resolved inside the view: a loop is a clear error, a dangling one is not found
    p = run_dy("fs", "cat", name, "/app/loop1", root=root, check=False)
    assert "too many levels of symbolic links" in assert_clean_error(p)
    p = run_dy("fs", "cat", name, "/app/dangle", root=root, check=False)
    assert_clean_error(p)
    assert _tree_hash(root) == before, "fs commands changed the data-root"


def test_symlink_resolution_stays_in_the_view(root):
    # fx-edge has a symlink climbing above / (../../../../../../../etc/passwd): it lands on the view's /etc/passwd
    listing = run_dy("fs", "find", "--type", "l", "fx-edge:1", "/links", "--json", root=root).stdout.splitlines()
    climbing = [json.loads(x)["path"] for x in listing if json.loads(x).get("target", "").startswith("../../../")]
    assert climbing, "fixture has no climbing symlink"
    got = run_dy("fs", "cat", "fx-edge:1", climbing[0], root=root).stdout
    assert got == run_dy("fs", "cat", "fx-edge:1", "/etc/passwd", root=root).stdout


def test_missing_diff_dir_is_named_and_rest_works(tmp_path):
    r = tmp_path / "root"
    r.mkdir()
    run_dy("load", "-i", FIXTURES / "docker-save" / "fx-edge.docker.tar", root=r)
    img = _images("fx-edge.docker.tar")[0]
    diffs = _layer_diffs(r, img["id"])
    os.rename(diffs[2], diffs[2] + ".gone")  # a middle layer's diff dir is missing
    p = run_dy("fs", "ls", "fx-edge:1", "/", root=r, check=False)
    assert p.returncode == 1 and "bin" in p.stdout.split()
    assert "cannot open its diff dir" in assert_clean_error(p)


def test_bad_target_is_one_error_line(root):
    assert_clean_error(run_dy("fs", "ls", "no-such-image:1", root=root, check=False))
    assert_clean_error(run_dy("fs", "cat", "fx-edge:1", "/no/such/file", root=root, check=False))
    assert_clean_error(run_dy("fs", "cat", "fx-edge:1", "/bin", root=root, check=False))
