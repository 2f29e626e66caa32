"""Acceptance 1: `dockyard load` of every shared fixture gives the data-root a real dockerd 20.10 gave.

Each fixture in fixtures/docker-save/ and fixtures/oci/ is loaded once into a fresh data-root (module-scoped) and
compared with oracle/<fixture file name>.json: image IDs, diff_ids, chain IDs, layerdb files and contents,
tar-split, overlay2 layout, repositories.json, imagedb metadata, modes, and the extracted diff dirs.

OCI oracles were made with `skopeo copy` + `docker pull`, so their repository names (and `distribution/`) differ
from a load; the tags are checked against dockyard's contract instead (repository = layout name up to its first
`.`, tag = `org.opencontainers.image.ref.name`).  For zstd layouts Docker 20.10 could not pull, the oracle shows
the gzip fallback: the config blob and the uncompressed layer tars are identical, which the tests verify from the
oracle itself before using its values.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import (
    FIXTURES,
    ORACLE_DIR,
    assert_clean_error,
    assert_no_overlay_mounts,
    chain_ids,
    diff_snapshots,
    image_ids,
    img_root,
    l_links,
    layer_dirs,
    layerdb_tmp_leftovers,
    load_oracle,
    overlay_dirs,
    read_text,
    require_peer,
    run_dy,
    store_snapshot,
    umount_below,
)
from listing import compare_listing, list_tree

HEX64 = re.compile(r"^[0-9a-f]{64}$")
LINK_RE = re.compile(r"^[A-Z2-7]{26}$")


# ------------------------------------------------------------------------------------------------ cases
@dataclass
class Case:
    id: str
    path: Path
    oracle_name: str
    kind: str  # docker-save | oci-layout | oci-archive
    platform: str | None = None
    # filled from the oracle:
    images: list[dict] = field(default_factory=list)  # oracle image records expected after this load
    repositories: dict = field(default_factory=dict)  # expected repositories.json (parsed)
    stdout: list[str] = field(default_factory=list)  # expected load output lines
    notes: list[str] = field(default_factory=list)


def _plat_str(p: dict) -> str:
    s = "%s/%s" % (p["os"], p["architecture"])
    return s + ("/" + p["variant"] if p.get("variant") else "")


def _oci_repo(path: Path) -> str:
    return path.name.split(".", 1)[0]


def _expected_for(case: Case, o: dict) -> None:
    by_id = {im["id"]: im for im in o["images"]}
    if case.kind == "docker-save":
        case.images = list(o["images"])
        case.repositories = o["store"]["repositories_json"]
        case.stdout = list(o["load"]["stdout"])
        return
    repo = _oci_repo(case.path)
    mans = o["oci"]["manifests"]
    if case.platform:
        mans = [m for m in mans if m.get("platform") and _plat_str(m["platform"]) == case.platform]
    repos: dict = {}
    seen_refs: list[str] = []
    for m in mans:
        im = by_id.get(m["config_digest"])
        if im is None:
            case.notes.append("oracle has no image with ID = config digest %s" % m["config_digest"])
            continue
        if im not in case.images:
            case.images.append(im)
        if m["ref"]:
            repos.setdefault(repo, {})["%s:%s" % (repo, m["ref"])] = im["id"]
            if m["ref"] not in seen_refs:
                seen_refs.append(m["ref"])
    case.repositories = {"Repositories": repos}
    case.stdout = ["Loaded image: %s:%s" % (repo, r) for r in seen_refs]


def _cases() -> list[Case]:
    out: list[Case] = []
    if not ORACLE_DIR.is_dir():
        return out
    ds = FIXTURES / "docker-save"
    for p in sorted(ds.iterdir()) if ds.is_dir() else []:
        if p.name.endswith((".tar", ".tar.gz")):
            out.append(Case(p.name, p, p.name, "docker-save"))
    oc = FIXTURES / "oci"
    for p in sorted(oc.iterdir()) if oc.is_dir() else []:
        if p.is_dir() and (p / "oci-layout").exists():
            kind = "oci-layout"
        elif p.name.endswith(".oci-archive.tar"):
            kind = "oci-archive"
        else:
            continue
        try:
            o = load_oracle(p.name)
        except FileNotFoundError:
            out.append(Case(p.name, p, p.name, kind))
            continue
        plats = [m["platform"] for m in o["oci"]["manifests"] if m.get("platform") and m.get("parent_index")]
        if len(plats) > 1:
            for pl in plats:
                ps = _plat_str(pl)
                out.append(Case("%s[%s]" % (p.name, ps), p, p.name, kind, platform=ps))
        else:
            out.append(Case(p.name, p, p.name, kind))
    for c in out:
        try:
            _expected_for(c, load_oracle(c.oracle_name))
        except FileNotFoundError:
            c.notes.append("no oracle file")
    return out


CASES = _cases()


@dataclass
class Loaded:
    case: Case
    root: Path
    proc: subprocess.CompletedProcess


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def loaded(request, tmp_path_factory):
    case: Case = request.param
    if case.notes:
        pytest.fail("oracle problem for %s: %s" % (case.id, case.notes))
    root = tmp_path_factory.mktemp("load-" + re.sub(r"[^A-Za-z0-9]+", "-", case.id)) / "root"
    root.mkdir()
    args = ["load", "-i", str(case.path)]
    if case.platform:
        args += ["--platform", case.platform]
    p = run_dy(*args, root=root, check=False, timeout=600)
    yield Loaded(case, root, p)
    umount_below(root)


def _ok(ld: Loaded) -> None:
    if ld.proc.returncode != 0:
        pytest.fail("load of %s failed (rc %d):\n%s\n%s" % (ld.case.id, ld.proc.returncode, ld.proc.stdout,
                                                           ld.proc.stderr), pytrace=False)


def _expected_layers(case: Case) -> dict[str, dict]:
    """chain ID -> oracle layer record (first occurrence) over all expected images."""
    out: dict[str, dict] = {}
    for im in case.images:
        for lr in im["layers"]:
            if "same_as_index" in lr:
                continue
            out.setdefault(lr["chain_id"], lr)
    return out


# ------------------------------------------------------------------------------------------------ oracle sanity
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_oracle_consistency(case: Case):
    """What the tests take from the oracle is internally consistent (guards against reading it wrong).
    For OCI layouts (incl. the zstd ones Docker only pulled through a gzip fallback) the oracle image must have
    ID = the layout's config digest and diff_ids = the diff_ids computed from the layout's own blobs."""
    o = load_oracle(case.oracle_name)
    assert case.images, "no expected images for %s" % case.id
    for im in case.images:
        assert im["config_sha256_matches_id"] is True
        assert chain_ids(im["diff_ids"]) == im["chain_ids"]
    if case.kind == "docker-save":
        assert {i["config_digest"] for i in o["docker_save"]["images"]} == {i["id"] for i in o["images"]}
        for di in o["docker_save"]["images"]:
            for lay in di["layers"]:
                assert lay["computed_diff_id"] == lay["config_diff_id"]
    else:
        mans = o["oci"]["manifests"]
        if case.platform:
            mans = [m for m in mans if m.get("platform") and _plat_str(m["platform"]) == case.platform]
            assert len(mans) == 1, "platform %s must select exactly one manifest" % case.platform
        by_id = {im["id"]: im for im in o["images"]}
        for m in mans:
            im = by_id[m["config_digest"]]
            assert im["diff_ids"] == [lay["computed_diff_id"] for lay in m["layers"]], (
                "oracle image diff_ids differ from the layout's uncompressed blobs%s" % (
                    " (gzip fallback)" if o["load"].get("fallback_used") else ""))
            assert im["architecture"] == m["architecture"]
            assert (im.get("variant") or None) == (m.get("variant") or None)


# ------------------------------------------------------------------------------------------------ load output
def test_load_output(loaded: Loaded):
    _ok(loaded)
    p = loaded.proc
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert lines == loaded.case.stdout, "load stdout differs from docker's wording"


def test_no_mounts_left(loaded: Loaded):
    """A load never leaves an (overlay) mount behind below the data-root."""
    assert_no_overlay_mounts(loaded.root)


# ------------------------------------------------------------------------------------------------ imagedb
def test_image_ids(loaded: Loaded):
    _ok(loaded)
    content = img_root(loaded.root) / "imagedb" / "content" / "sha256"
    got = sorted(os.listdir(content))
    assert got == sorted(im["id"].split(":", 1)[1] for im in loaded.case.images)
    for n in got:
        raw = (content / n).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == n, "config bytes re-serialised: sha256(content) != file name"
        cfg = json.loads(raw)
        im = next(i for i in loaded.case.images if i["id"] == "sha256:" + n)
        assert cfg["rootfs"]["diff_ids"] == im["diff_ids"]
        assert cfg.get("architecture") == im["architecture"]
        assert cfg.get("os") == im["os"]


def test_imagedb_metadata(loaded: Loaded):
    """metadata/sha256/<id>/ holds exactly what Docker wrote: `parent` only when the oracle has it, and never
    `lastUpdated` after a load."""
    _ok(loaded)
    meta = img_root(loaded.root) / "imagedb" / "metadata" / "sha256"
    for im in loaded.case.images:
        d = meta / im["id"].split(":", 1)[1]
        files = sorted(os.listdir(d)) if d.is_dir() else []
        assert files == im["imagedb_metadata_files"], "imagedb metadata of %s" % im["id"]
        assert "lastUpdated" not in files
        if "parent" in files:
            t = (d / "parent").read_text()
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", t), "metadata/parent must be a digest without newline"
            assert t == im["parent"]
    # no metadata dirs for images that are not there
    if meta.is_dir():
        assert set(os.listdir(meta)) <= {im["id"].split(":", 1)[1] for im in loaded.case.images}


def test_repositories_json(loaded: Loaded):
    _ok(loaded)
    raw = (img_root(loaded.root) / "repositories.json").read_bytes()
    assert json.loads(raw) == loaded.case.repositories
    # Go json.Marshal: compact, map keys sorted, no trailing newline
    assert raw == json.dumps(loaded.case.repositories, separators=(",", ":"), sort_keys=True).encode(), (
        "repositories.json is not compact/sorted/without newline: %r" % raw[:300])


# ------------------------------------------------------------------------------------------------ layerdb
def test_layer_chain(loaded: Loaded):
    """diff_ids -> chain IDs -> layerdb dirs: exactly the distinct chain IDs of the loaded images."""
    _ok(loaded)
    exp = _expected_layers(loaded.case)
    assert layer_dirs(loaded.root) == sorted(c.split(":", 1)[1] for c in exp)
    assert layerdb_tmp_leftovers(loaded.root) == []


def test_layerdb_files(loaded: Loaded):
    _ok(loaded)
    base = img_root(loaded.root) / "layerdb" / "sha256"
    problems = []
    for chain, lr in _expected_layers(loaded.case).items():
        d = base / chain.split(":", 1)[1]
        if not d.is_dir():
            problems.append("%s: layerdb dir missing" % chain)
            continue
        files = sorted(os.listdir(d))
        if files != lr["layerdb_files"]:
            problems.append("%s: files %s, expected %s" % (chain, files, lr["layerdb_files"]))
        diff = read_text(d / "diff")
        if diff != lr["diff"]:
            problems.append("%s: diff %r, expected %r" % (chain, diff, lr["diff"]))
        size = read_text(d / "size")
        if size != str(lr["size"]):
            problems.append("%s: size %r, expected %r (decimal, no newline)" % (chain, size, str(lr["size"])))
        parent = read_text(d / "parent")
        if parent != lr["parent"]:
            problems.append("%s: parent %r, expected %r" % (chain, parent, lr["parent"]))
        cache = read_text(d / "cache-id")
        if cache is None or not HEX64.match(cache):
            problems.append("%s: cache-id %r is not 64 lowercase hex without newline" % (chain, cache))
        elif cache[:12].isdigit():
            problems.append("%s: cache-id %r starts with 12 digits (Docker regenerates those)" % (chain, cache))
        elif not (loaded.root / "overlay2" / cache).is_dir():
            problems.append("%s: overlay2/%s does not exist" % (chain, cache))
    assert not problems, "\n".join(problems)


def _tar_split_variants(case: Case) -> dict[str, list[dict]]:
    """diff_id -> every tar-split record the oracle holds for it.

    docker-save oracles hold one per diff_id.  Pull-made (OCI) oracles can hold two for a diff_id that repeats
    in one image (fx-dup.oci: the 2nd and 4th copy of layer A carry one more, empty, trailing segment, because
    the puller fed the same blob through a reader that reports EOF separately); both are what Docker wrote for
    the very same stream, so either is accepted."""
    out: dict[str, list[dict]] = {}
    for im in load_oracle(case.oracle_name)["images"]:
        for lr in im["layers"]:
            if "tar_split" in lr and lr["tar_split"] not in out.setdefault(lr["diff"], []):
                out[lr["diff"]].append(lr["tar_split"])
    return out


def test_tar_split(loaded: Loaded):
    """tar-split.json.gz: the uncompressed JSON is byte-identical to Docker's (sha256, lines, bytes)."""
    _ok(loaded)
    base = img_root(loaded.root) / "layerdb" / "sha256"
    variants = _tar_split_variants(loaded.case)
    if loaded.case.kind == "docker-save":
        assert all(len(v) == 1 for v in variants.values()), "docker load wrote different tar-splits for one diff"
    problems = []
    for chain, lr in _expected_layers(loaded.case).items():
        if "tar_split" not in lr:
            continue
        p = base / chain.split(":", 1)[1] / "tar-split.json.gz"
        try:
            with gzip.open(p, "rb") as f:
                raw = f.read()
        except (OSError, EOFError) as e:
            problems.append("%s: cannot gunzip tar-split.json.gz: %s" % (chain, e))
            continue
        got = {"uncompressed_sha256": "sha256:" + hashlib.sha256(raw).hexdigest(), "lines": raw.count(b"\n"),
               "uncompressed_bytes": len(raw)}
        if got not in variants[lr["diff"]]:
            problems.append("%s (diff %s): tar-split %s, expected %s" % (
                chain, lr["diff"], got, " or ".join(map(str, variants[lr["diff"]]))))
    assert not problems, "\n".join(problems)


def test_tar_split_reassembles_with_peer(loaded: Loaded):
    """The real tar-split tool reassembles every layer from tar-split.json.gz + diff/ into a stream whose sha256
    is the diffID (what dockerd does on save/push)."""
    _ok(loaded)
    ts = require_peer("tar-split")
    base = img_root(loaded.root) / "layerdb" / "sha256"
    problems = []
    for chain, lr in _expected_layers(loaded.case).items():
        d = base / chain.split(":", 1)[1]
        cache = read_text(d / "cache-id")
        p = subprocess.Popen([ts, "asm", "--input", str(d / "tar-split.json.gz"), "--path",
                              str(loaded.root / "overlay2" / str(cache) / "diff"), "--output", "-"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        h = hashlib.sha256()
        assert p.stdout is not None
        for chunk in iter(lambda: p.stdout.read(1 << 20), b""):  # noqa: B023
            h.update(chunk)
        err = p.stderr.read().decode(errors="replace") if p.stderr else ""
        rc = p.wait()
        if rc != 0:
            problems.append("%s: tar-split asm failed (%d): %s" % (chain, rc, err.strip()[-300:]))
        elif "sha256:" + h.hexdigest() != lr["diff"]:
            problems.append("%s: reassembled sha256 %s != diff %s" % (chain, h.hexdigest(), lr["diff"]))
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------------ overlay2
def test_overlay2_layout(loaded: Loaded):
    _ok(loaded)
    root = loaded.root
    base = img_root(root) / "layerdb" / "sha256"
    exp = _expected_layers(loaded.case)
    problems = []
    info: dict[str, tuple[str, str | None]] = {}  # chain -> (link, lower)
    caches = []
    for chain, lr in exp.items():
        cache = read_text(base / chain.split(":", 1)[1] / "cache-id") or "<none>"
        caches.append(cache)
        od = root / "overlay2" / cache
        if not od.is_dir():
            problems.append("%s: overlay2/%s missing" % (chain, cache))
            continue
        ents = sorted(os.listdir(od))
        if ents != lr["overlay2"]["entries"]:
            problems.append("%s: overlay2 entries %s, expected %s" % (chain, ents, lr["overlay2"]["entries"]))
        link = read_text(od / "link")
        if link is None or len(link) != lr["overlay2"]["link_len"] or not LINK_RE.match(link):
            problems.append("%s: link %r is not 26 chars of base32 without newline" % (chain, link))
            continue
        lp = root / "overlay2" / "l" / link
        if not lp.is_symlink():
            problems.append("%s: overlay2/l/%s is not a symlink" % (chain, link))
        else:
            tgt = os.readlink(lp)
            want = lr["overlay2"]["l_symlink_target"].replace("<cache-id>", cache)
            if tgt != want:
                problems.append("%s: l/%s -> %r, expected %r" % (chain, link, tgt, want))
        lower = read_text(od / "lower")
        info[chain] = (link, lower)
        if "lower_count" in lr["overlay2"]:
            if lower is None:
                problems.append("%s: lower file missing" % chain)
            elif len(lower.split(":")) != lr["overlay2"]["lower_count"]:
                problems.append("%s: lower has %d entries, expected %d" % (
                    chain, len(lower.split(":")), lr["overlay2"]["lower_count"]))
        elif lower is not None:
            problems.append("%s: base layer must not have a lower file" % chain)
    # lower = l/<parent link>[:<parent's lower>], nearest parent first
    for chain, lr in exp.items():
        if chain not in info or not lr["parent"] or lr["parent"] not in info:
            continue
        plink, plower = info[lr["parent"]]
        want = "l/" + plink + (":" + plower if plower else "")
        if info[chain][1] != want:
            problems.append("%s: lower %r, expected %r" % (chain, info[chain][1], want))
    links = [v[0] for v in info.values()]
    if len(set(links)) != len(links):
        problems.append("link names are not unique: %s" % links)
    if len(set(caches)) != len(caches):
        problems.append("cache-ids are not unique: %s" % caches)
    # nothing else in overlay2/: one dir per layer, one l/ link per layer
    if sorted(overlay_dirs(root)) != sorted(caches):
        problems.append("overlay2 dirs %s, expected exactly the layers' cache-ids %s" % (overlay_dirs(root), caches))
    if sorted(l_links(root)) != sorted(links):
        problems.append("overlay2/l has %s, expected %s" % (l_links(root), links))
    assert not problems, "\n".join(problems)


def test_diff_dirs(loaded: Loaded):
    """overlay2/<cache-id>/diff of every layer lists exactly like the diff dir Docker extracted."""
    _ok(loaded)
    base = img_root(loaded.root) / "layerdb" / "sha256"
    report = []
    for chain, lr in _expected_layers(loaded.case).items():
        if lr.get("diff_dir") is None:
            continue
        cache = read_text(base / chain.split(":", 1)[1] / "cache-id")
        d = loaded.root / "overlay2" / str(cache) / "diff"
        if not d.is_dir():
            report.append("layer %s (%s): no diff dir" % (lr["index"], lr["diff"]))
            continue
        diffs = compare_listing(list_tree(d), lr["diff_dir"])
        if diffs:
            report.append("layer %s (%s):\n  %s" % (lr["index"], lr["diff"], "\n  ".join(diffs)))
    assert not report, "\n".join(report)


# ------------------------------------------------------------------------------------------------ whole image/ tree
def test_image_tree_files(loaded: Loaded):
    """The set of files under image/ is exactly Docker's (for OCI: without distribution/, which is pull-only)."""
    _ok(loaded)
    o = load_oracle(loaded.case.oracle_name)
    got = set()
    for dp, _dns, fns in os.walk(loaded.root / "image"):
        for n in fns:
            got.add(os.path.relpath(os.path.join(dp, n), loaded.root))
    if loaded.case.kind == "docker-save":
        want = set(o["store"]["image_dir_files"])
    else:
        want = {"image/overlay2/repositories.json"}
        for im in loaded.case.images:
            h = im["id"].split(":", 1)[1]
            want.add("image/overlay2/imagedb/content/sha256/" + h)
            for f in im["imagedb_metadata_files"]:
                want.add("image/overlay2/imagedb/metadata/sha256/%s/%s" % (h, f))
            for lr in im["layers"]:
                if "same_as_index" in lr:
                    continue
                for f in lr["layerdb_files"]:
                    want.add("image/overlay2/layerdb/sha256/%s/%s" % (lr["chain_id"].split(":", 1)[1], f))
        got = {p for p in got if not p.startswith("image/overlay2/distribution/")}
    assert sorted(got - want) == [], "unexpected files under image/"
    assert sorted(want - got) == [], "missing files under image/"


# ------------------------------------------------------------------------------------------------ modes
def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_modes_and_owners(loaded: Loaded):
    """File modes of the data-root per the fact sheet §0 (all root:root), and no trailing newline anywhere in
    the metadata files."""
    _ok(loaded)
    root = loaded.root
    im = img_root(root)
    want: dict[Path, int] = {
        im: 0o700,
        im / "repositories.json": 0o600,
        im / "imagedb": 0o700,
        im / "imagedb" / "content": 0o700,
        im / "imagedb" / "content" / "sha256": 0o700,
        im / "layerdb": 0o700,
        im / "layerdb" / "sha256": 0o755,
        root / "overlay2": 0o710,
        root / "overlay2" / "l": 0o700,
    }
    for opt in (im / "layerdb" / "tmp", im / "layerdb" / "mounts"):
        if opt.exists():
            want[opt] = 0o755
    for opt in (im / "imagedb" / "metadata", im / "imagedb" / "metadata" / "sha256"):
        if opt.exists():
            want[opt] = 0o700
    for n in os.listdir(im / "imagedb" / "content" / "sha256"):
        want[im / "imagedb" / "content" / "sha256" / n] = 0o600
    md = im / "imagedb" / "metadata" / "sha256"
    if md.is_dir():
        for n in os.listdir(md):
            want[md / n] = 0o700
            for f in os.listdir(md / n):
                want[md / n / f] = 0o600
    for n in layer_dirs(root):
        want[im / "layerdb" / "sha256" / n] = 0o700
        for f in os.listdir(im / "layerdb" / "sha256" / n):
            want[im / "layerdb" / "sha256" / n / f] = 0o644
    for c in overlay_dirs(root):
        od = root / "overlay2" / c
        want[od] = 0o710
        for f, m in (("diff", 0o755), ("work", 0o700), ("link", 0o644), ("lower", 0o644), ("committed", 0o600)):
            if (od / f).exists():
                want[od / f] = m
    problems = []
    for p, m in sorted(want.items()):
        if not os.path.lexists(p):
            problems.append("%s: missing" % p.relative_to(root))
            continue
        st = os.lstat(p)
        if stat.S_IMODE(st.st_mode) != m:
            problems.append("%s: mode %04o, expected %04o" % (p.relative_to(root), stat.S_IMODE(st.st_mode), m))
        if (st.st_uid, st.st_gid) != (0, 0):
            problems.append("%s: owner %d:%d, expected 0:0" % (p.relative_to(root), st.st_uid, st.st_gid))
    # no trailing newline (or any whitespace) in single-value metadata files
    nl_files = [im / "repositories.json"]
    for n in layer_dirs(root):
        for f in ("diff", "size", "cache-id", "parent"):
            nl_files.append(im / "layerdb" / "sha256" / n / f)
    for c in overlay_dirs(root):
        nl_files += [root / "overlay2" / c / "link", root / "overlay2" / c / "lower"]
    if md.is_dir():
        nl_files += [md / n / f for n in os.listdir(md) for f in os.listdir(md / n)]
    for p in nl_files:
        if p.exists():
            b = p.read_bytes()
            if b != b.strip():
                problems.append("%s: has leading/trailing whitespace or newline: %r" % (p.relative_to(root), b[-20:]))
    committed = [root / "overlay2" / c / "committed" for c in overlay_dirs(root)]
    for p in committed:
        if p.exists() and p.stat().st_size != 0:
            problems.append("%s: committed marker must be empty" % p.relative_to(root))
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------------ sharing / idempotency
def _chains(oracle_name: str) -> dict[str, set[str]]:
    return {im["id"]: set(im["chain_ids"]) for im in load_oracle(oracle_name)["images"]}


def test_shared_layers_are_not_rewritten(data_root):
    """Loading fx-shared after fx-untagged (= fx-shared-b) adds only fx-shared-a's own layer; the shared
    layerdb dirs and their overlay2 dirs stay as they were."""
    first, second = "fx-untagged.docker.tar", "fx-shared.docker.tar"
    run_dy("load", "-i", FIXTURES / "docker-save" / first, root=data_root)
    before_layers = set(layer_dirs(data_root))
    c1 = set().union(*_chains(first).values())
    assert before_layers == {c.split(":", 1)[1] for c in c1}
    snap = store_snapshot(data_root)
    run_dy("load", "-i", FIXTURES / "docker-save" / second, root=data_root)
    c2 = set().union(*_chains(second).values())
    after_layers = set(layer_dirs(data_root))
    assert after_layers == {c.split(":", 1)[1] for c in c1 | c2}
    assert len(overlay_dirs(data_root)) == len(c1 | c2)
    assert len(l_links(data_root)) == len(c1 | c2)
    snap2 = store_snapshot(data_root)
    # every layerdb file of the already present layers is untouched
    old = {k: v for k, v in snap.items() if k.startswith("image/overlay2/layerdb/sha256/")}
    changed = [k for k in old if snap2.get(k) != old[k]]
    assert changed == [], "existing layerdb entries changed: %s" % changed[:10]
    # and so is every existing overlay2 diff dir (committed may newly appear in a parent, nothing else)
    old_ov = {k: v for k, v in snap.items() if k.startswith("overlay2/")}
    changed = [k for k in old_ov if snap2.get(k) != old_ov[k]]
    assert changed == [], "existing overlay2 entries changed: %s" % changed[:10]
    assert layerdb_tmp_leftovers(data_root) == []


def test_load_twice_is_idempotent(data_root):
    """A second load of the same fixture creates no layer, no overlay2 dir and changes nothing in the store."""
    fx = FIXTURES / "docker-save" / "fx-edge.docker.tar"
    p1 = run_dy("load", "-i", fx, root=data_root)
    snap = store_snapshot(data_root)
    ov = overlay_dirs(data_root)
    p2 = run_dy("load", "-i", fx, root=data_root)
    assert p2.stdout == p1.stdout
    assert overlay_dirs(data_root) == ov
    d = diff_snapshots(snap, store_snapshot(data_root))
    # a lock file at the top of the data-root may be rewritten; Docker's own trees must not change at all
    d = [x for x in d if not re.match(r"^\w+:\s+\.[^/]*\s", x)]
    assert d == [], "second load changed the store:\n" + "\n".join(d)


def test_load_from_stdin(data_root):
    """`load` without -i reads the archive from stdin (here gzip-compressed) and stores the same image."""
    fx = FIXTURES / "docker-save" / "fx-manyfiles.docker.tar.gz"
    o = load_oracle(fx.name)
    with open(fx, "rb") as f:
        p = run_dy("load", root=data_root, stdin=f)
    assert [ln for ln in p.stdout.splitlines() if ln.strip()] == o["load"]["stdout"]
    assert image_ids(data_root) == sorted(im["id"] for im in o["images"])
    assert layer_dirs(data_root) == sorted(c.split(":", 1)[1] for im in o["images"] for c in im["chain_ids"])


_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
           "armv8l": "arm", "s390x": "s390x", "ppc64le": "ppc64le", "riscv64": "riscv64", "i686": "386"}


def test_multi_platform_default_is_host(data_root):
    """Without --platform a multi-platform index loads the host platform (whatever the host is); a host whose
    architecture the index does not hold gets a clean error naming it."""
    import platform as _pf
    arch = _GOARCH.get(_pf.machine(), _pf.machine())
    o = load_oracle("fx-multi.oci")
    ms = [m for m in o["oci"]["manifests"] if (m.get("platform") or {}).get("architecture") == arch]
    p = run_dy("load", "-i", FIXTURES / "oci" / "fx-multi.oci", root=data_root, check=bool(ms))
    if not ms:
        line = assert_clean_error(p, "load of an index without linux/%s" % arch)
        assert arch in line, line
        assert image_ids(data_root) == []
        return
    (m,) = ms
    assert image_ids(data_root) == [m["config_digest"]]
    assert [ln for ln in p.stdout.splitlines() if ln.strip()] == ["Loaded image: fx-multi:%s" % m["ref"]]


def test_unknown_platform_is_a_clean_error(data_root):
    p = run_dy("load", "-i", FIXTURES / "oci" / "fx-multi.oci", "--platform", "linux/s390x", root=data_root,
               check=False)
    line = assert_clean_error(p, "load --platform linux/s390x")
    assert "s390x" in line
    assert image_ids(data_root) == [] and layer_dirs(data_root) == [] and overlay_dirs(data_root) == []
