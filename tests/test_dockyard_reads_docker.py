"""Acceptance 3: dockyard reads a data-root written by a real dockerd 20.10 (fixtures/dataroot) without changing it.

The data-root tarball is unpacked into a temp dir; `dockyard images/inspect/explain` must show what the oracle
(oracle/dataroot-docker20.json, recorded by a dockerd started on the same tarball) shows; `dockyard save` of all
its images must `docker load` into a FRESH private dockerd with the same image IDs and tags, every layer.tar
hashing to its diffID. Every dockyard command here only reads: the data-root is snapshotted after unpacking and
compared (every path, type, mode, owner, size, mtime, symlink target, xattrs, file content hash) after each test.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import types
from pathlib import Path
from typing import Any

import pytest

import peers

pytestmark = [pytest.mark.peers, pytest.mark.timeout(600)]

ORACLE = "dataroot-docker20"


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything below root that a writer could change (atime excluded)."""
    snap: dict[str, tuple[Any, ...]] = {}
    rootb = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(rootb):
        for name in [b"", *dirnames, *filenames] if dirpath == rootb else [*dirnames, *filenames]:
            full = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(full)
            rel = os.path.relpath(full, rootb).decode("utf-8", "surrogateescape")
            extra: Any = None
            if stat.S_ISREG(st.st_mode):
                extra = peers.sha256_file(full)
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(full)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                extra = st.st_rdev
            try:
                xa = tuple(sorted((n, os.getxattr(full, n, follow_symlinks=False))
                                  for n in os.listxattr(full, follow_symlinks=False)))
            except OSError:
                xa = ()
            snap[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_nlink, extra, xa)
    return snap


def snapshot_diff(a: dict[str, tuple[Any, ...]], b: dict[str, tuple[Any, ...]]) -> list[str]:
    out = ["removed: %s" % p for p in sorted(set(a) - set(b))]
    out += ["created: %s" % p for p in sorted(set(b) - set(a))]
    fields = ("mode", "uid", "gid", "size", "mtime_ns", "nlink", "content/target/rdev", "xattrs")
    for p in sorted(set(a) & set(b)):
        if a[p] != b[p]:
            changed = [f for f, x, y in zip(fields, a[p], b[p], strict=True) if x != y]
            out.append("changed: %s (%s)" % (p, ", ".join(changed)))
    return out


@pytest.fixture(scope="module")
def droot(tmp_path_factory: pytest.TempPathFactory) -> Any:
    peers.need_root()
    root = tmp_path_factory.mktemp("docker-dataroot") / "root"
    peers.extract_dataroot_fixture(root)
    return types.SimpleNamespace(root=root, snap=snapshot(root), orc=peers.oracle(ORACLE))


@pytest.fixture
def unchanged(droot: Any) -> Any:
    """Fails the test if the data-root changed while it ran."""
    yield droot
    diff = snapshot_diff(droot.snap, snapshot(droot.root))
    assert not diff, "dockyard modified a data-root it only had to read:\n" + "\n".join(diff[:50])


def _oracle_rows(orc: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(r) for r in orc["docker_images_cli"]]


def test_images(unchanged: Any) -> None:
    root, orc = unchanged.root, unchanged.orc
    rows = peers.dockyard_json_lines(root, "images", "--digests", "--no-trunc", "--format", "json")
    exp = _oracle_rows(orc)
    # what `docker images --digests --no-trunc --format '{{json .}}'` printed against the same data-root;
    # VirtualSize/CreatedSince depend on the CLI version and the clock.
    keys = ("Containers", "CreatedAt", "Digest", "ID", "Repository", "Tag", "Size")

    def norm(rs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted(tuple(r.get(k) for k in keys) for r in rs)

    assert norm(rows) == norm(exp)
    # and the tag -> ID map of the oracle's images
    tags = {r["Repository"] + ":" + r["Tag"]: r["ID"] for r in rows}
    assert tags == {t: im["id"] for im in orc["images"] for t in im["repo_tags"]}
    # -a adds nothing here: all images are tagged, none has a child image
    rows_all = peers.dockyard_json_lines(root, "images", "-a", "--no-trunc", "--format", "json")
    assert {r["ID"] for r in rows_all} == {im["id"] for im in orc["images"]}


def _layer_caches(root: Path, chain_ids: list[str]) -> list[str]:
    return [(root / "image/overlay2/layerdb/sha256" / c[7:] / "cache-id").read_text().strip() for c in chain_ids]


def test_inspect(unchanged: Any) -> None:
    root, orc = unchanged.root, unchanged.orc
    rroot = os.path.realpath(root)
    for im in orc["images"]:
        out = json.loads(peers.dockyard(root, "inspect", im["id"]).stdout)
        assert isinstance(out, list) and len(out) == 1
        i = out[0]
        assert i["Id"] == im["id"]
        assert sorted(i["RepoTags"]) == sorted(im["repo_tags"])
        assert sorted(i["RepoDigests"]) == sorted(im["repo_digests"])
        assert i["Parent"] == im["parent"]
        assert i["Created"] == im["created"]
        assert i["DockerVersion"] == im["docker_version"]
        assert i["Architecture"] == im["architecture"] and i["Os"] == im["os"]
        assert i.get("Variant") == im["variant"] or (im["variant"] is None and "Variant" not in i)
        assert i["Size"] == im["size"] and i["VirtualSize"] == im["virtual_size"]
        assert i["Config"] == im["config"]
        assert i["ContainerConfig"]["Cmd"] == im["container_config_cmd"]
        assert i["RootFS"] == {"Type": "layers", "Layers": im["diff_ids"]}
        gd = i["GraphDriver"]
        assert gd["Name"] == im["graphdriver"]["name"]
        assert sorted(gd["Data"]) == sorted(im["graphdriver"]["data_keys"])
        caches = _layer_caches(root, im["chain_ids"])
        top = os.path.join(rroot, "overlay2", caches[-1])
        assert gd["Data"]["UpperDir"] == top + "/diff"
        assert gd["Data"]["WorkDir"] == top + "/work"
        assert gd["Data"]["MergedDir"] == top + "/merged"
        if len(caches) > 1:
            assert gd["Data"]["LowerDir"] == ":".join(
                os.path.join(rroot, "overlay2", c, "diff") for c in reversed(caches[:-1]))
        # also by every tag
        for t in im["repo_tags"]:
            assert json.loads(peers.dockyard(root, "inspect", t).stdout)[0]["Id"] == im["id"]


def test_explain(unchanged: Any) -> None:
    root, orc = unchanged.root, unchanged.orc
    by_diff = orc["store"]["distribution"].get("diffid-by-digest", {})
    digests_of: dict[str, list[str]] = {}
    for dig, diff in by_diff.items():
        digests_of.setdefault(diff, []).append(dig)
    for im in orc["images"]:
        ex = json.loads(peers.dockyard(root, "explain", "--format", "json", im["id"]).stdout)
        assert ex["id"] == im["id"]
        assert sorted(ex["repo_tags"]) == sorted(im["repo_tags"])
        assert sorted(ex["repo_digests"]) == sorted(im["repo_digests"])
        assert len(ex["layers"]) == len(im["layers"])
        caches = _layer_caches(root, im["chain_ids"])
        for i, (lay, ol) in enumerate(zip(ex["layers"], im["layers"], strict=True)):
            assert lay["index"] == i
            assert lay["diff_id"] == im["diff_ids"][i] == ol["diff_id"]
            assert lay["chain_id"] == im["chain_ids"][i] == ol["chain_id"]
            assert lay["parent_chain_id"] == ol["parent"]
            assert lay["size"] == ol["size"]
            assert lay["cache_id"] == caches[i]
            link = (root / "overlay2" / caches[i] / "link").read_text()
            assert lay["link"] == link
            assert lay["link_target"] == os.readlink(root / "overlay2" / "l" / link)
            lower = root / "overlay2" / caches[i] / "lower"
            assert lay["lower"] == (lower.read_text() if lower.exists() else None)
            # blob digests Docker recorded when it pulled (distribution/diffid-by-digest)
            assert sorted(lay["blob_digests"]) == sorted(digests_of.get(lay["diff_id"], []))


def test_save_loads_into_fresh_dockerd(unchanged: Any, tmp_path: Path) -> None:
    root, orc = unchanged.root, unchanged.orc
    names = sorted(t for im in orc["images"] for t in im["repo_tags"])
    out = tmp_path / "all.tar"
    peers.dockyard(root, "save", "-o", str(out), *names)
    st = peers.SaveTar(out)
    manifest = st.json("manifest.json")
    want = {im["id"]: im for im in orc["images"]}
    seen = set()
    for item in manifest:
        cfg = st.data[item["Config"]]
        image_id = "sha256:" + hashlib.sha256(cfg).hexdigest()
        assert image_id in want, "unexpected config %s in the save" % item["Config"]
        seen.add(image_id)
        assert item["Config"] == image_id[7:] + ".json"
        assert sorted(item["RepoTags"]) == sorted(want[image_id]["repo_tags"])
        diff_ids = json.loads(cfg)["rootfs"]["diff_ids"]
        assert diff_ids == want[image_id]["diff_ids"]
        assert len(item["Layers"]) == len(diff_ids)
        for layer, diff_id in zip(item["Layers"], diff_ids, strict=True):
            real = st.resolve(layer)
            assert st.sha.get(real) == diff_id, "layer %s (-> %s) of %s does not hash to its diffID %s" % (
                layer, real, image_id, diff_id)
    assert seen == set(want)

    with peers.Dockerd(tmp_path / "fresh-root") as d:
        p = d.docker("load", "-i", str(out))
        assert sorted(peers.loaded_refs(p.stdout)) == names
        got = {}
        for im in d.api("/images/json?all=1"):
            for t in im.get("RepoTags") or []:
                got[t] = im["Id"]
        assert got == {t: im["id"] for im in orc["images"] for t in im["repo_tags"]}
        for im in orc["images"]:
            insp = d.api("/images/%s/json" % im["id"])
            assert insp["RootFS"]["Layers"] == im["diff_ids"]
            assert insp["Size"] == im["size"]
        # the reloaded fx-edge runs
        r = d.docker("run", "--rm", "--network", "none", "fx-edge:1", "cat", "/etc/passwd")
        assert r.stdout.startswith("root:")


def test_still_unchanged_at_end(droot: Any) -> None:
    diff = snapshot_diff(droot.snap, snapshot(droot.root))
    assert not diff, "\n".join(diff[:50])
