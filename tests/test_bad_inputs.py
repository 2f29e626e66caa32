"""Acceptance 6: hostile and broken inputs (shared/fixtures/bad, see its README.md and cases.json).

For every input, a data-root that already holds one good image (fx-tags) is snapshotted, then
`dockyard load -i <bad>` runs.  Always: nothing appears outside the data-root (canaries), the planted victims
and host files are intact, no mounts are left.  REJECT cases: non-zero exit, exactly one `Error:` line that names
the problem, the data-root byte-for-byte unchanged.  REJECT-or-CONFINE cases may instead load exactly what Docker
extracted (docker-behaviour.json `extracted`).  ACCEPT cases must load and give Docker's diff dirs.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import (
    FIXTURES,
    assert_clean_error,
    chain_ids,
    diff_snapshots,
    dy_cmd,
    image_ids,
    img_root,
    layerdb_tmp_leftovers,
    missing,
    mounts_below,
    read_text,
    repositories,
    run_dy,
    store_snapshot,
    umount_below,
)
from conftest import _env as dy_env
from listing import compare_listing, list_tree

BAD = FIXTURES / "bad"
GOOD = FIXTURES / "docker-save" / "fx-tags.docker.tar"

# ------------------------------------------------------------------------------------------------ expectations
REJECT, REJECT_OR_CONFINE, ACCEPT, ACCEPT_OR_REJECT, ACCEPT_OR_CLEAN_FAIL = (
    "REJECT", "REJECT_OR_CONFINE", "ACCEPT", "ACCEPT_OR_REJECT", "ACCEPT_OR_CLEAN_FAIL")

# What bad/README.md says dockyard must do, and key words the one-line error must contain when it rejects:
# a list of groups, every group must match (case-insensitive), any word of a group will do.
ESCAPE = ["outside", "escape", "travers", "..", "absolute", "not allowed", "unsafe", "invalid path"]
EOF_WORDS = ["unexpected end", "unexpected eof", "truncated", "short read", "premature end"]
EXPECT: dict[str, tuple[str, list[list[str]]]] = {
    "traversal-dotdot.docker.tar": (REJECT_OR_CONFINE, [ESCAPE, ["fx-escape-dotdot"]]),
    "absolute-path.docker.tar": (REJECT_OR_CONFINE, [ESCAPE, ["fx-escape-abs"]]),
    "pax-path-traversal.docker.tar": (REJECT_OR_CONFINE, [ESCAPE, ["fx-escape-pax"]]),
    "gnu-longname-traversal.docker.tar": (REJECT_OR_CONFINE, [ESCAPE, ["fx-escape-gnu-longname"]]),
    "symlink-abs-write-through.docker.tar": (REJECT, [["symlink"], ["fx-escape-symlink-abs"]]),
    "symlink-rel-write-through.docker.tar": (REJECT, [["symlink"], ["fx-escape-symlink-rel"]]),
    "symlink-cross-layer-write-through.docker.tar": (ACCEPT, []),
    "symlink-cross-layer-no-dir-entry.docker.tar": (ACCEPT_OR_REJECT, [["symlink"], ["evil2"]]),
    "symlink-named-dot.docker.tar": (REJECT, [["symlink", "directory"]]),
    "duplicate-dir-then-symlink-escape.docker.tar": (REJECT, [["duplicate", "symlink"], ["conflict"]]),
    "duplicate-entries.docker.tar": (REJECT, [["duplicate"], ["dup.txt", "dupdir"]]),
    "hardlink-outside.docker.tar": (REJECT, [["link"], [*ESCAPE, "etc/passwd", "not in", "missing"]]),
    "hardlink-forward-and-missing.docker.tar": (
        REJECT, [["link"], ["later", "not/in/archive", "missing", "not found", "no such", "unknown", "not yet"]]),
    "device-nodes.docker.tar": (ACCEPT, []),
    "truncated-layer.docker.tar": (REJECT, [EOF_WORDS]),
    "truncated-outer.docker.tar": (REJECT, [EOF_WORDS]),
    "huge-size-header.docker.tar": (REJECT, [EOF_WORDS]),
    "whiteout-dotdot.docker.tar": (REJECT, [["whiteout", ".wh."]]),
    "missing-layer.docker.tar": (REJECT, [["missing", "not found", "no such", "not in", "absent"]]),
    "diffid-mismatch.docker.tar": (REJECT, [["diffid", "diff_id", "diff id"], ["abababab", "53f9423b"]]),
    "layer-count-mismatch.docker.tar": (REJECT, [["layer"], ["mismatch", "count", "expected", "length", "differ"]]),
    "layer-symlink-outside.docker.tar": (REJECT, [["symlink", "link", *ESCAPE]]),
    "manifest-path-traversal.docker.tar": (REJECT, [[*ESCAPE, "not in", "etc/hostname"]]),
    "manifest-not-json.docker.tar": (REJECT, [["json"], ["manifest"]]),
    "bad-repotag.docker.tar": (REJECT, [["reference", "repotag", "tag", "repository name"]]),
    "oci-blob-digest-mismatch.oci": (REJECT, [["digest"], ["mismatch", "expected", "does not match",
                                                           "doesn't match", "verif"]]),
    "oci-size-mismatch.oci": (REJECT, [["size"]]),
    "oci-missing-blob.oci": (REJECT, [["missing", "not found", "no such", "absent"], ["blob", "71e074827c2c"]]),
    "oci-digest-path-traversal.oci": (REJECT, [["digest"], ["invalid", "malformed", "bad", "unsupported"]]),
    "oci-diffid-mismatch.oci": (REJECT, [["diffid", "diff_id", "diff id"]]),
    "layer-not-a-tar.oci": (REJECT, [["tar"], ["not a", "invalid", "bad", "corrupt", "malformed", "header"]]),
    "gzip-bomb.oci": (ACCEPT_OR_CLEAN_FAIL, [["size", "limit", "too large", "exceeds", "space"]]),
}
SLOW = {"gzip-bomb.oci"}

VICTIM_FILE = Path("/tmp/fx-victim-file")
VICTIM_DIR = Path("/tmp/fx-victim-dir")
HOST_LOCK = "/tmp/.dockyard-tests-host.lock"
HOST_FILES = [Path("/etc/passwd"), Path("/etc/hostname"), Path("/etc/group")]


def _load_json(p: Path):
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None


CASES_JSON = _load_json(BAD / "cases.json") or {}
DOCKER = {r["input"]: r for r in (_load_json(BAD / "docker-behaviour.json") or {"results": []})["results"]}
ALL = sorted(CASES_JSON)
FAST = [n for n in ALL if n not in SLOW]


# ------------------------------------------------------------------------------------------------ host checks
def canary_state() -> set[str]:
    found = set()
    for base in ("/tmp", "/", "/etc"):
        try:
            for n in os.listdir(base):
                if n.startswith(("fx-evil", "fx-escape", "fxescape")):
                    found.add(os.path.join(base, n))
        except OSError:
            pass
    return found


def plant_victims() -> None:
    if VICTIM_FILE.is_symlink() or VICTIM_FILE.exists():
        VICTIM_FILE.unlink()
    VICTIM_FILE.write_text("victim\n")
    if VICTIM_DIR.is_symlink() or VICTIM_DIR.is_file():
        VICTIM_DIR.unlink()
    VICTIM_DIR.mkdir(exist_ok=True)
    for n in ("keep1", "keep2"):
        (VICTIM_DIR / n).write_text(n + "\n")


def victims_damaged() -> list[str]:
    bad = []
    try:
        if VICTIM_FILE.is_symlink():
            bad.append("%s replaced by a symlink" % VICTIM_FILE)
        elif VICTIM_FILE.read_text() != "victim\n":
            bad.append("%s modified" % VICTIM_FILE)
        if os.lstat(VICTIM_FILE).st_nlink != 1:
            bad.append("%s gained a hard link" % VICTIM_FILE)
    except FileNotFoundError:
        bad.append("%s deleted" % VICTIM_FILE)
    for n in ("keep1", "keep2"):
        p = VICTIM_DIR / n
        try:
            if p.read_text() != n + "\n":
                bad.append("%s modified" % p)
        except FileNotFoundError:
            bad.append("%s deleted" % p)
    return bad


def host_state() -> dict[str, tuple]:
    out = {}
    for p in HOST_FILES:
        try:
            st = os.lstat(p)
            out[str(p)] = (st.st_mode, st.st_nlink, st.st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        except OSError:
            out[str(p)] = None
    return out


# ------------------------------------------------------------------------------------------------ running a case
@dataclass
class Outcome:
    name: str
    root: Path
    proc: subprocess.CompletedProcess
    before: dict
    after: dict
    new_canaries: list[str]
    victims: list[str]
    host_changed: list[str]
    mounts_left: list[str]
    good_ids: list[str]
    good_repos: dict
    seconds: float
    max_rss_kib: int | None = None
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def host_lock():
    """The victims and canaries live in the shared /tmp: serialise every test session on this host that plants
    or checks them (two concurrent pytest runs would otherwise see each other's victims vanish)."""
    with open(HOST_LOCK, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_case(name: str, root: Path, timeout: float = 600) -> Outcome:
    run_dy("load", "-i", GOOD, root=root)
    good_ids = image_ids(root)
    good_repos = repositories(root)
    with host_lock():
        return _run_case_locked(name, root, timeout, good_ids, good_repos)


def _run_case_locked(name: str, root: Path, timeout: float, good_ids: list[str], good_repos: dict) -> Outcome:
    plant_victims()
    canaries0 = canary_state()
    host0 = host_state()
    before = store_snapshot(root)
    t0 = time.monotonic()
    # Popen + wait4: we also want this child's own peak RSS (bounded memory for the gzip bomb)
    p = subprocess.Popen(dy_cmd("load", "-i", BAD / name, root=root), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=dy_env(), cwd="/")
    bufs: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda k=k, f=f: bufs.__setitem__(k, f.read()), daemon=True)
               for k, f in (("out", p.stdout), ("err", p.stderr))]
    for t in readers:
        t.start()
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    try:
        _pid, status, ru = os.wait4(p.pid, 0)
    finally:
        timer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join()
    for f in (p.stdout, p.stderr):
        if f is not None:
            f.close()
    if p.returncode == -9 and time.monotonic() - t0 >= timeout:
        pytest.fail("load of %s did not finish within %ss" % (name, timeout))
    rss = ru.ru_maxrss  # KiB on Linux
    proc = subprocess.CompletedProcess(p.args, p.returncode, bufs.get("out", b"").decode("utf-8", "replace"),
                                       bufs.get("err", b"").decode("utf-8", "replace"))
    seconds = time.monotonic() - t0
    after = store_snapshot(root) if name not in SLOW else {}
    host1 = host_state()
    return Outcome(
        name=name, root=root, proc=proc, before=before, after=after,
        new_canaries=sorted(canary_state() - canaries0), victims=victims_damaged(),
        host_changed=[k for k in host0 if host0[k] != host1[k]], mounts_left=mounts_below(root),
        good_ids=good_ids, good_repos=good_repos, seconds=seconds, max_rss_kib=rss)


@pytest.fixture(scope="module", params=FAST)
def outcome(request, tmp_path_factory):
    name = request.param
    root = tmp_path_factory.mktemp("bad-" + re.sub(r"[^A-Za-z0-9]+", "-", name)) / "root"
    root.mkdir()
    res = _run_case(name, root)
    yield res
    umount_below(root)


# ------------------------------------------------------------------------------------------------ helpers
def _store_diff(o: Outcome) -> list[str]:
    d = diff_snapshots(o.before, o.after, limit=60)
    # a lock file at the top of the data-root (not Docker's) may be rewritten, never added or removed
    return [x for x in d if not re.match(r"^changed: \.[^/]*\s", x)]


def _check_rejected(o: Outcome) -> list[str]:
    """Everything a rejection must satisfy; returns problems (the error line is asserted by the caller)."""
    problems = []
    d = _store_diff(o)
    if d:
        problems.append("data-root changed by a rejected load:\n  " + "\n  ".join(d))
    if layerdb_tmp_leftovers(o.root):
        problems.append("leftovers in layerdb/tmp: %s" % layerdb_tmp_leftovers(o.root))
    return problems


def _error_keywords(line: str, groups: list[list[str]], name: str = "") -> list[str]:
    """Missing key word groups.  Tokens holding the input's name or path are dropped first: the file names
    themselves say 'symlink', 'duplicate', 'missing'... and must not count as naming the problem."""
    if name:
        line = re.sub(r"\S*%s\S*" % re.escape(name), " ", line)
    line = line.replace(str(BAD), " ")
    low = line.lower()
    return ["error line %r lacks any of %s" % (line, g) for g in groups if not any(w.lower() in low for w in g)]


def _docker_layer_listings(name: str) -> dict[str, list]:
    """diff_id -> Docker's diff dir listing, for an input Docker accepted."""
    r = DOCKER.get(name) or {}
    out = {}
    for layers in (r.get("extracted") or {}).values():
        for lay in layers:
            if lay.get("diff_dir") is not None:
                out[lay["diff_id"]] = lay["diff_dir"]
    return out


def _check_accepted_like_docker(o: Outcome) -> list[str]:
    """The load succeeded: it must have stored exactly what Docker stored, with Docker's diff dirs, and left the
    existing image alone."""
    problems = []
    r = DOCKER.get(o.name)
    if not r or not r.get("images_after"):
        return ["dockyard accepted %s but Docker stored nothing for it: should have been rejected" % o.name]
    want_ids = sorted(set(o.good_ids) | {i["id"] for i in r["images_after"]})
    if image_ids(o.root) != want_ids:
        problems.append("images after load %s, expected %s" % (image_ids(o.root), want_ids))
    listings = _docker_layer_listings(o.name)
    for im in r["images_after"]:
        chains = chain_ids(im["layers"])
        for diff_id, chain in zip(im["layers"], chains, strict=True):
            ld = img_root(o.root) / "layerdb" / "sha256" / chain.split(":", 1)[1]
            if not ld.is_dir():
                problems.append("layer %s (chain %s) not in layerdb" % (diff_id, chain))
                continue
            if read_text(ld / "diff") != diff_id:
                problems.append("layerdb %s: diff %r != %s" % (chain, read_text(ld / "diff"), diff_id))
            cache = read_text(ld / "cache-id")
            if diff_id in listings:
                d = o.root / "overlay2" / str(cache) / "diff"
                diffs = compare_listing(list_tree(d), listings[diff_id]) if d.is_dir() else ["no diff dir %s" % d]
                if diffs:
                    problems.append("diff dir of %s differs from Docker's:\n  %s" % (diff_id, "\n  ".join(diffs)))
    # what was there before is untouched (repositories.json gains the new tag; a parent may gain `committed`)
    for k, v in o.before.items():
        if k in ("image/overlay2/repositories.json",) or re.match(r"^\.[^/]*$", k):
            continue
        if o.after.get(k) != v:
            problems.append("pre-existing %s changed: %s -> %s" % (k, v, o.after.get(k)))
    repos = repositories(o.root)["Repositories"]
    for repo, refs in o.good_repos["Repositories"].items():
        if any(repos.get(repo, {}).get(ref) != iid for ref, iid in refs.items()):
            problems.append("the good image's tags changed: %s" % repos.get(repo))
    if layerdb_tmp_leftovers(o.root):
        problems.append("leftovers in layerdb/tmp: %s" % layerdb_tmp_leftovers(o.root))
    return problems


# ------------------------------------------------------------------------------------------------ tests
def test_every_bad_input_has_an_expectation():
    """cases.json and this file agree (a new bad input must get an explicit expectation here)."""
    assert ALL, "no bad inputs found in %s" % BAD
    assert sorted(EXPECT) == ALL
    on_disk = sorted(n for n in os.listdir(BAD) if n.endswith(".docker.tar") or n.endswith(".oci"))
    assert on_disk == ALL


def test_nothing_escapes(outcome: Outcome):
    """No canary outside the data-root, victims and host files intact, no mount left behind."""
    assert outcome.new_canaries == [], "created outside the data-root: %s" % outcome.new_canaries
    assert outcome.victims == [], "victims damaged: %s" % outcome.victims
    assert outcome.host_changed == [], "host files changed: %s" % outcome.host_changed
    assert outcome.mounts_left == [], "mounts left: %s" % outcome.mounts_left
    assert "Traceback (most recent call last)" not in outcome.proc.stderr + outcome.proc.stdout


def test_expected_outcome(outcome: Outcome):
    mode, words = EXPECT[outcome.name]
    p = outcome.proc
    if mode == REJECT or (mode in (REJECT_OR_CONFINE, ACCEPT_OR_REJECT) and p.returncode != 0):
        line = assert_clean_error(p, outcome.name)
        problems = _error_keywords(line, words, outcome.name) + _check_rejected(outcome)
    elif mode in (ACCEPT, REJECT_OR_CONFINE, ACCEPT_OR_REJECT):
        assert p.returncode == 0, "expected %s to load like Docker (%s):\n%s" % (outcome.name, mode, p.stderr)
        problems = _check_accepted_like_docker(outcome)
    else:  # pragma: no cover
        pytest.fail("unhandled mode %s" % mode)
    assert not problems, "\n".join(problems)


def test_rejection_names_the_input(outcome: Outcome):
    """bad/README.md: the error names the input (its file name); an accepted input must be one the
    README allows to load."""
    if outcome.proc.returncode == 0:
        mode, _ = EXPECT[outcome.name]
        assert mode != REJECT, "%s must be rejected, but it loaded" % outcome.name
        return
    line = assert_clean_error(outcome.proc, outcome.name)
    assert outcome.name in line, "error line does not name the input %s: %r" % (outcome.name, line)


@pytest.mark.parametrize("outcome", ["huge-size-header.docker.tar"], indirect=True)
def test_huge_size_header_fails_fast(outcome: Outcome):
    """A header claiming an 8 GiB file must be rejected without waiting for/allocating the data."""
    assert outcome.proc.returncode != 0  # (the run's generous timeout fails a hang with a clear message)
    if outcome.max_rss_kib is not None:
        assert outcome.max_rss_kib < 512 * 1024, "peak RSS %d KiB" % outcome.max_rss_kib


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_gzip_bomb(tmp_path):
    """1 MB gzip -> 1 GiB tar: stream with bounded memory; either load it like Docker (one 1 GiB zeros.bin) or
    fail cleanly with the store unchanged."""
    name = "gzip-bomb.oci"
    if name not in CASES_JSON:
        missing("the fixture tree has no gzip bomb (%s in %s)" % (name, BAD / "cases.json"))
    root = tmp_path / "root"
    root.mkdir()
    try:
        o = _run_case(name, root, timeout=1100)
        assert o.new_canaries == [] and o.victims == [] and o.host_changed == [] and o.mounts_left == []
        assert "Traceback (most recent call last)" not in o.proc.stderr
        if o.max_rss_kib is not None:
            assert o.max_rss_kib < 512 * 1024, "peak RSS %d KiB: the layer was buffered" % o.max_rss_kib
        if o.proc.returncode != 0:
            line = assert_clean_error(o.proc, name)
            assert not _error_keywords(line, EXPECT[name][1], name), line
            o.after = store_snapshot(root)
            assert _check_rejected(o) == []
        else:
            r = DOCKER[name]
            assert image_ids(root) == sorted(set(o.good_ids) | {i["id"] for i in r["images_after"]})
            want = _docker_layer_listings(name)
            (img,) = r["images_after"]
            for diff_id, chain in zip(img["layers"], chain_ids(img["layers"]), strict=True):
                cache = read_text(img_root(root) / "layerdb" / "sha256" / chain.split(":", 1)[1] / "cache-id")
                d = root / "overlay2" / str(cache) / "diff"
                assert compare_listing(list_tree(d), want[diff_id]) == []
            assert layerdb_tmp_leftovers(root) == []
    finally:
        umount_below(root)
        shutil.rmtree(root, ignore_errors=True)  # one 1 GiB file: free the space now
