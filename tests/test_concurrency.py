"""Acceptance 7: dockyard processes loading overlapping images into ONE data-root at the same time.

Both loads succeed, every image is present, each shared layer is stored exactly once (layerdb dirs == overlay2
dirs == l/ links == distinct chain IDs, every cache-id referenced once), nothing is left in layerdb/tmp, and the
layers' diff dirs are still exactly Docker's.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (
    FIXTURES,
    assert_no_overlay_mounts,
    dy_cmd,
    image_ids,
    img_root,
    l_links,
    layer_dirs,
    layerdb_tmp_leftovers,
    load_oracle,
    overlay_dirs,
    read_text,
    repositories,
)
from conftest import _env as dy_env
from listing import compare_listing, list_tree

DS = FIXTURES / "docker-save"
OCI = FIXTURES / "oci"

SCENARIOS = {
    # name: list of (fixture path, oracle name)
    "shared+untagged": [(DS / "fx-shared.docker.tar", "fx-shared.docker.tar"),
                        (DS / "fx-untagged.docker.tar", "fx-untagged.docker.tar")],
    "edge-twice": [(DS / "fx-edge.docker.tar", "fx-edge.docker.tar"),
                   (DS / "fx-edge.docker.tar", "fx-edge.docker.tar")],
    # same 11 diff_ids (so the same chain IDs), two different image IDs, one OCI layout one docker-save
    "edge-save+oci": [(DS / "fx-edge.docker.tar", "fx-edge.docker.tar"),
                      (OCI / "fx-edge.oci-gzip", "fx-edge.oci-gzip")],
    "shared-three-ways": [(DS / "fx-shared.docker.tar", "fx-shared.docker.tar"),
                          (DS / "fx-untagged.docker.tar", "fx-untagged.docker.tar"),
                          (OCI / "fx-shared.oci", "fx-shared.oci")],
}
ROUNDS = 3  # races are probabilistic: repeat each scenario on fresh data-roots


def _expected(items):
    ids, chains, layer_recs = set(), set(), {}
    for _path, oname in items:
        o = load_oracle(oname)
        if "oci" in o:
            want = {m["config_digest"] for m in o["oci"]["manifests"]}
            imgs = [im for im in o["images"] if im["id"] in want]
        else:
            imgs = o["images"]
        for im in imgs:
            ids.add(im["id"])
            chains.update(im["chain_ids"])
            for lr in im["layers"]:
                if "diff_dir" in lr:
                    layer_recs.setdefault(lr["chain_id"], lr)
    return ids, chains, layer_recs


def _start_together(items, root: Path):
    procs = []
    for path, _ in items:
        procs.append(subprocess.Popen(dy_cmd("load", "-i", path, root=root), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=dy_env(), cwd="/"))
    out = []
    deadline = time.monotonic() + 600
    for p in procs:
        try:
            so, se = p.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("concurrent loads did not finish (deadlock?)")
        out.append((p.returncode, so.decode(errors="replace"), se.decode(errors="replace")))
    return out


@pytest.mark.parametrize("round_", range(ROUNDS))
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_concurrent_loads(scenario, round_, data_root):
    items = SCENARIOS[scenario]
    want_ids, want_chains, layer_recs = _expected(items)
    results = _start_together(items, data_root)
    for (path, _), (rc, so, se) in zip(items, results, strict=True):
        assert rc == 0, "load of %s failed while another load ran:\n%s\n%s" % (path.name, so, se)
        assert "Traceback" not in se
    # every image, every tag
    assert image_ids(data_root) == sorted(want_ids)
    # every tag; a ref that two inputs both claim (fx-edge:1 from the save and from the OCI layout) points to
    # one of the two images: the load that finished last wins, as with docker
    repos = repositories(data_root)["Repositories"]
    claims: dict[tuple[str, str], set[str]] = {}
    for path, oname in items:
        o = load_oracle(oname)
        if "oci" in o:
            repo = path.name.split(".", 1)[0]
            for m in o["oci"]["manifests"]:
                claims.setdefault((repo, "%s:%s" % (repo, m["ref"])), set()).add(m["config_digest"])
        else:
            for r, refs in o["store"]["repositories_json"]["Repositories"].items():
                for ref, iid in refs.items():
                    claims.setdefault((r, ref), set()).add(iid)
    for (r, ref), ids in sorted(claims.items()):
        assert repos.get(r, {}).get(ref) in ids, "tag %s lost or wrong: %s" % (ref, repos.get(r))
    assert sum(len(v) for v in repos.values()) == len(claims), "unexpected refs: %s" % repos
    # every shared layer exactly once
    chains_hex = sorted(c.split(":", 1)[1] for c in want_chains)
    assert layer_dirs(data_root) == chains_hex, "layerdb dirs != distinct chain IDs"
    caches = [read_text(img_root(data_root) / "layerdb" / "sha256" / c / "cache-id") for c in chains_hex]
    assert len(set(caches)) == len(caches), "two layers share a cache-id"
    assert sorted(overlay_dirs(data_root)) == sorted(caches), "overlay2 dirs != the layers' cache-ids (orphans?)"
    links = [read_text(data_root / "overlay2" / str(c) / "link") for c in caches]
    assert sorted(l_links(data_root)) == sorted(links), "overlay2/l links != one per layer"
    for c, lk in zip(caches, links, strict=True):
        assert os.readlink(data_root / "overlay2" / "l" / str(lk)) == "../%s/diff" % c
    assert layerdb_tmp_leftovers(data_root) == []
    assert_no_overlay_mounts(data_root)
    # lower files only name existing links
    for c in caches:
        lower = read_text(data_root / "overlay2" / str(c) / "lower")
        for part in (lower.split(":") if lower else []):
            assert part.startswith("l/") and part[2:] in links, "dangling lower entry %s in %s" % (part, c)
    # and the content is intact
    report = []
    for chain, lr in layer_recs.items():
        cache = read_text(img_root(data_root) / "layerdb" / "sha256" / chain.split(":", 1)[1] / "cache-id")
        diffs = compare_listing(list_tree(data_root / "overlay2" / str(cache) / "diff"), lr["diff_dir"])
        if diffs:
            report.append("layer %s:\n  %s" % (lr["diff"], "\n  ".join(diffs[:10])))
    assert not report, "\n".join(report)
