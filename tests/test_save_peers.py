"""Acceptance 5: what `dockyard save` writes is accepted by the real tools.

docker format: the archive has exactly the structure `docker save` (20.10) wrote for the same images (the
docker-save fixtures ARE such saves): member names (v1 ids), types, symlinks for repeated layers, config/json/
VERSION/repositories bytes, layer.tar hashes; a FRESH private dockerd `docker load`s it with unchanged IDs and
RepoTags and runs fx-edge.

OCI format: `skopeo inspect oci-archive:FILE` (+ --raw, --config) shows the image ID as config digest and the
diff_ids; `umoci unpack` of the layout gives the rootfs Docker itself exported for the image (oracle); dockyard
loads its own OCI save back with the same image ID and names.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import tarfile
import types
from pathlib import Path
from typing import Any

import pytest

import peers

pytestmark = [pytest.mark.peers, pytest.mark.timeout(600)]

DOCKER_CASES = ["fx-edge.docker.tar", "fx-tags.docker.tar", "fx-shared.docker.tar", "fx-dup.docker.tar"]
OCI_CASES = ["fx-edge.docker.tar", "fx-tags.docker.tar", "fx-dup.docker.tar"]


def _names(fixture: str) -> list[str]:
    """The names the fixture was saved with (RepoTags of its manifest.json, in order)."""
    return [t for m in peers.oracle(fixture)["docker_save"]["manifest_json"] for t in (m["RepoTags"] or [])]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    peers.need_root()
    fx = peers.fixtures_dir()
    root = tmp_path_factory.mktemp("save-peers") / "root"
    for name in DOCKER_CASES:
        peers.dockyard(root, "load", "-i", str(fx / "docker-save" / name))
    out = tmp_path_factory.mktemp("saves")
    saves = {}
    for name in DOCKER_CASES:
        f = out / (name + ".dockyard.tar")
        peers.dockyard(root, "save", "-o", str(f), *_names(name))
        saves[name] = f
    return types.SimpleNamespace(root=root, fx=fx, saves=saves, out=out)


# --------------------------------------------------------------------------------------------- docker format
@pytest.mark.parametrize("fixture", DOCKER_CASES)
def test_docker_save_structure_matches_docker(env: Any, fixture: str) -> None:
    ours = peers.SaveTar(env.saves[fixture])
    ref = peers.SaveTar(env.fx / "docker-save" / fixture)  # written by `docker save` from the same images
    ds = peers.oracle(fixture)["docker_save"]

    assert sorted(ours.order) == sorted(ds["tar_members"]) == sorted(ref.order), \
        "members: only dockyard %s, only docker %s" % (sorted(set(ours.order) - set(ref.order)),
                                                       sorted(set(ref.order) - set(ours.order)))
    assert ours.kinds() == ref.kinds()
    for name, m in ref.members.items():
        if m.issym():
            assert ours.members[name].linkname == m.linkname, "symlink %s" % name

    # manifest.json: Config / RepoTags / Layers as docker wrote them (entry order of several images is Go
    # map order in docker 20.10, so compare sorted)
    manifest = ours.json("manifest.json")
    assert sorted(manifest, key=lambda x: x["Config"]) == sorted(ds["manifest_json"], key=lambda x: x["Config"])
    if len(manifest) == 1:
        assert ours.data["manifest.json"] == ref.data["manifest.json"], "manifest.json bytes"
    if ds.get("repositories") is not None:
        assert ours.json("repositories") == ds["repositories"]
        assert ours.data["repositories"] == ref.data["repositories"], "repositories bytes"
    else:
        assert "repositories" not in ours.members

    # every regular file: same bytes (configs, <v1id>/json, VERSION) / same layer hash
    for name, sha in ref.sha.items():
        if name == "manifest.json":
            continue
        assert ours.sha.get(name) == sha, "%s differs from docker's" % name

    # layers hash to the diffIDs; a repeated diffID is stored once, the other layer.tar are symlinks
    for img in ds["images"]:
        for layer in img["layers"]:
            real = ours.resolve(layer["path"])
            assert ours.sha[real] == layer["config_diff_id"]
            if "symlink_to" in layer:
                assert ours.members[layer["path"]].issym()
                assert ours.members[layer["path"]].linkname == layer["symlink_to"]
            else:
                assert ours.members[layer["path"]].isfile()


@pytest.mark.parametrize("fixture", DOCKER_CASES)
def test_docker_loads_dockyard_save(env: Any, fixture: str, tmp_path: Path) -> None:
    orc = peers.oracle(fixture)
    with peers.Dockerd(tmp_path / "root") as d:
        p = d.docker("load", "-i", str(env.saves[fixture]))
        assert sorted(peers.loaded_refs(p.stdout)) == sorted(_names(fixture))
        tags: dict[str, str] = {}
        for im in d.api("/images/json?all=1"):
            for t in im.get("RepoTags") or []:
                tags[t] = im["Id"]
        assert tags == {t: im["id"] for im in orc["images"] for t in im["repo_tags"]}
        for im in orc["images"]:
            insp = d.api("/images/%s/json" % im["id"])
            assert sorted(insp["RepoTags"]) == sorted(im["repo_tags"])
            assert insp["RootFS"]["Layers"] == im["diff_ids"]
            assert insp["Size"] == im["size"]
            assert insp["Config"] == im["config"]
        if fixture == "fx-edge.docker.tar":
            im = orc["images"][0]
            want = {e["path"]: e["sha256"] for e in im["export_listing"] if e["type"] == "file"}
            for path in ("etc/passwd", "wh/recreate-later/again"):
                r = d.docker("run", "--rm", "--network", "none", "fx-edge:1", "cat", "/" + path, text=False)
                assert "sha256:" + hashlib.sha256(r.stdout).hexdigest() == want[path], path
            r = d.docker("run", "--rm", "--network", "none", "fx-edge:1", "sh", "-c", "pwd; echo $FX_ENV")
            assert r.stdout.split() == ["/app", "1"]
        # and dockerd can export what it loaded (layers registered, tar-split usable)
        out = tmp_path / "resave.tar"
        d.docker("save", "-o", str(out), *_names(fixture))
        again = peers.SaveTar(out)
        assert sorted(again.order) == sorted(orc["docker_save"]["tar_members"])


# --------------------------------------------------------------------------------------------- OCI format
def _oci_save(env: Any, fixture: str) -> Path:
    f = env.out / (fixture + ".oci.tar")
    if not f.exists():
        peers.dockyard(env.root, "save", "--format", "oci", "-o", str(f), *_names(fixture))
    return f


def _untar(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(src) as t:
        names = t.getnames()
        assert not [n for n in names if n.startswith("/") or ".." in Path(n).parts], names
        t.extractall(dest, filter="tar") if hasattr(tarfile, "data_filter") else t.extractall(dest)
    return dest


def _skopeo(*args: str) -> Any:
    p = peers.run([peers.need("skopeo"), *args], timeout=120)
    return json.loads(p.stdout)


def _decompress(b: bytes) -> bytes:
    if b[:2] == b"\x1f\x8b":
        return gzip.decompress(b)
    if b[:4] == b"\x28\xb5\x2f\xfd":
        return subprocess.run(["zstd", "-dc"], input=b, capture_output=True, check=True).stdout
    return b


@pytest.mark.parametrize("fixture", OCI_CASES)
def test_oci_save_skopeo_inspect(env: Any, fixture: str, tmp_path: Path) -> None:
    im = peers.oracle(fixture)["images"][0]
    f = _oci_save(env, fixture)
    layout = _untar(f, tmp_path / "layout")
    index = json.loads((layout / "index.json").read_text())
    refs = sorted({(m.get("annotations") or {}).get("org.opencontainers.image.ref.name") for m in index["manifests"]})
    assert None not in refs, "index.json entry without org.opencontainers.image.ref.name: %s" % index
    # one image per save here; several tags may give several index entries, all for the same manifest
    assert len({m["digest"] for m in index["manifests"]}) == 1

    for ref in [None, *refs]:
        target = "oci-archive:%s" % f + (":%s" % ref if ref else "")
        if ref is None and len(index["manifests"]) > 1:
            continue  # skopeo needs a ref when the index has several entries
        info = _skopeo("inspect", target)
        raw = _skopeo("inspect", "--raw", target)
        cfg = _skopeo("inspect", "--config", target)
        assert raw["config"]["digest"] == im["id"], "config digest (image ID) changed"
        assert cfg["rootfs"]["diff_ids"] == im["diff_ids"]
        assert len(raw["layers"]) == len(im["diff_ids"])
        assert info["Layers"] == [lay["digest"] for lay in raw["layers"]]
        assert info["Architecture"] == im["architecture"] and info["Os"] == im["os"]
        assert info["Digest"] == index["manifests"][0]["digest"]

    # the blobs are what the manifest says, and layers decompress to the diffIDs
    manifest_digest = index["manifests"][0]["digest"]
    blob = lambda d: (layout / "blobs" / "sha256" / d.split(":", 1)[1]).read_bytes()  # noqa: E731
    man_bytes = blob(manifest_digest)
    assert peers.sha256_bytes(man_bytes) == manifest_digest
    man = json.loads(man_bytes)
    assert peers.sha256_bytes(blob(man["config"]["digest"])) == im["id"]
    assert len(man["layers"]) == len(im["diff_ids"])
    for lay, diff_id in zip(man["layers"], im["diff_ids"], strict=True):
        b = blob(lay["digest"])
        assert peers.sha256_bytes(b) == lay["digest"] and len(b) == lay["size"]
        assert peers.sha256_bytes(_decompress(b)) == diff_id


@pytest.mark.parametrize("fixture", OCI_CASES)
def test_oci_save_umoci_unpack(env: Any, fixture: str, tmp_path: Path) -> None:
    umoci = peers.need("umoci")
    im = peers.oracle(fixture)["images"][0]
    layout = _untar(_oci_save(env, fixture), tmp_path / "layout")
    index = json.loads((layout / "index.json").read_text())
    refs = sorted({m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]})
    bundle = tmp_path / "bundle"
    p = peers.run([umoci, "unpack", "--image", "%s:%s" % (layout, refs[0]), str(bundle)], check=False, timeout=300)
    assert p.returncode == 0, "umoci unpack %s:%s failed: %s" % (layout, refs[0], p.stderr.decode(errors="replace"))
    cfg = json.loads((bundle / "config.json").read_text())
    assert cfg["process"]["cwd"] == (im["config"]["WorkingDir"] or "/")
    diffs = peers.compare_export(peers.tree_listing(bundle / "rootfs"), peers.flatten_hardlinks(im["export_listing"]))
    assert not diffs, "umoci rootfs vs Docker's export of the same image (%d differences):\n%s" % (
        len(diffs), "\n".join(diffs[:40]))


@pytest.mark.parametrize("fixture", OCI_CASES)
def test_oci_save_round_trip(env: Any, fixture: str, tmp_path: Path) -> None:
    orc = peers.oracle(fixture)
    root = tmp_path / "root"
    p = peers.dockyard(root, "load", "-i", str(_oci_save(env, fixture)))
    assert sorted(peers.loaded_refs(p.stdout)) == sorted(_names(fixture))
    for im in orc["images"]:
        for t in im["repo_tags"]:
            got = peers.dockyard(root, "inspect", "-f", "{{.Id}}", t).stdout.decode().strip()
            assert got == im["id"], "%s after the OCI round trip" % t
        ex = json.loads(peers.dockyard(root, "explain", "--format", "json", im["id"]).stdout)
        assert [lay["chain_id"] for lay in ex["layers"]] == im["chain_ids"]


def test_oci_save_pushed_by_skopeo_pulled_by_dockerd(env: Any, tmp_path: Path) -> None:
    """dockyard's OCI save -> skopeo copy to a private registry -> `docker pull` in a fresh dockerd: same ID."""
    fixture = "fx-edge.docker.tar"
    im = peers.oracle(fixture)["images"][0]
    f = _oci_save(env, fixture)
    with peers.Registry() as reg:
        dest = "%s/dy/edge:1" % reg.addr
        peers.run([peers.need("skopeo"), "copy", "-q", "--dest-tls-verify=false", "oci-archive:%s" % f,
                   "docker://" + dest], timeout=300)
        with peers.Dockerd(tmp_path / "root") as d:
            d.docker("pull", "-q", dest, timeout=300)
            insp = d.api("/images/%s/json" % dest)
            assert insp["Id"] == im["id"]
            assert insp["RootFS"]["Layers"] == im["diff_ids"]
            r = d.docker("run", "--rm", "--network", "none", dest, "cat", "/etc/passwd")
            assert r.stdout.startswith("root:")
