"""images / inspect / history / tag / rmi / import / explain: docker's rules and wording, checked against the
oracle (recorded from dockerd 20.10 + docker CLI) where it has the values, and against the data-root files."""
from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import math
import os
import re
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import (
    FIXTURES,
    assert_clean_error,
    diff_snapshots,
    image_ids,
    img_root,
    l_links,
    layer_dirs,
    layerdb_tmp_leftovers,
    load_oracle,
    overlay_dirs,
    read_text,
    repositories,
    require_peer,
    run_dy,
    store_snapshot,
    umount_below,
)
from listing import compare_listing, list_tree

DS = FIXTURES / "docker-save"
TAGS = DS / "fx-tags.docker.tar"
SHARED = DS / "fx-shared.docker.tar"
EDGE = DS / "fx-edge.docker.tar"
RFC3339NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z$")


# ------------------------------------------------------------------------------------------------ docker formulas
def human_size(n: float) -> str:
    """go-units HumanSizeWithPrecision(n, 3), what `docker images`/`docker history` print."""
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    i = 0
    while n >= 1000.0 and i < len(units) - 1:
        n /= 1000.0
        i += 1
    return "%.3g%s" % (n, units[i])


def human_duration(seconds: float) -> str:
    """go-units HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return "%d seconds" % s
    m = int(seconds / 60)
    if m == 1:
        return "About a minute"
    if m < 60:
        return "%d minutes" % m
    h = round(seconds / 3600)
    if h == 1:
        return "About an hour"
    if h < 48:
        return "%d hours" % h
    if h < 24 * 7 * 2:
        return "%d days" % (h // 24)
    if h < 24 * 30 * 2:
        return "%d weeks" % (h // 24 // 7)
    if h < 24 * 365 * 2:
        return "%d months" % (h // 24 // 30)
    return "%d years" % (int(seconds / 3600) // 24 // 365)


def parse_go_time(s: str) -> float:
    """RFC3339(Nano) -> unix seconds (float)."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", s)
    assert m, s
    base = dt.datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    return base.timestamp() + (float("0" + m.group(2)) if m.group(2) else 0.0)


def since_ok(created: float, text: str, t0: float, t1: float) -> bool:
    return text in {human_duration(t0 - created) + " ago", human_duration(t1 - created) + " ago"}


def ellipsis(s: str, width: int) -> str:
    """docker CLI formatter.Ellipsis for ASCII strings."""
    return s if len(s) <= width else s[: width - 1] + "…"


def table(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """Parse a tabwriter table by the header's column offsets (ASCII content)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header = lines[0]
    names = re.split(r" {2,}", header.strip())
    starts = [header.index(n) for n in names]
    rows = []
    for ln in lines[1:]:
        row = {}
        for i, n in enumerate(names):
            end = starts[i + 1] if i + 1 < len(names) else None
            row[n] = ln[starts[i]:end].strip()
        rows.append(row)
    return names, rows


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def ro_root(tmp_path_factory):
    """fx-edge, fx-tags and fx-shared loaded (what the data-root oracle's dockerd loaded), used read-only."""
    root = tmp_path_factory.mktemp("cli-ro") / "root"
    root.mkdir()
    for f in (EDGE, TAGS, SHARED):
        run_dy("load", "-i", f, root=root)
    yield root
    umount_below(root)


def _oracle_images(*names: str) -> list[dict]:
    out, seen = [], set()
    for n in names:
        for im in load_oracle(n)["images"]:
            if im["id"] not in seen:
                seen.add(im["id"])
                out.append(im)
    return out


RO_IMAGES = ("fx-edge.docker.tar", "fx-tags.docker.tar", "fx-shared.docker.tar")


# ------------------------------------------------------------------------------------------------ images
def test_images_table(ro_root):
    t0 = time.time()
    p = run_dy("images", root=ro_root)
    t1 = time.time()
    names, rows = table(p.stdout)
    assert names == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    want = set()
    created = {}
    for im in _oracle_images(*RO_IMAGES):
        created[im["id"][7:19]] = parse_go_time(im["created"])
        for rt in im["repo_tags"]:
            repo, tag = rt.rsplit(":", 1)
            want.add((repo, tag, im["id"][7:19], human_size(im["size"])))
    got = {(r["REPOSITORY"], r["TAG"], r["IMAGE ID"], r["SIZE"]) for r in rows}
    assert got == want
    assert len(rows) == len(want), "one row per tag"
    for r in rows:
        assert since_ok(created[r["IMAGE ID"]], r["CREATED"], t0, t1), r
    # newest first (by created, whole seconds as docker compares them)
    secs = [int(created[r["IMAGE ID"]]) for r in rows]
    assert secs == sorted(secs, reverse=True)


def test_images_matches_docker_json(ro_root):
    """`images -a --digests --no-trunc --format json` == what the docker CLI printed for the same three loads
    (oracle dataroot-docker20.json, minus the pulled fx-dup and the time-dependent CreatedSince)."""
    ora = load_oracle("dataroot-docker20.json")
    loaded = {im["id"] for im in _oracle_images(*RO_IMAGES)}
    want = [json.loads(ln) for ln in ora["docker_images_cli"]]
    want = [w for w in want if w["ID"] in loaded]
    assert want, "oracle has no rows for the loaded images"
    t0 = time.time()
    p = run_dy("images", "-a", "--digests", "--no-trunc", "--format", "json", root=ro_root)
    t1 = time.time()
    got = [json.loads(ln) for ln in p.stdout.splitlines() if ln.strip()]
    assert [sorted(g) for g in got] == [sorted(w) for w in want], "keys differ from docker's"
    for g in got:
        created = dt.datetime.strptime(g["CreatedAt"], "%Y-%m-%d %H:%M:%S +0000 UTC").replace(
            tzinfo=dt.UTC).timestamp()
        assert since_ok(created, g["CreatedSince"], t0, t1), g
    strip = [{k: v for k, v in g.items() if k != "CreatedSince"} for g in got]
    wstrip = [{k: v for k, v in w.items() if k != "CreatedSince"} for w in want]
    by_row = {(w["ID"], w["Repository"], w["Tag"]): w for w in wstrip}
    field_diffs = ["%s:%s %s: docker %r, dockyard %r" % (g["Repository"], g["Tag"], k, by_row[key].get(k), g.get(k))
                   for g in strip for key in [(g["ID"], g["Repository"], g["Tag"])] if key in by_row
                   for k in sorted(set(g) | set(by_row[key])) if g.get(k) != by_row[key].get(k)]
    assert field_diffs == [], "\n".join(field_diffs)

    def groups(rows):  # docker's sort is by created seconds and not stable: compare order between seconds only
        out: dict[str, list] = {}
        for r in rows:
            out.setdefault(r["CreatedAt"], []).append(json.dumps(r, sort_keys=True))
        return [(k, sorted(v)) for k, v in out.items()]

    assert groups(strip) == groups(wstrip)


def test_images_quiet_and_no_trunc(ro_root):
    ids = {im["id"] for im in _oracle_images(*RO_IMAGES)}
    q = run_dy("images", "-q", root=ro_root).stdout.split()
    assert set(q) == {i[7:19] for i in ids}
    assert all(re.fullmatch(r"[0-9a-f]{12}", x) for x in q)
    names, rows = table(run_dy("images", "--no-trunc", root=ro_root).stdout)
    assert {r["IMAGE ID"] for r in rows} == ids
    names, rows = table(run_dy("images", "--digests", root=ro_root).stdout)
    assert names == ["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"]
    assert {r["DIGEST"] for r in rows} == {"<none>"}  # loaded, never pulled: no RepoDigests


def test_images_dangling(data_root, dy):
    """An image loaded by ID shows as <none> <none>."""
    o = load_oracle("fx-untagged.docker.tar")
    dy("load", "-i", DS / "fx-untagged.docker.tar")
    _names, rows = table(dy("images").stdout)
    assert [(r["REPOSITORY"], r["TAG"], r["IMAGE ID"]) for r in rows] == [
        ("<none>", "<none>", o["images"][0]["id"][7:19])]
    js = [json.loads(ln) for ln in dy("images", "--format", "json").stdout.splitlines() if ln.strip()]
    assert [(j["Repository"], j["Tag"], j["Digest"]) for j in js] == [("<none>", "<none>", "<none>")]


# ------------------------------------------------------------------------------------------------ inspect
def _inspect(root, *names):
    p = run_dy("inspect", *names, root=root)
    data = json.loads(p.stdout)
    assert isinstance(data, list)
    return data


@pytest.mark.parametrize("oname", RO_IMAGES)
def test_inspect_matches_oracle(ro_root, oname):
    for im in load_oracle(oname)["images"]:
        (d,) = _inspect(ro_root, im["id"])
        assert d["Id"] == im["id"]
        assert sorted(d["RepoTags"]) == sorted(im["repo_tags"])
        assert d["RepoDigests"] == im["repo_digests"]
        assert d["Parent"] == im["parent"]
        assert d["Created"] == im["created"]
        assert d["DockerVersion"] == im["docker_version"]
        assert d["Architecture"] == im["architecture"]
        assert d["Os"] == im["os"]
        assert d.get("Variant") in (None, "") if not im["variant"] else d["Variant"] == im["variant"]
        assert d["Size"] == im["size"]
        assert d.get("VirtualSize", im["virtual_size"]) == im["virtual_size"]
        assert d["Config"] == im["config"]
        assert (d.get("ContainerConfig") or {}).get("Cmd") == im["container_config_cmd"]
        assert d["RootFS"] == {"Type": "layers", "Layers": im["diff_ids"]}
        assert d["Metadata"] == {"LastTagTime": "0001-01-01T00:00:00Z"}, "a loaded image was never tagged"
        gd = d["GraphDriver"]
        assert gd["Name"] == im["graphdriver"]["name"]
        assert sorted(gd["Data"]) == im["graphdriver"]["data_keys"]
        caches = [read_text(img_root(ro_root) / "layerdb" / "sha256" / c.split(":", 1)[1] / "cache-id")
                  for c in im["chain_ids"]]
        top = ro_root / "overlay2" / str(caches[-1])
        assert gd["Data"]["UpperDir"] == str(top / "diff")
        assert gd["Data"]["WorkDir"] == str(top / "work")
        assert gd["Data"]["MergedDir"] == str(top / "merged")
        if len(caches) > 1:
            assert gd["Data"]["LowerDir"] == ":".join(str(ro_root / "overlay2" / c / "diff")
                                                      for c in reversed(caches[:-1]))


def test_inspect_by_name_prefix_and_several(ro_root):
    ims = {im["repo_tags"][0]: im["id"] for im in _oracle_images(*RO_IMAGES) if im["repo_tags"]}
    tags = sorted(ims)
    data = _inspect(ro_root, *tags)
    assert [d["Id"] for d in data] == [ims[t] for t in tags]
    some = tags[0]
    assert _inspect(ro_root, ims[some][7:19])[0]["Id"] == ims[some]
    assert _inspect(ro_root, ims[some][7:])[0]["Id"] == ims[some]


# ------------------------------------------------------------------------------------------------ history
@pytest.mark.parametrize("oname", RO_IMAGES)
def test_history_json_matches_docker(ro_root, oname):
    for im in load_oracle(oname)["images"]:
        t0 = time.time()
        p = run_dy("history", "--no-trunc", "--format", "json", im["id"], root=ro_root)
        t1 = time.time()
        got = [json.loads(ln) for ln in p.stdout.splitlines() if ln.strip()]
        want = im["history_cli"]
        assert [sorted(g) for g in got] == [sorted(w) for w in want]
        for g, api in zip(got, im["history_api"], strict=True):
            assert since_ok(api["Created"], g["CreatedSince"], t0, t1), g
        assert [{k: v for k, v in g.items() if k != "CreatedSince"} for g in got] == \
               [{k: v for k, v in w.items() if k != "CreatedSince"} for w in want]


def test_history_table(ro_root):
    im = load_oracle("fx-tags.docker.tar")["images"][0]
    t0 = time.time()
    p = run_dy("history", "fx-tags:1", root=ro_root)
    t1 = time.time()
    names, rows = table(p.stdout)
    assert names == ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
    assert len(rows) == len(im["history_api"])
    for r, api, cli in zip(rows, im["history_api"], im["history_cli"], strict=True):
        assert r["IMAGE"] == (api["Id"][7:19] if api["Id"].startswith("sha256:") else api["Id"])
        assert since_ok(api["Created"], r["CREATED"], t0, t1), r
        assert r["CREATED BY"] == ellipsis(api["CreatedBy"].replace("\t", " "), 45).strip()
        assert r["SIZE"] == cli["Size"]
        assert r["COMMENT"] == api["Comment"]
    q = run_dy("history", "-q", "fx-tags:1", root=ro_root).stdout.split()
    assert q == [a["Id"][7:19] if a["Id"].startswith("sha256:") else a["Id"] for a in im["history_api"]]


def test_history_no_human(ro_root):
    """docker/cli formatter_history.go: with --human=false Size is in bytes, CreatedAt stays RFC3339 and
    CreatedSince is CreatedAt; the table shows a CREATED AT column."""
    im = load_oracle("fx-edge.docker.tar")["images"][0]
    p = run_dy("history", "--no-human", "--no-trunc", "--format", "json", "fx-edge:1", root=ro_root)
    got = [json.loads(ln) for ln in p.stdout.splitlines() if ln.strip()]
    assert [g["Size"] for g in got] == [str(a["Size"]) for a in im["history_api"]]
    assert [g["CreatedAt"] for g in got] == [c["CreatedAt"] for c in im["history_cli"]]
    assert [g["CreatedSince"] for g in got] == [c["CreatedAt"] for c in im["history_cli"]]
    names, rows = table(run_dy("history", "--no-human", "fx-edge:1", root=ro_root).stdout)
    assert names == ["IMAGE", "CREATED AT", "CREATED BY", "SIZE", "COMMENT"]
    assert [r["CREATED AT"] for r in rows] == [c["CreatedAt"] for c in im["history_cli"]]
    assert [r["SIZE"] for r in rows] == [str(a["Size"]) for a in im["history_api"]]


# ------------------------------------------------------------------------------------------------ tag
def _meta(root, iid) -> Path:
    return img_root(root) / "imagedb" / "metadata" / "sha256" / iid.split(":", 1)[1]


@pytest.mark.parametrize("target,repo,ref", [
    ("mirror/edge", "mirror/edge", "mirror/edge:latest"),
    ("docker.io/library/spec-lib", "spec-lib", "spec-lib:latest"),
    ("index.docker.io/user/app:v2", "user/app", "user/app:v2"),
    ("quay.io/spec-q/z", "quay.io/spec-q/z", "quay.io/spec-q/z:latest"),
    ("localhost:5000/foo/x:9", "localhost:5000/foo/x", "localhost:5000/foo/x:9"),
    ("localhost/foo", "localhost/foo", "localhost/foo:latest"),
])
def test_tag_writes_familiar_names(data_root, dy, target, repo, ref):
    dy("load", "-i", TAGS)
    iid = load_oracle("fx-tags.docker.tar")["images"][0]["id"]
    before = repositories(data_root)
    t0 = time.time()
    p = dy("tag", "fx-tags:1", target)
    t1 = time.time()
    assert p.stdout.strip() == ""
    raw = (img_root(data_root) / "repositories.json").read_bytes()
    want = json.loads(json.dumps(before))
    want["Repositories"].setdefault(repo, {})[ref] = iid
    assert json.loads(raw) == want
    assert raw == json.dumps(want, separators=(",", ":"), sort_keys=True).encode(), "not Go's compact JSON"
    assert stat.S_IMODE(os.stat(img_root(data_root) / "repositories.json").st_mode) == 0o600
    lu = _meta(data_root, iid) / "lastUpdated"
    text = lu.read_text()
    assert RFC3339NANO.match(text), "lastUpdated %r is not RFC3339Nano UTC without trailing zeros/newline" % text
    assert t0 - 1 <= parse_go_time(text) <= t1 + 1
    assert stat.S_IMODE(os.stat(lu).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(lu.parent).st_mode) == 0o700
    (d,) = json.loads(dy("inspect", ref).stdout)
    assert d["Id"] == iid
    assert d["Metadata"]["LastTagTime"] == text


def test_tag_again_rewrites_last_updated_and_moves_tags(data_root, dy):
    dy("load", "-i", TAGS)
    dy("load", "-i", SHARED)
    tags_id = load_oracle("fx-tags.docker.tar")["images"][0]["id"]
    a_id = next(i["id"] for i in load_oracle("fx-shared.docker.tar")["images"] if "fx-shared-a:1" in i["repo_tags"])
    dy("tag", tags_id[7:19], "byid:1")  # by short ID
    first = (_meta(data_root, tags_id) / "lastUpdated").read_text()
    time.sleep(0.01)
    dy("tag", "fx-tags:latest", "byid:2")
    second = (_meta(data_root, tags_id) / "lastUpdated").read_text()
    assert parse_go_time(second) > parse_go_time(first)
    # move fx-tags:1 to another image
    dy("tag", "fx-shared-a:1", "fx-tags:1")
    repos = repositories(data_root)["Repositories"]
    assert repos["fx-tags"] == {"fx-tags:1": a_id, "fx-tags:latest": tags_id}
    assert repos["byid"] == {"byid:1": tags_id, "byid:2": tags_id}
    assert (_meta(data_root, a_id) / "lastUpdated").exists()


@pytest.mark.parametrize("args", [("fx-tags:1", "UPPER/case:x"), ("fx-tags:1", "bad tag:1"),
                                  ("fx-tags:1", "x:bad:tag"), ("no-such-image:1", "ok:1"),
                                  ("fx-tags:1", "sha256:1"), ("fx-tags:1", "0" * 64)])
def test_tag_errors_leave_store_unchanged(data_root, dy, args):
    dy("load", "-i", TAGS)
    snap = store_snapshot(data_root)
    p = dy("tag", *args, check=False)
    assert_clean_error(p, "tag %s %s" % args)
    assert [x for x in diff_snapshots(snap, store_snapshot(data_root)) if not re.match(r"^changed: \.", x)] == []


# ------------------------------------------------------------------------------------------------ rmi
def _layers_gone(root, chains) -> list[str]:
    problems = []
    for c in chains:
        if c.split(":", 1)[1] in layer_dirs(root):
            problems.append("layerdb %s still there" % c)
    return problems


def _consistent(root) -> list[str]:
    """Every layerdb entry has its overlay2 dir and l/ link; nothing else is in overlay2; no leftovers."""
    problems = []
    caches, links = [], []
    for n in layer_dirs(root):
        if not re.fullmatch(r"[0-9a-f]{64}", n):
            problems.append("leftover layerdb entry %s" % n)
            continue
        c = read_text(img_root(root) / "layerdb" / "sha256" / n / "cache-id")
        caches.append(c)
        links.append(read_text(root / "overlay2" / str(c) / "link"))
    if sorted(overlay_dirs(root)) != sorted(caches):
        problems.append("overlay2 dirs %s != cache-ids %s" % (overlay_dirs(root), caches))
    if sorted(l_links(root)) != sorted(x for x in links if x):
        problems.append("l/ links %s != %s" % (l_links(root), links))
    if layerdb_tmp_leftovers(root):
        problems.append("layerdb/tmp leftovers %s" % layerdb_tmp_leftovers(root))
    return problems


def test_rmi_refuses_multi_repo_image_without_force(data_root, dy):
    dy("load", "-i", TAGS)
    iid = load_oracle("fx-tags.docker.tar")["images"][0]["id"]
    snap = store_snapshot(data_root)
    for ref in (iid[7:19], iid):
        p = dy("rmi", ref, check=False)
        line = assert_clean_error(p, "rmi " + ref)
        assert line == ("Error: conflict: unable to delete %s (must be forced) - image is referenced in multiple "
                        "repositories" % iid[7:19])
    assert [x for x in diff_snapshots(snap, store_snapshot(data_root)) if not re.match(r"^changed: \.", x)] == []


def test_rmi_untag_then_delete(data_root, dy):
    dy("load", "-i", TAGS)
    im = load_oracle("fx-tags.docker.tar")["images"][0]
    iid = im["id"]
    assert dy("rmi", "fx-tags:1").stdout.splitlines() == ["Untagged: fx-tags:1"]
    assert image_ids(data_root) == [iid]
    assert repositories(data_root)["Repositories"] == {
        "fx-tags": {"fx-tags:latest": iid}, "fx-tags-alias": {"fx-tags-alias:v1": iid}}
    assert dy("rmi", "fx-tags").stdout.splitlines() == ["Untagged: fx-tags:latest"]  # no tag means :latest
    assert repositories(data_root)["Repositories"] == {"fx-tags-alias": {"fx-tags-alias:v1": iid}}
    out = dy("rmi", "fx-tags-alias:v1").stdout.splitlines()
    assert out == ["Untagged: fx-tags-alias:v1", "Deleted: " + iid] + ["Deleted: " + c for c in
                                                                       reversed(im["chain_ids"])]
    assert image_ids(data_root) == []
    assert layer_dirs(data_root) == []
    assert overlay_dirs(data_root) == []
    assert l_links(data_root) == []
    assert not _meta(data_root, iid).exists()
    raw = (img_root(data_root) / "repositories.json").read_bytes()
    assert raw == b'{"Repositories":{}}'
    assert _consistent(data_root) == []


def test_rmi_keeps_shared_layers(data_root, dy):
    dy("load", "-i", SHARED)
    o = load_oracle("fx-shared.docker.tar")
    a = next(i for i in o["images"] if "fx-shared-a:1" in i["repo_tags"])
    b = next(i for i in o["images"] if "fx-shared-b:1" in i["repo_tags"])
    only_a = [c for c in a["chain_ids"] if c not in b["chain_ids"]]
    assert only_a, "fixture assumption: fx-shared-a has a layer of its own"
    out = dy("rmi", "fx-shared-a:1").stdout.splitlines()
    assert out == ["Untagged: fx-shared-a:1", "Deleted: " + a["id"]] + ["Deleted: " + c for c in reversed(only_a)]
    assert image_ids(data_root) == [b["id"]]
    assert layer_dirs(data_root) == sorted(c.split(":", 1)[1] for c in b["chain_ids"])
    assert _consistent(data_root) == []
    # b's layers are intact
    for lr in b["layers"]:
        cache = read_text(img_root(data_root) / "layerdb" / "sha256" / lr["chain_id"].split(":", 1)[1] / "cache-id")
        assert compare_listing(list_tree(data_root / "overlay2" / str(cache) / "diff"), lr["diff_dir"]) == []
    out = dy("rmi", "fx-shared-b:1").stdout.splitlines()
    assert out == ["Untagged: fx-shared-b:1", "Deleted: " + b["id"]] + ["Deleted: " + c for c in
                                                                        reversed(b["chain_ids"])]
    assert layer_dirs(data_root) == [] and overlay_dirs(data_root) == [] and l_links(data_root) == []


def test_rmi_force_and_dangling(data_root, dy):
    dy("load", "-i", TAGS)
    im = load_oracle("fx-tags.docker.tar")["images"][0]
    out = dy("rmi", "-f", im["id"][7:19]).stdout.splitlines()
    untagged = [x for x in out if x.startswith("Untagged: ")]
    deleted = [x for x in out if x.startswith("Deleted: ")]
    assert out == untagged + deleted
    assert sorted(untagged) == sorted("Untagged: " + t for t in im["repo_tags"])
    assert deleted == ["Deleted: " + im["id"]] + ["Deleted: " + c for c in reversed(im["chain_ids"])]
    assert image_ids(data_root) == [] and layer_dirs(data_root) == []
    # an untagged (dangling) image is deleted by ID without -f, with no Untagged line
    dy("load", "-i", DS / "fx-untagged.docker.tar")
    u = load_oracle("fx-untagged.docker.tar")["images"][0]
    out = dy("rmi", u["id"][7:19]).stdout.splitlines()
    assert out == ["Deleted: " + u["id"]] + ["Deleted: " + c for c in reversed(u["chain_ids"])]
    assert _consistent(data_root) == []


def test_rmi_missing_image(data_root, dy):
    dy("load", "-i", TAGS)
    snap = store_snapshot(data_root)
    line = assert_clean_error(dy("rmi", "fx-tags:nope", check=False))
    assert "no such image" in line.lower()
    assert [x for x in diff_snapshots(snap, store_snapshot(data_root)) if not re.match(r"^changed: \.", x)] == []


# ------------------------------------------------------------------------------------------------ import
def _rootfs_tar(compress: bool = False) -> tuple[bytes, bytes, list[tarfile.TarInfo]]:
    """A small rootfs made with tarfile: (file bytes, uncompressed tar bytes, members)."""
    buf = io.BytesIO()
    members = []
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add(name, type_=tarfile.REGTYPE, data=b"", mode=0o644, linkname="", uid=0, gid=0):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.uid, ti.gid, ti.mtime, ti.linkname = type_, mode, uid, gid, 1700000000, linkname
            ti.size = len(data) if type_ == tarfile.REGTYPE else 0
            tf.addfile(ti, io.BytesIO(data) if ti.size else None)
            members.append(ti)
        add("etc", tarfile.DIRTYPE, mode=0o755)
        add("etc/hostname", data=b"imported\n")
        add("bin", tarfile.DIRTYPE, mode=0o755)
        add("bin/tool", data=b"#!/bin/true\n" * 50, mode=0o755, uid=1000, gid=1000)
        # a hard link entry carries the inode's metadata again (extractors apply it to the shared inode)
        add("bin/tool-link", tarfile.LNKTYPE, linkname="bin/tool", mode=0o755, uid=1000, gid=1000)
        add("bin/sh", tarfile.SYMTYPE, linkname="tool")
        add("var", tarfile.DIRTYPE, mode=0o750)
        add("var/empty", data=b"")
    raw = buf.getvalue()
    return (gzip.compress(raw) if compress else raw), raw, members


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tar.gz"])
def test_import_rootfs(data_root, dy, tmp_path, compress):
    data, raw, members = _rootfs_tar(compress)
    f = tmp_path / ("rootfs.tar.gz" if compress else "rootfs.tar")
    f.write_bytes(data)
    t0 = time.time()
    p = dy("import", f, "imported/rootfs:1")
    t1 = time.time()
    (iid,) = image_ids(data_root)
    assert p.stdout.strip().splitlines()[-1] == iid, "docker import prints the new image ID"
    content = (img_root(data_root) / "imagedb" / "content" / "sha256" / iid[7:]).read_bytes()
    assert "sha256:" + hashlib.sha256(content).hexdigest() == iid
    cfg = json.loads(content)
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert cfg["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}, "diff_id must be sha256 of the (uncompressed) tar"
    assert cfg["os"] == "linux" and cfg["architecture"] == "amd64"
    assert len(cfg["history"]) == 1 and "empty_layer" not in cfg["history"][0]
    assert t0 - 1 <= parse_go_time(cfg["created"]) <= t1 + 1
    # config bytes as Go's json.Marshal writes them: compact, top-level keys sorted, no newline
    assert list(cfg) == sorted(cfg) and not content.endswith(b"\n") and b": " not in content[:200]
    ld = img_root(data_root) / "layerdb" / "sha256" / diff_id[7:]
    assert layer_dirs(data_root) == [diff_id[7:]]
    assert read_text(ld / "diff") == diff_id
    assert "parent" not in os.listdir(ld)
    # size = unique-inode sum of st_size (hard link counted once, symlink = target length)
    want_size = len(b"imported\n") + len(b"#!/bin/true\n" * 50) + len("tool")
    assert read_text(ld / "size") == str(want_size)
    assert repositories(data_root)["Repositories"] == {"imported/rootfs": {"imported/rootfs:1": iid}}
    lu = (_meta(data_root, iid) / "lastUpdated").read_text()
    assert RFC3339NANO.match(lu)
    # the diff dir holds exactly the tar's content
    cache = read_text(ld / "cache-id")
    lst = {e["path"]: e for e in list_tree(data_root / "overlay2" / str(cache) / "diff")}
    assert set(lst) == {".", *[m.name for m in members]}
    for m in members:
        e = lst[m.name]
        assert (e["uid"], e["gid"], e["mtime"]) == (m.uid, m.gid, m.mtime), m.name
        if m.type != tarfile.SYMTYPE:
            assert int(e["mode"], 8) == m.mode, m.name
    assert lst["bin/tool"]["hardlink_group"] == "bin/tool" == lst["bin/tool-link"]["hardlink_group"]
    assert lst["bin/sh"]["target"] == "tool"
    assert lst["etc/hostname"]["sha256"] == "sha256:" + hashlib.sha256(b"imported\n").hexdigest()
    # and it can be exported again bit for bit (tar-split)
    ts = require_peer("tar-split")
    out = subprocess.run([ts, "asm", "--input", str(ld / "tar-split.json.gz"), "--path",
                          str(data_root / "overlay2" / str(cache) / "diff"), "--output", "-"],
                         capture_output=True, check=True).stdout
    assert out == raw


def test_import_from_stdin_reuses_layer(data_root, dy, tmp_path):
    data, raw, _ = _rootfs_tar()
    f = tmp_path / "rootfs.tar"
    f.write_bytes(data)
    dy("import", f)
    layers = layer_dirs(data_root)
    ov = overlay_dirs(data_root)
    time.sleep(1.1)  # a different `created` second -> a different image ID
    p = dy("import", "-", "from/stdin", input=data)
    assert len(image_ids(data_root)) == 2
    assert layer_dirs(data_root) == layers == ["%s" % hashlib.sha256(raw).hexdigest()]
    assert overlay_dirs(data_root) == ov, "the same layer must not be stored twice"
    iid = p.stdout.strip().splitlines()[-1]
    assert repositories(data_root)["Repositories"] == {"from/stdin": {"from/stdin:latest": iid}}
    # the untagged first import shows as <none>
    _names, rows = table(dy("images").stdout)
    assert sorted((r["REPOSITORY"], r["TAG"]) for r in rows) == [("<none>", "<none>"), ("from/stdin", "latest")]


def test_import_not_a_tar(data_root, dy, tmp_path):
    f = tmp_path / "junk.tar"
    f.write_bytes(os.urandom(3000))
    dy("load", "-i", TAGS)
    snap = store_snapshot(data_root)
    assert_clean_error(dy("import", f, "junk:1", check=False))
    assert [x for x in diff_snapshots(snap, store_snapshot(data_root)) if not re.match(r"^changed: \.", x)] == []


# ------------------------------------------------------------------------------------------------ explain
def _explain_layers(root, name):
    data = json.loads(run_dy("explain", "--format", "json", name, root=root).stdout)
    return data, (data["layers"] if isinstance(data, dict) else data)


@pytest.mark.parametrize("oname", RO_IMAGES)
def test_explain_json_matches_store(ro_root, oname):
    for im in load_oracle(oname)["images"]:
        data, layers = _explain_layers(ro_root, im["id"])
        if isinstance(data, dict) and "id" in data:
            assert data["id"] == im["id"]
        assert [lay["diff_id"] for lay in layers] == im["diff_ids"]
        assert [lay["chain_id"] for lay in layers] == im["chain_ids"]
        for lay in layers:
            ld = img_root(ro_root) / "layerdb" / "sha256" / lay["chain_id"].split(":", 1)[1]
            assert read_text(ld / "diff") == lay["diff_id"]
            assert read_text(ld / "cache-id") == lay["cache_id"]
            assert read_text(ro_root / "overlay2" / lay["cache_id"] / "link") == lay["link"]
            assert os.readlink(ro_root / "overlay2" / "l" / lay["link"]) == "../%s/diff" % lay["cache_id"]


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("args", [
    ("inspect", "nope:1"), ("history", "nope:1"), ("explain", "nope:1"), ("rmi", "nope:1"),
    ("tag", "nope:1", "x:1"), ("save", "-o", "/tmp/dockyard-test-never-written.tar", "nope:1"),
    ("load", "-i", "/nonexistent/fx.tar"), ("import", "/nonexistent/rootfs.tar"),
])
def test_errors_are_one_line(ro_root, args):
    snap = store_snapshot(ro_root)
    p = run_dy(*args, root=ro_root, check=False)
    assert_clean_error(p, " ".join(args))
    if args[0] in ("history", "explain", "rmi", "tag"):
        assert "no such image" in p.stderr.lower()
    elif args[0] == "inspect":  # `docker inspect` says object, `docker image inspect` says image
        assert "no such image" in p.stderr.lower() or "no such object" in p.stderr.lower()
    assert not os.path.exists("/tmp/dockyard-test-never-written.tar")
    assert [x for x in diff_snapshots(snap, store_snapshot(ro_root)) if not re.match(r"^changed: \.", x)] == []


def test_math_helpers_match_oracle():
    """The Go formatting helpers used above reproduce docker's strings recorded in the oracle."""
    for n in RO_IMAGES:
        for im in load_oracle(n)["images"]:
            for api, cli in zip(im["history_api"], im["history_cli"], strict=True):
                assert human_size(api["Size"]) == cli["Size"]
                assert math.isclose(parse_go_time(cli["CreatedAt"]), api["Created"])


# ------------------------------------------------------------------------------------------------ lazy commands
def _python(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_command_table_matches_the_modules():
    """main.COMMAND_MODULES names, for each command, the module that registers it, and nothing else."""
    out = _python(
        "import importlib, json\n"
        "from dockyard.cli import main\n"
        "got = {}\n"
        "for m in sorted(set(main.COMMAND_MODULES.values())):\n"
        "    before = set(main.cli.commands)\n"
        "    importlib.import_module('dockyard.cli.' + m)\n"
        "    got.update(dict.fromkeys(set(main.cli.commands) - before, m))\n"
        "print(json.dumps([got, main.COMMAND_MODULES]))\n"
    )
    got, table = json.loads(out)
    assert got == table


def test_a_command_imports_only_its_own_module():
    """`create` must not pay for the image, registry or system commands (nor httpx, rich, the archive code)."""
    out = _python(
        "import sys\n"
        "sys.argv = ['dockyard', 'create', '--help']\n"
        "from dockyard.cli.main import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('MODULES', ' '.join(sorted(sys.modules)))\n"
    )
    mods = set(out.split("MODULES", 1)[1].split())
    assert "dockyard.cli.commands_containers" in mods
    for unwanted in (
        "dockyard.cli.commands_images",
        "dockyard.cli.commands_registry",
        "dockyard.cli.commands_system",
        "httpx",
        "rich",
        "dockyard.archive.tarstream",
    ):
        assert unwanted not in mods, unwanted
