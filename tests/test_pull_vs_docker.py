"""Acceptance (pull, 1): `dockyard pull` leaves the same store as `docker pull` of the same reference.

The OCI fixture layouts are pushed with skopeo (`copy --all --preserve-digests`) to a real docker-registry on
127.0.0.1. For every case, the same sequence of pulls runs in `dockyard pull` (fresh data-root) and in
`docker pull` against a fresh private dockerd 20.10 (fresh data-root); then the two data-roots are compared:

* pull output: first line, per-layer final state (`Pull complete` / `Already exists`), `Digest:`, `Status:`
  and the last line, as docker prints them;
* image IDs and the chainIDs of every image;
* repositories.json, byte for byte;
* distribution/ (diffid-by-digest, v2metadata-by-diffid), every file byte for byte;
* every other file under image/overlay2 (imagedb, layerdb: diff, size, parent, ...) byte for byte and with its
  mode; `cache-id` through the chainID <-> cache-id mapping (the ids are random); tar-split.json.gz
  uncompressed (gzip bytes depend on the compressor), without trailing empty segments: Docker itself writes one
  more empty trailing segment for a blob repeated in one image (see test_load_oracle._tar_split_variants);
* overlay2/<cache-id>/: entries and modes, `link` (26 chars A-Z2-7), `l/<link>` -> `../<cache-id>/diff`,
  `lower` translated into chainIDs;
* every diff dir, listed with tests/listing.py list_tree (mtime of the diff root ignored).

zstd layers (fx-edge.oci-zstd) cannot be pulled by Docker 20.10: dockyard's pull of them is compared with
Docker's pull of the gzip copy of the same image (fx-edge.oci-gzip: same config, same diff_ids) for the layer
store, and with what the layout and the oracle say for distribution/ and repositories.json.
"""
from __future__ import annotations

import concurrent.futures
import gzip
import json
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import peers
from listing import compare_listing, list_tree
from pulllib import (
    ORACLE,
    StoreFacts,
    compare_diff_dirs,
    compare_image_trees,
    compare_overlay,
    dy,
    go_json,
    isolated_docker_config,  # noqa: F401  (autouse fixture)
    layout_images,
    layout_top,
    pull_summary,
    show,
    skopeo_copy,
)
from registry_servers import DockerRegistry, need

pytestmark = [pytest.mark.peers, pytest.mark.timeout(600)]

# (layout, ref in index.json) -> repository:tag in the test registry
SEED = [
    ("fx-edge.oci-gzip", "1", "fx/edge:1"),
    ("fx-shared.oci", "a", "fx/shared:a"),
    ("fx-shared.oci", "b", "fx/shared:b"),
    ("fx-shared.oci", "b", "fx/shared2:b"),
    ("fx-dup.oci", "1", "fx/dup:1"),
    ("fx-bigfile.oci", "1", "fx/big:1"),
    ("fx-multi.oci", "latest", "fx/multi:latest"),
    ("fx-edge.oci-zstd", "1", "fx/zstd:1"),
]


@dataclass(frozen=True)
class Case:
    id: str
    steps: tuple[tuple[str, str | None], ...]  # (reference template, --platform)
    why: str


CASES = [
    Case("edge-by-tag", (("fx/edge:1", None), ("fx/edge:1", None)),
         "11 layers of every kind of entry; the second pull is 'Image is up to date'"),
    Case("edge-by-digest", (("fx/edge@{edge}", None),), "pull by manifest digest: only name@digest is recorded"),
    Case("shared-a-then-b", (("fx/shared:a", None), ("fx/shared:b", None)),
         "b shares its base layer with a: 'Already exists', the layer is registered once"),
    Case("dup", (("fx/dup:1", None),), "one blob listed 3 times in one manifest"),
    Case("bigfile", (("fx/big:1", None),), "a 9 MiB file (non-sparse on disk)"),
    Case("multi-host-platform", (("fx/multi:latest", None),), "index: the host platform's manifest"),
    Case("multi-arm64", (("fx/multi:latest", "linux/arm64"),), "index, --platform linux/arm64"),
    Case("multi-armv7", (("fx/multi:latest", "linux/arm/v7"),), "index, --platform linux/arm/v7 (variant)"),
    Case("multi-by-digest", (("fx/multi@{multi_arm64}", None), ("fx/multi@{multi_index}", "linux/arm/v7")),
         "a platform manifest by its digest, then the index by its digest with --platform"),
    Case("multi-platform-switch", (("fx/multi:latest", None), ("fx/multi:latest", "linux/arm64")),
         "the tag moves to the arm64 image, the existing name@<index digest> is not overwritten"),
    Case("known-image-other-repo", (("fx/shared:b", None), ("fx/shared2:b", None)),
         "the image is already in the store under another repository"),
    Case("known-image-new-tag", (("fx/dup@{dup}", None), ("fx/dup:1", None)),
         "pulled by digest first, then by tag: the image is already there, the tag is new"),
]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    peers.need_root()
    skopeo = need("skopeo")
    need("docker-registry")
    with DockerRegistry(tmp_path_factory.mktemp("pullreg")) as reg:
        for layout, ref, dest in SEED:
            skopeo_copy(skopeo, layout, ref, "%s/%s" % (reg.addr, dest))
        multi = {im.platform: im.manifest_digest for im in layout_images("fx-multi.oci", "latest")}
        digests = {"edge": layout_top("fx-edge.oci-gzip", "1")[0], "dup": layout_top("fx-dup.oci", "1")[0],
                   "multi_index": layout_top("fx-multi.oci", "latest")[0], "multi_arm64": multi["linux/arm64"]}
        yield types.SimpleNamespace(addr=reg.addr, digests=digests)


def _pull_args(addr: str, digests: dict[str, str], ref: str, platform: str | None) -> list[str]:
    return ["pull", *(["--platform", platform] if platform else []), "%s/%s" % (addr, ref.format(**digests))]


def _tar_split_norm(data: bytes) -> bytes:
    """Uncompressed tar-split without trailing empty segments (Docker writes 0-2 of them for the same stream)."""
    lines = gzip.decompress(data).splitlines(keepends=True)
    while lines and json.loads(lines[-1]).get("type") == 2 and not json.loads(lines[-1]).get("payload"):
        lines.pop()
    return b"".join(lines)


def _facts(root: Path) -> StoreFacts:
    f = StoreFacts.read(root)
    for rel in list(f.image_files):
        if rel.endswith("/tar-split.json.gz"):
            mode = f.image_files[rel][0]
            try:
                norm = _tar_split_norm((root / rel).read_bytes())
                f.image_files[rel] = (mode, b"<uncompressed, trailing empty segments dropped> "
                                      + peers.sha256_bytes(norm).encode())
            except (OSError, EOFError, ValueError) as e:
                f.image_files[rel] = (mode, b"<unreadable tar-split: %s>" % str(e).encode())
    return f


def _without_records(facts: StoreFacts) -> StoreFacts:
    """The image/ files without distribution/ and repositories.json (compared by their own tests)."""
    c = StoreFacts(facts.root)
    c.chain_of_cache = facts.chain_of_cache
    c.image_files = {k: v for k, v in facts.image_files.items()
                     if "/distribution/" not in k and not k.endswith("/repositories.json")}
    return c


def _run_case(case: Case, registry: Any, base: Path) -> Any:
    """The case's pulls with dockyard and with a fresh dockerd (both sides at the same time)."""
    dy_root, dk_root = base / "dockyard", base / "docker"
    dy_root.mkdir()

    def dockyard_side() -> tuple[list[Any], list[str]]:
        out, err = [], []
        for ref, plat in case.steps:
            p = dy(dy_root, *_pull_args(registry.addr, registry.digests, ref, plat))
            out.append(pull_summary(p.stdout) if p.returncode == 0 else None)
            if p.returncode != 0 or "Traceback" in p.stderr:
                err.append(show(p))
        return out, err

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(dockyard_side)
        dk_out = []
        with peers.Dockerd(dk_root) as d:
            for ref, plat in case.steps:
                p = d.docker(*_pull_args(registry.addr, registry.digests, ref, plat), timeout=180)
                dk_out.append(pull_summary(p.stdout))
        dy_out, dy_err = fut.result()
    assert not peers.mounts_below(dk_root), "dockerd left mounts below %s" % dk_root
    return types.SimpleNamespace(case=case, dy_root=dy_root, dk_root=dk_root, dy_out=dy_out, dk_out=dk_out,
                                 dy_err=dy_err, dy=_facts(dy_root), dk=_facts(dk_root))


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def pulled(request: pytest.FixtureRequest, registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _run_case(request.param, registry, tmp_path_factory.mktemp("pull-" + request.param.id))


def _ok(r: Any) -> None:
    assert not r.dy_err, "dockyard pull failed (%s):\n%s" % (r.case.why, "\n".join(r.dy_err))


# ------------------------------------------------------------------------------------------------ the comparisons
def test_pull_output(pulled: Any) -> None:
    """The lines docker prints for the same pulls (first line, per-layer result, Digest, Status, reference)."""
    _ok(pulled)
    problems = []
    for i, ((ref, plat), a, b) in enumerate(zip(pulled.case.steps, pulled.dy_out, pulled.dk_out, strict=True)):
        for k in ("first", "layers", "digest", "status", "last"):
            if a[k] != b[k]:
                problems.append("pull #%d %s%s: %s\n    docker:   %r\n    dockyard: %r" % (
                    i + 1, ref, " --platform " + plat if plat else "", k, b[k], a[k]))
    assert not problems, "(%s)\n%s" % (pulled.case.why, "\n".join(problems))


def test_image_and_chain_ids(pulled: Any) -> None:
    _ok(pulled)
    assert pulled.dy.image_ids == pulled.dk.image_ids, "image IDs (%s)" % pulled.case.why
    for iid in pulled.dk.image_ids:
        assert pulled.dy.chains(iid) == pulled.dk.chains(iid), iid
    assert sorted(pulled.dy.cache_of) == sorted(pulled.dk.cache_of), "layerdb chain IDs"


def test_repositories_json(pulled: Any) -> None:
    _ok(pulled)
    a, b = pulled.dy.repositories_raw, pulled.dk.repositories_raw
    assert a == b, "repositories.json (%s)\n  docker:   %s\n  dockyard: %s\n  only docker: %s\n  only dockyard: %s" % (
        pulled.case.why, b, a,
        {k: v for k, v in pulled.dk.refs().items() if pulled.dy.refs().get(k) != v},
        {k: v for k, v in pulled.dy.refs().items() if pulled.dk.refs().get(k) != v})


def test_distribution_files(pulled: Any) -> None:
    _ok(pulled)
    a, b = pulled.dy.distribution(), pulled.dk.distribution()
    assert b, "docker recorded no distribution/ files"
    problems = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            problems.append("%s\n    docker:   %s\n    dockyard: %s" % (
                k, None if k not in b else b[k].decode(), None if k not in a else a[k].decode()))
    assert not problems, "distribution/ differs (%s):\n%s" % (pulled.case.why, "\n".join(problems))


def test_image_dir_files(pulled: Any) -> None:
    """imagedb + layerdb files (and their modes), byte for byte; distribution/ and repositories.json are
    compared by their own tests."""
    _ok(pulled)
    diffs = compare_image_trees(_without_records(pulled.dy), _without_records(pulled.dk))
    assert not diffs, "image/overlay2 differs (%s):\n%s" % (pulled.case.why, "\n".join(diffs))


def test_overlay2_layout(pulled: Any) -> None:
    _ok(pulled)
    diffs = compare_overlay(pulled.dy, pulled.dk)
    assert not diffs, "\n".join(diffs)


def test_diff_dirs(pulled: Any) -> None:
    _ok(pulled)
    diffs = compare_diff_dirs(pulled.dy, pulled.dk)
    assert not diffs, "\n".join(diffs)


# ------------------------------------------------------------------------------------------------ zstd
@pytest.fixture(scope="module")
def zstd_pulled(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("pull-zstd")
    dy_root, dk_root = base / "dockyard", base / "docker"
    dy_root.mkdir()
    p = dy(dy_root, "pull", "%s/fx/zstd:1" % registry.addr)
    with peers.Dockerd(dk_root) as d:
        # what Docker 20.10 says about the zstd copy (it cannot pull it), and the gzip copy of the same image
        z = d.docker("pull", "%s/fx/zstd:1" % registry.addr, check=False, timeout=120)
        d.docker("pull", "%s/fx/edge:1" % registry.addr, timeout=180)
    return types.SimpleNamespace(p=p, dy_root=dy_root, dk_root=dk_root, docker_zstd=z, addr=registry.addr,
                                 dy=_facts(dy_root) if p.returncode == 0 else None, dk=_facts(dk_root))


def test_zstd_pull_matches_docker_gzip_store(zstd_pulled: Any) -> None:
    r = zstd_pulled
    assert r.p.returncode == 0, show(r.p)
    orc = json.loads((ORACLE / "fx-edge.oci-zstd.json").read_text())
    img = layout_images("fx-edge.oci-zstd", "1")[0]
    assert r.dy.image_ids == [img.config_digest] == [orc["images"][0]["id"]]
    assert r.dy.chains(img.config_digest) == orc["images"][0]["chain_ids"]
    # the same image pulled by Docker from gzip layers: same layer store
    assert r.dy.image_ids == r.dk.image_ids
    problems = compare_image_trees(_without_records(r.dy), _without_records(r.dk)) + compare_overlay(r.dy, r.dk)
    problems += compare_diff_dirs(r.dy, r.dk)
    # and the oracle's diff dirs (what Docker extracted for the same diff_ids)
    for lr in orc["images"][0]["layers"]:
        if lr.get("diff_dir") and lr["chain_id"] in r.dy.cache_of:
            d = compare_listing(list_tree(r.dy.diff_dir(lr["chain_id"])), lr["diff_dir"])
            if d:
                problems.append("oracle diff dir of layer %s:\n  %s" % (lr["index"], "\n  ".join(d)))
    assert not problems, "\n".join(problems)
    # Docker 20.10 itself refuses the zstd copy (so this comparison is the only one possible)
    assert r.docker_zstd.returncode != 0, "docker 20.10 pulled zstd layers?\n%s" % r.docker_zstd.stdout


def test_zstd_pull_records(zstd_pulled: Any) -> None:
    """distribution/ and repositories.json of the zstd pull, from the layout (Docker's formats, §5/§6)."""
    r = zstd_pulled
    assert r.p.returncode == 0, show(r.p)
    img = layout_images("fx-edge.oci-zstd", "1")[0]
    name = "%s/fx/zstd" % r.addr
    want: dict[str, bytes] = {}
    for digest, diff_id in zip(img.layer_digests, img.diff_ids, strict=True):
        want["image/overlay2/distribution/diffid-by-digest/sha256/" + digest[7:]] = diff_id.encode()
        want["image/overlay2/distribution/v2metadata-by-diffid/sha256/" + diff_id[7:]] = go_json(
            [{"Digest": digest, "SourceRepository": name, "HMAC": ""}]).encode()
    got = r.dy.distribution()
    problems = ["%s\n    expected: %s\n    dockyard: %s" % (k, want.get(k), got.get(k))
                for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
    assert not problems, "\n".join(problems)
    repos = {"Repositories": {name: dict(sorted({name + ":1": img.config_digest,
                                                  name + "@" + img.manifest_digest: img.config_digest}.items()))}}
    assert r.dy.repositories_raw == go_json(repos).encode()
