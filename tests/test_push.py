"""Acceptance (push, 2): `dockyard push` of a loaded fixture, checked with the real registry, skopeo and dockerd.

One sequence on a real docker-registry (its storage dir and its access log are read directly):

1. dockyard loads fx-edge.docker.tar, tags it ADDR/x/edge:1 and pushes it (gzip);
2. pushes it again (must upload nothing);
3. tags and pushes ADDR/y/edge:1 (the layers must be cross-repository mounted from x/edge, not uploaded);
4. tags and pushes ADDR/z/edge:1 with --compression zstd (OCI manifest, zstd layers).

For comparison a private dockerd 20.10 loads the same fixture and pushes it to ADDR/dk/edge:1, again, and to
ADDR/dk2/edge:1: its output, manifest layout, repositories.json and distribution/ records are the oracle for
dockyard's (blob digests differ: gzip bytes depend on the compressor). The HMAC rule the tests use (fact sheet
§5) is first checked against the HMACs that dockerd itself recorded.

Then a fresh dockerd pulls ADDR/x/edge:1 and runs it (`docker run --rm --network none ... cat <file>`), and
dockyard pulls the zstd push back into a fresh data-root.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import types
from pathlib import Path
from typing import Any

import pytest
import zstandard

import peers
from pulllib import (
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    SAVE,
    StoreFacts,
    blob_uploads,
    docker_hmac,
    docker_hmac_key,
    dy,
    dy_ok,
    go_json,
    http_get,
    isolated_docker_config,  # noqa: F401  (autouse fixture)
    push_summary,
    registry_access,
    registry_blobs,
    registry_log_size,
    sha256_bytes,
    show,
    skopeo_raw,
)
from registry_servers import DockerRegistry, need

pytestmark = [pytest.mark.peers, pytest.mark.timeout(600)]

FIXTURE = "fx-edge.docker.tar"
GZIP_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_CONFIG_MT = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG_MT = "application/vnd.oci.image.config.v1+json"
ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"


def _oracle() -> dict[str, Any]:
    return peers.oracle(FIXTURE)["images"][0]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    peers.need_root()
    need("docker-registry")
    skopeo = need("skopeo")
    base = tmp_path_factory.mktemp("push")
    with DockerRegistry(base / "reg") as reg:
        storage = base / "reg" / "data"
        root = base / "dockyard"
        root.mkdir()
        dy_ok(root, "load", "-i", str(SAVE / FIXTURE))
        image_id = _oracle()["id"]
        steps: dict[str, Any] = {}

        def step(name: str, *args: str) -> None:
            since, blobs0 = registry_log_size(reg), registry_blobs(storage)
            p = dy(root, *args)
            facts = StoreFacts.read(root)
            steps[name] = types.SimpleNamespace(
                p=p, out=push_summary(p.stdout) if p.returncode == 0 else None, log=registry_access(reg, since),
                blobs_before=blobs0, blobs_after=registry_blobs(storage), dist=facts.distribution(),
                repos=facts.repositories_raw)

        for repo in ("x", "y", "z"):
            dy_ok(root, "tag", "fx-edge:1", "%s/%s/edge:1" % (reg.addr, repo))
        step("first", "push", "%s/x/edge:1" % reg.addr)
        step("again", "push", "%s/x/edge:1" % reg.addr)
        step("other_repo", "push", "%s/y/edge:1" % reg.addr)
        step("zstd", "push", "--compression", "zstd", "%s/z/edge:1" % reg.addr)

        # the same with a real dockerd, as the oracle for output, manifest layout and records
        dk: dict[str, Any] = {}
        with peers.Dockerd(base / "docker-push") as d:
            d.docker("load", "-i", str(SAVE / FIXTURE))
            for repo in ("dk", "dk2"):
                d.docker("tag", "fx-edge:1", "%s/%s/edge:1" % (reg.addr, repo))
            since = registry_log_size(reg)
            dk["first"] = push_summary(d.docker("push", "%s/dk/edge:1" % reg.addr).stdout)
            dk["again"] = push_summary(d.docker("push", "%s/dk/edge:1" % reg.addr).stdout)
            mid = registry_log_size(reg)
            dk["other_repo"] = push_summary(d.docker("push", "%s/dk2/edge:1" % reg.addr).stdout)
            dk["log_first"] = registry_access(reg, since, agent="docker/")
            dk["log_other_repo"] = registry_access(reg, mid, agent="docker/")
        dkf = StoreFacts.read(base / "docker-push")
        dk["dist"], dk["repos"] = dkf.distribution(), dkf.repositories_raw
        raw = {repo: skopeo_raw(skopeo, "%s/%s/edge:1" % (reg.addr, repo)) for repo in ("x", "y", "z", "dk")}

        yield types.SimpleNamespace(reg=reg, addr=reg.addr, root=root, base=base, steps=steps, dk=dk, raw=raw,
                                    image_id=image_id, storage=storage, skopeo=skopeo)


def _step(run: Any, name: str) -> Any:
    s = run.steps[name]
    assert s.p.returncode == 0, show(s.p)
    assert "Traceback" not in s.p.stderr, show(s.p)
    return s


def _layer_blob(run: Any, repo: str, digest: str) -> bytes:
    data = http_get("http://%s/v2/%s/blobs/%s" % (run.addr, repo, digest))
    assert sha256_bytes(data) == digest, "registry blob %s of %s does not hash to its digest" % (digest, repo)
    return data


# ------------------------------------------------------------------------------------------------ first push
def test_first_push_output(run: Any) -> None:
    s = _step(run, "first")
    o, d = s.out, run.dk["first"]
    assert o["first"] == "The push refers to repository [%s/x/edge]" % run.addr
    assert d["first"] == "The push refers to repository [%s/dk/edge]" % run.addr
    # same layer ids (short diffIDs) with the same final state as dockerd's first push
    assert o["layers"] == d["layers"], "per-layer results\n  docker:   %s\n  dockyard: %s" % (d["layers"], o["layers"])
    assert set(o["layers"].values()) == {"Pushed"}
    assert o["tag"] == "1"
    assert o["digest"] == sha256_bytes(run.raw["x"]), "printed digest is not the digest of the stored manifest"
    assert o["size"] == len(run.raw["x"])
    # what the registry saw (this also shows that the access-log parsing used below sees uploads)
    digests = {x["digest"] for x in json.loads(run.raw["x"])["layers"]}
    up = blob_uploads(s.log)
    assert {a.query.get("digest", ["?"])[0] for a in up["put"] if a.status == 201} == digests | {run.image_id}
    assert s.blobs_after - s.blobs_before == digests | {run.image_id, o["digest"]}  # the manifest is a blob too


def test_manifest_is_docker_schema2_of_the_image(run: Any) -> None:
    _step(run, "first")
    orc = _oracle()
    m = json.loads(run.raw["x"])
    assert m["schemaVersion"] == 2 and m["mediaType"] == DOCKER_MANIFEST
    cfg = http_get("http://%s/v2/x/edge/blobs/%s" % (run.addr, run.image_id))
    assert m["config"] == {"mediaType": DOCKER_CONFIG_MT, "size": len(cfg), "digest": run.image_id}
    assert sha256_bytes(cfg) == run.image_id, "the pushed config is not the image's config bytes"
    assert len(m["layers"]) == len(orc["diff_ids"])
    for i, (desc, diff_id) in enumerate(zip(m["layers"], orc["diff_ids"], strict=True)):
        assert desc["mediaType"] == GZIP_LAYER, desc
        blob = _layer_blob(run, "x/edge", desc["digest"])
        assert len(blob) == desc["size"], "layer %d: size in manifest %d, blob %d" % (i, desc["size"], len(blob))
        assert blob[:2] == b"\x1f\x8b", "layer %d is not gzip" % i
        assert sha256_bytes(gzip.decompress(blob)) == diff_id, "layer %d: uncompressed digest != diff_id" % i

    # byte layout as dockerd writes it (3-space indent, key order, no trailing newline): equal to dockerd's own
    # manifest once the layer digests and sizes (compressor-dependent) are masked
    def mask(raw: bytes) -> bytes:
        raw = re.sub(rb'"digest": "sha256:[0-9a-f]{64}"', b'"digest": "<D>"', raw)
        return re.sub(rb'"size": \d+', b'"size": <N>', raw)

    assert mask(run.raw["x"]) == mask(run.raw["dk"]), "manifest bytes\n  docker:   %r\n  dockyard: %r" % (
        run.raw["dk"][:400], run.raw["x"][:400])


def test_fresh_dockerd_pulls_and_runs_the_pushed_image(run: Any, tmp_path: Path) -> None:
    _step(run, "first")
    orc = _oracle()
    ref = "%s/x/edge:1" % run.addr
    with peers.Dockerd(tmp_path / "docker") as d:
        d.docker("pull", ref, timeout=180)
        insp = d.api("/images/%s/json" % ref)
        assert insp["Id"] == run.image_id
        assert insp["RootFS"]["Layers"] == orc["diff_ids"]
        assert insp["Config"] == orc["config"]
        for path, sha in peers.pick_files(orc):
            p = d.docker("run", "--rm", "--network", "none", ref, "cat", "/" + path, text=False, timeout=120)
            assert "sha256:" + hashlib.sha256(p.stdout).hexdigest() == sha, "content of /%s" % path


def test_docker_hmac_rule_matches_dockerd(run: Any) -> None:
    """The HMAC rule this module uses reproduces every HMAC dockerd recorded for its own anonymous push."""
    entries = [e for k, v in run.dk["dist"].items() if "/v2metadata-by-diffid/" in k for e in json.loads(v)]
    assert entries and all(e["HMAC"] for e in entries)
    key = docker_hmac_key()  # anonymous: json {} -> "sha256:<hex>"
    bad = [e for e in entries if docker_hmac(key, e["Digest"], e["SourceRepository"]) != e["HMAC"]]
    assert not bad, "the test's HMAC rule does not match dockerd's records: %s" % bad


def _expected_dist(run: Any, pushes: list[tuple[str, list[str]]]) -> dict[str, bytes]:
    """distribution/ after the given pushes [(repository, layer digests)], in dockerd's format."""
    orc = _oracle()
    key = docker_hmac_key()
    meta: dict[str, list[dict[str, str]]] = {}
    by_digest: dict[str, str] = {}
    for repo, digests in pushes:
        name = "%s/%s" % (run.addr, repo)
        for digest, diff_id in zip(digests, orc["diff_ids"], strict=True):
            by_digest[digest] = diff_id
            e = {"Digest": digest, "SourceRepository": name, "HMAC": docker_hmac(key, digest, name)}
            lst = meta.setdefault(diff_id, [])
            if e in lst:
                lst.remove(e)
            lst.append(e)
    out = {"image/overlay2/distribution/diffid-by-digest/sha256/" + d[7:]: i.encode() for d, i in by_digest.items()}
    out.update({"image/overlay2/distribution/v2metadata-by-diffid/sha256/" + i[7:]: go_json(v).encode()
                for i, v in meta.items()})
    return out


def _dist_diff(want: dict[str, bytes], got: dict[str, bytes]) -> str:
    return "\n".join("%s\n    expected: %s\n    dockyard: %s" % (k, want.get(k), got.get(k))
                     for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k))


def test_first_push_records(run: Any) -> None:
    """distribution/ holds every pushed digest with the HMAC Docker computes; repositories.json gains
    name@<manifest digest> (dockerd does the same, see its own records)."""
    s = _step(run, "first")
    digests = [x["digest"] for x in json.loads(run.raw["x"])["layers"]]
    want = _expected_dist(run, [("x/edge", digests)])
    assert s.dist == want, _dist_diff(want, s.dist)
    refs = json.loads(s.repos)["Repositories"]
    name = "%s/x/edge" % run.addr
    assert refs.get(name) == {name + ":1": run.image_id, name + "@" + s.out["digest"]: run.image_id}
    dkname = "%s/dk/edge" % run.addr
    assert json.loads(run.dk["repos"])["Repositories"][dkname] == {
        dkname + ":1": run.image_id, dkname + "@" + run.dk["first"]["digest"]: run.image_id}


# ------------------------------------------------------------------------------------------------ push again
def test_push_again_uploads_no_blob(run: Any) -> None:
    s = _step(run, "again")
    first = _step(run, "first")
    assert set(s.out["layers"].values()) == {"Layer already exists"}, s.out["layers"]
    assert s.out["layers"].keys() == run.dk["again"]["layers"].keys()
    assert set(run.dk["again"]["layers"].values()) == {"Layer already exists"}
    up = blob_uploads(s.log)
    assert not (up["start"] or up["mount"] or up["patch"] or up["put"]), "blob uploads on an unchanged push:\n%s" % (
        "\n".join("%s %s %s" % (a.method, a.path, a.query) for k in up.values() for a in k))
    assert s.blobs_after == s.blobs_before, "the registry stores new blobs: %s" % (s.blobs_after - s.blobs_before)
    assert s.out["digest"] == first.out["digest"] and s.out["size"] == first.out["size"]
    assert s.dist == first.dist, "distribution/ changed by a push that uploaded nothing"


# ------------------------------------------------------------------------------------------------ other repository
def test_push_to_other_repo_mounts(run: Any) -> None:
    s = _step(run, "other_repo")
    digests = [x["digest"] for x in json.loads(run.raw["x"])["layers"]]
    assert set(s.out["layers"].values()) == {"Mounted from x/edge"}, s.out["layers"]
    assert set(run.dk["other_repo"]["layers"].values()) == {"Mounted from dk/edge"}
    assert s.out["layers"].keys() == run.dk["other_repo"]["layers"].keys()
    up = blob_uploads(s.log)
    mounted = {a.query["mount"][0] for a in up["mount"] if a.status == 201 and a.query.get("from") == ["x/edge"]}
    assert mounted == set(digests), "mounts: %s, layers: %s" % (mounted, digests)
    uploaded = {a.query.get("digest", ["?"])[0] for a in up["put"]}
    # the config is uploaded into the new repository, not mounted: dockerd does exactly the same
    dk_up = blob_uploads(run.dk["log_other_repo"])
    dk_uploaded = {a.query.get("digest", ["?"])[0] for a in dk_up["put"]}
    assert dk_uploaded <= {run.image_id}, dk_uploaded
    assert uploaded <= {run.image_id}, "layers uploaded instead of mounted: %s" % (uploaded - {run.image_id})
    assert len(up["start"]) <= 1 and len(up["put"]) <= 1, [(a.method, a.path, a.query) for a in s.log]
    assert s.blobs_after == s.blobs_before, "new blobs stored: %s" % (s.blobs_after - s.blobs_before)
    assert json.loads(run.raw["y"]) == json.loads(run.raw["x"])
    # distribution/: the mounted digests recorded for y/edge too, newest last (dockerd: dk then dk2)
    want = _expected_dist(run, [("x/edge", digests), ("y/edge", digests)])
    assert s.dist == want, _dist_diff(want, s.dist)
    dk_digests = [x["digest"] for x in json.loads(run.raw["dk"])["layers"]]
    for dg, diff_id in zip(dk_digests, _oracle()["diff_ids"], strict=True):
        recs = json.loads(run.dk["dist"]["image/overlay2/distribution/v2metadata-by-diffid/sha256/" + diff_id[7:]])
        assert [r["SourceRepository"] for r in recs if r["Digest"] == dg] == [
            "%s/dk/edge" % run.addr, "%s/dk2/edge" % run.addr], recs


def test_repositories_json_like_dockerd(run: Any) -> None:
    """After push, push again and push to a second repository, repositories.json is what dockerd wrote for the
    same sequence (its repository names and manifest digest mapped to dockyard's)."""
    s = _step(run, "other_repo")
    dkraw = run.dk["repos"].decode()
    dkraw = dkraw.replace(run.dk["first"]["digest"], s.out["digest"])
    dkraw = dkraw.replace("%s/dk2/" % run.addr, "%s/y/" % run.addr).replace("%s/dk/" % run.addr, "%s/x/" % run.addr)
    want = json.loads(dkraw)
    got = json.loads(s.repos)
    # z/edge:1 was tagged (not yet pushed) in dockyard at this point; dockerd had no such tag
    got["Repositories"].pop("%s/z/edge" % run.addr, None)
    assert got == want
    assert s.repos.startswith(b'{"Repositories":{') and not s.repos.endswith(b"\n")


# ------------------------------------------------------------------------------------------------ zstd
def test_push_zstd_is_oci_with_zstd_layers(run: Any, tmp_path: Path) -> None:
    s = _step(run, "zstd")
    orc = _oracle()
    m = json.loads(run.raw["z"])
    assert m["schemaVersion"] == 2 and m["mediaType"] == OCI_MANIFEST
    assert s.out["digest"] == sha256_bytes(run.raw["z"]) and s.out["size"] == len(run.raw["z"])
    cfg = http_get("http://%s/v2/z/edge/blobs/%s" % (run.addr, run.image_id))
    assert m["config"] == {"mediaType": OCI_CONFIG_MT, "size": len(cfg), "digest": run.image_id}
    gz_digests = {x["digest"] for x in json.loads(run.raw["x"])["layers"]}
    assert len(m["layers"]) == len(orc["diff_ids"])
    for i, (desc, diff_id) in enumerate(zip(m["layers"], orc["diff_ids"], strict=True)):
        assert desc["mediaType"] == ZSTD_LAYER, desc
        assert desc["digest"] not in gz_digests, "layer %d: the gzip blob was reused for a zstd push" % i
        blob = _layer_blob(run, "z/edge", desc["digest"])
        assert len(blob) == desc["size"]
        assert blob[:4] == b"\x28\xb5\x2f\xfd", "layer %d is not zstd" % i
        raw = zstandard.ZstdDecompressor().stream_reader(blob).read()
        assert sha256_bytes(raw) == diff_id, "layer %d: uncompressed digest != diff_id" % i
    # recorded like the gzip pushes (Docker's rules), the zstd digests for z/edge
    name = "%s/z/edge" % run.addr
    key = docker_hmac_key()
    for desc, diff_id in zip(m["layers"], orc["diff_ids"], strict=True):
        assert s.dist["image/overlay2/distribution/diffid-by-digest/sha256/" + desc["digest"][7:]] == diff_id.encode()
        recs = json.loads(s.dist["image/overlay2/distribution/v2metadata-by-diffid/sha256/" + diff_id[7:]])
        assert recs[-1] == {"Digest": desc["digest"], "SourceRepository": name,
                            "HMAC": docker_hmac(key, desc["digest"], name)}, recs
    # and it pulls back into a fresh data-root as the same image
    root2 = tmp_path / "back"
    root2.mkdir()
    dy_ok(root2, "pull", "%s/z/edge:1" % run.addr)
    back = StoreFacts.read(root2)
    assert back.image_ids == [run.image_id]
    assert back.chains(run.image_id) == orc["chain_ids"]
