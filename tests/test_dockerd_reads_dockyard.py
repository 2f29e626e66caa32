"""Acceptance 2: a real dockerd 20.10 started ON a data-root that dockyard wrote uses it like its own.

dockyard loads several fixtures (docker-save tars and an OCI layout) into a fresh data-root; a private dockerd is
then started on that data-root and must list the same images/tags/IDs (as dockyard and as the oracle say), run
containers from them (files read back with the oracle's content), `docker export` the oracle's merged rootfs,
`docker save` them with every layer.tar hashing to its diffID (so the tar-split + diff dirs dockyard wrote
reassemble), `docker rmi` one of them; afterwards dockyard still reads what dockerd left.
"""

from __future__ import annotations

import hashlib
import json
import os
import types
from pathlib import Path
from typing import Any

import pytest

import peers

pytestmark = [pytest.mark.peers, pytest.mark.timeout(600)]

# docker-save fixtures loaded as they are
SAVE_FIXTURES = ["fx-edge.docker.tar", "fx-tags.docker.tar", "fx-shared.docker.tar", "fx-untagged.docker.tar",
                 "fx-dup.docker.tar"]
# OCI layout loaded and re-tagged with a name of ours (its oracle name is a registry ref of the oracle run)
OCI_FIXTURE = "fx-edge.oci-gzip"
OCI_TAG = "fx-edge-oci:1"
RMI_FIXTURE = "fx-dup.docker.tar"


def _expected_tags() -> dict[str, str]:
    """tag -> image ID, from the oracles of the loaded fixtures (+ our tag for the OCI image)."""
    exp: dict[str, str] = {}
    for fx in SAVE_FIXTURES:
        for im in peers.oracle(fx)["images"]:
            for t in im["repo_tags"]:
                exp[t] = im["id"]
    exp[OCI_TAG] = peers.oracle(OCI_FIXTURE)["images"][0]["id"]
    return exp


def _expected_images() -> dict[str, dict[str, Any]]:
    """image ID -> oracle image record."""
    out: dict[str, dict[str, Any]] = {}
    for fx in [*SAVE_FIXTURES, OCI_FIXTURE]:
        for im in peers.oracle(fx)["images"]:
            out.setdefault(im["id"], im)
    return out


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Any:
    peers.need_root()
    fx = peers.fixtures_dir()
    root = tmp_path_factory.mktemp("dy-on-dockerd") / "root"
    # OCI first: whatever name dockyard gives it is replaced by ours, so that fx-edge:1 ends up on the
    # docker-save image as in the oracle
    p = peers.dockyard(root, "load", "-i", str(fx / "oci" / OCI_FIXTURE))
    oci_id = peers.oracle(OCI_FIXTURE)["images"][0]["id"]
    peers.dockyard(root, "tag", oci_id, OCI_TAG)
    for ref in peers.loaded_refs(p.stdout):
        if ref != OCI_TAG and not ref.startswith("sha256:"):
            peers.dockyard(root, "rmi", ref)
    for name in SAVE_FIXTURES:
        peers.dockyard(root, "load", "-i", str(fx / "docker-save" / name))
    dy_rows = peers.dockyard_json_lines(root, "images", "-a", "--no-trunc", "--format", "json")

    d = peers.Dockerd(root)
    d.start()

    yield types.SimpleNamespace(root=root, d=d, dy_rows=dy_rows, fx=fx)
    d.cleanup()
    leftover = peers.mounts_below(root)
    assert not leftover, "mounts left below the data-root: %s" % leftover


def _docker_tags(d: peers.Dockerd) -> dict[str, str]:
    out = {}
    for im in d.api("/images/json?all=1"):
        for t in im.get("RepoTags") or []:
            if t != "<none>:<none>":
                out[t] = im["Id"]
    return out


def _rows(rows: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(r["Repository"], r["Tag"], r["ID"]) for r in rows}


def test_dockerd_lists_the_same_images(state: Any) -> None:
    d: peers.Dockerd = state.d
    expected = _expected_tags()
    got = _docker_tags(d)
    assert got == expected, "dockerd on dockyard's data-root lists other tags/IDs than the oracle.\n" \
        "missing: %s\nextra/different: %s\ndockerd log:\n%s" % (
            {k: v for k, v in expected.items() if got.get(k) != v},
            {k: v for k, v in got.items() if expected.get(k) != v}, d.log_tail(3000))
    # no image that should exist is hidden / no extra image appeared
    api_ids = {im["Id"] for im in d.api("/images/json?all=1")}
    assert api_ids == set(expected.values())

    # the CLI table as JSON: same rows as `dockyard images --format json`
    cli = d.images_cli("-a")
    assert _rows(cli) == _rows(state.dy_rows), "docker images vs dockyard images:\ndocker only: %s\ndockyard only: %s" % (
        _rows(cli) - _rows(state.dy_rows), _rows(state.dy_rows) - _rows(cli))
    by_id = {r["ID"]: r["CreatedAt"] for r in cli}
    for r in state.dy_rows:
        assert r["CreatedAt"] == by_id[r["ID"]], "CreatedAt of %s" % r["ID"]

    # sizes, layers and configs as Docker itself recorded them for the same images
    oracle_images = _expected_images()
    for im in d.api("/images/json?all=1"):
        o = oracle_images[im["Id"]]
        assert im["Size"] == o["size"], "Size of %s (%s)" % (im["Id"], o["repo_tags"])
        insp = d.api("/images/%s/json" % im["Id"])
        assert insp["RootFS"]["Layers"] == o["diff_ids"]
        assert insp["Config"] == o["config"]
        assert insp["Architecture"] == o["architecture"] and insp["Os"] == o["os"]
        assert insp["GraphDriver"]["Name"] == "overlay2"
        for k in ("UpperDir", "MergedDir", "WorkDir"):
            assert insp["GraphDriver"]["Data"][k].startswith(os.path.realpath(state.root) + "/overlay2/")
        # history: Docker derives it from the config; sizes come from the layerdb
        hist = d.api("/images/%s/history" % im["Id"])
        assert [h["Size"] for h in hist] == [h["Size"] for h in o["history_api"]], "history sizes of %s" % im["Id"]


@pytest.mark.parametrize("ref,fixture", [("fx-edge:1", "fx-edge.docker.tar"), (OCI_TAG, OCI_FIXTURE)])
def test_docker_run_reads_layer_files(state: Any, ref: str, fixture: str) -> None:
    d: peers.Dockerd = state.d
    picks = peers.pick_files(peers.oracle(fixture)["images"][0])
    assert len(picks) == 2
    for path, sha in picks:
        p = d.docker("run", "--rm", "--network", "none", ref, "cat", "/" + path, text=False, timeout=120)
        assert "sha256:" + hashlib.sha256(p.stdout).hexdigest() == sha, "content of /%s in %s" % (path, ref)
    # the image's own config is used (WORKDIR /app of fx-edge, user root, PATH)
    p = d.docker("run", "--rm", "--network", "none", ref, "sh", "-c", "pwd; id -u; echo $FX_ENV")
    assert p.stdout.split() == ["/app", "0", "1"]


@pytest.mark.parametrize("fixture", [*SAVE_FIXTURES[:3], "fx-dup.docker.tar", OCI_FIXTURE])
def test_docker_export_matches_oracle_rootfs(state: Any, fixture: str, tmp_path: Path) -> None:
    """The merged rootfs dockerd mounts from dockyard's layers equals the one Docker built from its own."""
    d: peers.Dockerd = state.d
    for im in peers.oracle(fixture)["images"]:
        name = "dy-export-%s" % im["id"][7:19]
        d.docker("rm", "-f", name, check=False)
        d.docker("create", "--name", name, "--network", "none", im["id"], "/placeholder-cmd")
        out = tmp_path / (name + ".tar")
        try:
            d.docker("export", "-o", str(out), name)
        finally:
            d.docker("rm", "-f", "-v", name)
        diffs = peers.compare_export(peers.tar_listing(out), im["export_listing"])
        assert not diffs, "%s (%s): %d differences, first ones:\n%s" % (
            fixture, im["id"], len(diffs), "\n".join(diffs[:40]))


@pytest.mark.parametrize("fixture", [*SAVE_FIXTURES, OCI_FIXTURE])
def test_docker_save_reassembles_layers(state: Any, fixture: str, tmp_path: Path) -> None:
    """docker save reads dockyard's tar-split.json.gz + diff dirs: every layer.tar must hash to its diffID; for
    the docker-save fixtures the archive has exactly the members the fixture (a docker save) has."""
    d: peers.Dockerd = state.d
    orc = peers.oracle(fixture)
    if fixture == OCI_FIXTURE:
        names = [OCI_TAG]
    elif orc["docker_save"]["manifest_json"][0]["RepoTags"] is None:
        names = [m["Config"][:-5] for m in orc["docker_save"]["manifest_json"]]  # saved by ID
    else:
        names = [t for m in orc["docker_save"]["manifest_json"] for t in m["RepoTags"]]
    out = tmp_path / "save.tar"
    d.docker("save", "-o", str(out), *names)
    st = peers.SaveTar(out)
    manifest = st.json("manifest.json")
    for item in manifest:
        cfg = st.data[item["Config"]]
        image_id = "sha256:" + hashlib.sha256(cfg).hexdigest()
        assert item["Config"] == image_id[7:] + ".json"
        diff_ids = json.loads(cfg)["rootfs"]["diff_ids"]
        assert len(item["Layers"]) == len(diff_ids)
        for layer, diff_id in zip(item["Layers"], diff_ids, strict=True):
            real = st.resolve(layer)
            assert st.sha[real] == diff_id, "%s: layer %s (-> %s) of %s does not hash to its diffID" % (
                fixture, layer, real, image_id)
    if fixture != OCI_FIXTURE:
        ds = orc["docker_save"]
        assert sorted(st.order) == sorted(ds["tar_members"])
        assert sorted(manifest, key=lambda m: m["Config"]) == sorted(ds["manifest_json"], key=lambda m: m["Config"])
        if ds.get("repositories") is not None:
            assert st.json("repositories") == ds["repositories"]
        fixture_tar = peers.SaveTar(state.fx / "docker-save" / fixture)
        for name, sha in fixture_tar.sha.items():
            if name == "manifest.json" and len(manifest) > 1:
                continue  # dockerd orders the images of a save by Go map iteration: compared sorted above
            assert st.sha.get(name) == sha, "member %s differs from the fixture's (same docker save)" % name


def test_rmi_then_dockyard_reads_back(state: Any) -> None:
    """docker rmi of a dockyard-loaded image deletes its layers; dockerd keeps running; after it stops, dockyard
    reads the data-root dockerd left behind."""
    d: peers.Dockerd = state.d
    root = Path(state.root)
    orc = peers.oracle(RMI_FIXTURE)["images"][0]
    ref = orc["repo_tags"][0]
    caches = {}
    for chain in orc["chain_ids"]:
        cache = (root / "image/overlay2/layerdb/sha256" / chain[7:] / "cache-id").read_text().strip()
        link = (root / "overlay2" / cache / "link").read_text().strip()
        caches[chain] = (cache, link)
    before = _docker_tags(d)

    p = d.docker("rmi", ref)
    lines = p.stdout.splitlines()
    assert "Untagged: %s" % ref in lines
    assert "Deleted: %s" % orc["id"] in lines
    for chain in orc["chain_ids"]:
        assert "Deleted: %s" % chain in lines, "layer %s not deleted by dockerd:\n%s" % (chain, p.stdout)
    assert d.running
    assert d.docker("version", "--format", "{{.Server.Version}}").stdout.strip() == d.server_version
    after = _docker_tags(d)
    expected_after = {k: v for k, v in before.items() if k != ref}
    assert after == expected_after
    for chain, (cache, link) in caches.items():
        assert not (root / "image/overlay2/layerdb/sha256" / chain[7:]).exists()
        assert not (root / "overlay2" / cache).exists()
        assert not os.path.lexists(root / "overlay2" / "l" / link)

    d.stop()
    assert not d.running
    assert not peers.mounts_below(root), "dockerd left mounts below the data-root"
    rows = peers.dockyard_json_lines(root, "images", "-a", "--no-trunc", "--format", "json")
    got = {(r["Repository"] + ":" + r["Tag"]): r["ID"] for r in rows if r["Tag"] != "<none>"}
    assert got == expected_after, "dockyard after dockerd: %s" % rows
    assert not [r for r in rows if r["Tag"] == "<none>"], "dangling images after rmi: %s" % rows
    p = peers.dockyard(root, "inspect", ref, check=False)
    assert p.returncode != 0
    assert p.stderr.decode().strip().splitlines()[-1].startswith("Error:")
    # the remaining images are intact for dockyard too
    for tag, image_id in expected_after.items():
        ex = json.loads(peers.dockyard(root, "explain", "--format", "json", tag).stdout)
        assert ex["id"] == image_id
        o = _expected_images()[image_id]
        assert [layer["chain_id"] for layer in ex["layers"]] == o["chain_ids"]
