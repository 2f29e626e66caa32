"""fsck against a corruption corpus (issue acceptance, automated).

Every case damages a COPY of a good data-root -- one that dockyard loaded from fx-edge + fx-shared + fx-tags,
and the data-root a real dockerd 20.10 wrote (dataroot-docker20: images, 2 containers, distribution/) -- in one
precise way, then:

1. ``fsck --format json`` exits 1 and names the exact problem: each expected (code, path) is present, and no
   finding has a code the case does not explain;
2. ``fsck --repair --dry-run`` changes nothing (byte-level snapshot); for the stray dir (an orphan) a plain
   ``fsck --repair`` (no ``--yes``, stdin not a tty) must keep it; for the unrepairable cases a plain
   ``fsck --repair`` must not destroy anything intact;
3. ``fsck --repair --yes`` then:
   - repairable cases: exits 0; a second plain ``fsck`` and ``fsck --deep`` are clean; an independent structural
     check (faultlib.structural_problems: links, lower files of layers AND containers, layerdb, chainIDs, refs,
     leftovers) finds nothing; the data-root is byte-identical to the pre-corruption snapshot except the paths
     the repair is allowed to rewrite (listed per case; usually none);
   - unrepairable cases (overlay2 dir removed, byte flipped in diff/, tar-split dropped, layerdb dir emptied,
     parent broken, config truncated): fsck still exits 1 with only the unrepairable findings left; every damaged
     image is in ``damaged_images`` and its reasons name exactly the damaged layer; nothing intact was lost
     (every path that survived the corruption unchanged is still there unchanged, except what the case
     allows); ``fsck --deep`` finds nothing beyond the known damage; ``save --all-intact`` saves exactly the
     intact images (with their tags), skips the damaged ones with a warning, and ``load`` of that archive into
     a fresh root gives exactly those images, ``fsck --deep`` clean.

Targets are chosen from the store itself before the fault (StoreView, no dockyard code): a middle layer of
fx-edge (it has a parent and children, and on the Docker root the fx-writer container sits on fx-edge), an
image no container uses whose top layer is its own, and so on. Expected image IDs and chains come from the
fixtures (faultlib.fixture_images).
"""
from __future__ import annotations

import gzip
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from faultlib import (
    SAVE,
    StoreView,
    clone_root,
    compare_files,
    docker_template,  # noqa: F401  (fixture)
    dockyard_template,  # noqa: F401  (fixture)
    dy,
    fixture_images,
    fmt_findings,
    fsck_report,
    no_traceback,
    read_boundaries,
    run_killed,
    scratch,  # noqa: F401  (fixture)
    show,
    snapshot,
    structural_problems,
)

IMG = "image/overlay2"
LDB = IMG + "/layerdb/sha256"
EDGE_ID = fixture_images(SAVE / "fx-edge.docker.tar")[0].id


# ------------------------------------------------------------------------------------------------ case plumbing
@dataclass
class Ctx:
    root: Path
    kind: str
    view: StoreView
    scratch: Path

    # -- targets, all read from the store before the fault
    @property
    def edge_chains(self) -> list[str]:
        assert EDGE_ID in self.view.images, "fx-edge (%s) is not in the %s root" % (EDGE_ID, self.kind)
        return self.view.images[EDGE_ID]

    @property
    def mid(self) -> str:
        """A middle layer of fx-edge: it has a parent and children."""
        c = self.edge_chains
        return c[len(c) // 2]

    def lay(self, chain: str) -> str:
        return "%s/%s" % (LDB, chain[7:])

    def ovl(self, chain: str) -> str:
        return "overlay2/" + self.view.cache_id(chain)

    def lone_image(self) -> str:
        """An image that no container uses, whose top layer no other image uses and that has a parent layer."""
        for i in sorted(self.view.images):
            chains = self.view.images[i]
            if (i not in self.view.container_images() and len(chains) >= 2
                    and self.view.users_of(chains[-1]) == [i]):
                return i
        raise AssertionError("no suitable image in the %s root" % self.kind)

    def w(self, rel: str, data: bytes) -> None:
        with open(self.root / rel, "wb") as f:
            f.write(data)

    def damaged_by(self, chain: str) -> dict[str, set[str]]:
        return {i: {chain} for i in self.view.users_of(chain)}


@dataclass
class Expect:
    required: list[tuple[str, str]]                      # (code, path) fsck must report
    repairable: bool
    tolerated: set[str] = field(default_factory=set)     # other finding codes that may appear
    damaged: dict[str, set[str]] = field(default_factory=dict)   # image -> chains its reasons must name
    allowed: Callable[[str], bool] = lambda p: False    # paths the repair may rewrite (vs. before the fault)
    destroyed: Callable[[str], bool] = lambda p: False  # paths the corruption itself destroyed (unrepairable)
    deep: bool = False                                   # detection needs --deep
    final_ref: dict | None = None                        # expected final snapshot (default: before the fault)
    notes: list[str] = field(default_factory=list)


def _rand_hex() -> str:
    return secrets.token_hex(32)


# ------------------------------------------------------------------------------------------------ the corpus
def c_l_link_deleted(c: Ctx) -> Expect:
    link = c.view.link(c.mid)
    os.unlink(c.root / "overlay2/l" / link)
    return Expect([("short-link-missing", "overlay2/l/" + link)], repairable=True)


def c_link_file_emptied(c: Ctx) -> Expect:
    p = c.ovl(c.mid) + "/link"
    c.w(p, b"")
    # A new short name is a valid repair; then the old l/ link goes and every lower file that named it
    # (children's AND the containers' rw/init layers) must be rewritten -- structural_problems checks that.
    return Expect([("link-file-bad", p)], repairable=True, tolerated={"short-link-unused"},
                  allowed=lambda q: q == p or q.startswith("overlay2/l/") or q.endswith("/lower"))


def c_size_truncated(c: Ctx) -> Expect:
    p = c.lay(c.mid) + "/size"
    c.w(p, b"")
    return Expect([("layer-size-invalid", p)], repairable=True)   # recomputed size must equal the original


def c_cache_id_truncated(c: Ctx) -> Expect:
    p = c.lay(c.mid) + "/cache-id"
    c.w(p, b"")
    # The overlay2 dir is intact and identifiable (the l/ link its children's lower files name points at it,
    # and its files rebuild the layer's diffID through tar-split): rebuildable without loss, so repairable.
    return Expect([("layer-file-empty", p)], repairable=True, tolerated={"orphan-driver-dir"})


def c_diff_truncated(c: Ctx) -> Expect:
    p = c.lay(c.mid) + "/diff"
    c.w(p, b"")
    # The diffID is known from every image config whose chain contains this chainID (and verifiable through
    # the chainID formula and tar-split): rebuildable without loss, so repairable.
    return Expect([("layer-file-empty", p)], repairable=True)


def c_config_truncated(c: Ctx) -> Expect:
    i = c.lone_image()
    p = "%s/imagedb/content/sha256/%s" % (IMG, i[7:])
    c.w(p, b"")
    # The config cannot be rebuilt (the ID is its hash). Its layers are intact data of a known image and
    # must stay (re-creating the config from a backup makes the image whole again).
    return Expect([("config-hash-mismatch", p)], repairable=False, damaged={i: set()},
                  destroyed=lambda q: q == p)


def c_repositories_truncated(c: Ctx) -> Expect:
    p = IMG + "/repositories.json"
    c.w(p, b"")
    # dockerd cannot start on an empty repositories.json (reference/store.go reload: json Decode -> EOF).
    # The tags are gone; rewriting a valid (empty) store is the repair.
    return Expect([("repositories-invalid", p)], repairable=True, allowed=lambda q: q == p)


def c_overlay2_dir_removed(c: Ctx) -> Expect:
    d = c.ovl(c.mid)
    link = "overlay2/l/" + c.view.link(c.mid)
    shutil.rmtree(c.root / d)
    return Expect([("driver-dir-missing", d)], repairable=False, tolerated={"short-link-dangling"},
                  damaged=c.damaged_by(c.mid), allowed=lambda q: q == link,
                  destroyed=lambda q: q == d or q.startswith(d + "/"))


def c_stray_dir(c: Ctx) -> Expect:
    d = "overlay2/" + _rand_hex()
    os.makedirs(c.root / d / "diff" / "junk")
    c.w(d + "/diff/junk/file", b"stray\n")
    return Expect([("orphan-driver-dir", d)], repairable=True, notes=["orphan: plain --repair must keep it"])


def _first_file(diff: Path) -> Path | None:
    for dp, dn, fn in sorted(os.walk(diff)):
        dn.sort()
        for n in sorted(fn):
            q = Path(dp) / n
            if q.is_file() and not q.is_symlink() and q.stat().st_size > 0 and q.stat().st_nlink == 1:
                return q
    return None


def c_diff_byte_flipped(c: Ctx) -> Expect:
    chains = c.edge_chains
    order = chains[len(chains) // 2:] + chains[: len(chains) // 2]   # prefer a middle layer
    for chain in order:
        f = _first_file(c.root / c.ovl(chain) / "diff")
        if f is not None:
            break
    else:
        raise AssertionError("no layer of fx-edge has a regular file")
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    st = f.stat()
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    rel = str(f.relative_to(c.root))
    return Expect([("layer-content-corrupt", c.ovl(chain) + "/diff")], repairable=False, deep=True,
                  damaged=c.damaged_by(chain), destroyed=lambda q: q == rel)


def c_tar_split_dropped(c: Ctx) -> Expect:
    p = c.lay(c.mid) + "/tar-split.json.gz"
    os.unlink(c.root / p)
    return Expect([("tar-split-missing", p)], repairable=False, damaged=c.damaged_by(c.mid))


def c_layerdb_dir_emptied(c: Ctx) -> Expect:
    d = c.lay(c.mid)
    for n in os.listdir(c.root / d):
        os.unlink(c.root / d / n)
    # tar-split is gone with the rest, so the layer cannot be made whole; its overlay2 dir and its parent layer
    # are intact data that must survive a repair.
    return Expect([("layer-file-missing", d + "/diff"), ("layer-file-missing", d + "/size"),
                   ("layer-file-missing", d + "/cache-id"), ("tar-split-missing", d + "/tar-split.json.gz")],
                  repairable=False, tolerated={"orphan-driver-dir"}, damaged=c.damaged_by(c.mid),
                  destroyed=lambda q: q.startswith(d + "/"))


def c_parent_broken(c: Ctx) -> Expect:
    p = c.lay(c.mid) + "/parent"
    c.w(p, ("sha256:" + _rand_hex()).encode())
    return Expect([("parent-missing", p)], repairable=False, tolerated={"chain-id-mismatch"},
                  damaged=c.damaged_by(c.mid), destroyed=lambda q: q == p)


def c_removing_leftover_copied(c: Ctx) -> Expect:
    d = c.lay(c.mid)
    removing = "%s-%s-removing" % (d, _rand_hex())
    os.rename(c.root / d, c.root / removing)          # what deletion does first ...
    clone = c.scratch / "relayer"
    shutil.copytree(c.root / removing, clone, symlinks=True)
    os.rename(clone, c.root / d)                       # ... and the layer is back (a copy): both name one cache-id
    os.chmod(c.root / d, os.stat(c.root / removing).st_mode & 0o7777)
    # Finishing the deletion must drop the -removing dir only, never the overlay2 dir the live layer uses.
    return Expect([("removal-leftover", removing)], repairable=True)


def c_removing_leftover_interrupted_rmi(c: Ctx) -> Expect:
    """A real interrupted deletion: `rmi` of an image with its own layers, SIGKILLed (DOCKYARD_CRASH_AT) right
    after it renamed the top layer's dir to <chain>-<rand>-removing. Repair must end exactly where a complete
    `rmi` ends (snapshot of a copy where it ran to completion)."""
    victim = c.lone_image()
    ref_root = clone_root(c.root, c.scratch / "rmi-complete")
    log = c.scratch / "rmi.log"
    p = dy(ref_root, "rmi", "-f", victim, env={"DOCKYARD_CRASH_LOG": str(log)})
    assert p.returncode == 0, show(p)
    names = read_boundaries(log)
    assert "layer:renamed-removing" in names, names
    at = names.index("layer:renamed-removing") + 1
    k = run_killed(c.root, "rmi", "-f", victim, crash_at=at)
    assert k.killed, "rmi was not killed at boundary %d: rc %s %s" % (at, k.returncode, k.stderr)
    leftovers = [n for n in os.listdir(c.root / LDB) if n.endswith("-removing")]
    assert len(leftovers) == 1, leftovers
    return Expect([("removal-leftover", "%s/%s" % (LDB, leftovers[0]))], repairable=True,
                  tolerated={"unused-layer"}, final_ref=snapshot(ref_root))


def c_staging_leftover_orphan(c: Ctx) -> Expect:
    """An interrupted registration: a layerdb/tmp/write-set-* dir whose cache-id names a real overlay2 dir that
    only it knows (created as the driver does: diff/, link + l/ link, lower + work/ on the parent)."""
    parent = c.mid
    cache = _rand_hex()
    link = "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(26))
    stage = "%s/layerdb/tmp/write-set-%s" % (IMG, secrets.token_hex(5))
    os.makedirs(c.root / stage, mode=0o700)
    c.w(stage + "/cache-id", cache.encode())
    c.w(stage + "/tar-split.json.gz", gzip.compress(b'{"type":2,"payload":"","position":0}\n')[:20])
    d = c.root / "overlay2" / cache
    os.makedirs(d / "diff" / "half")
    (d / "diff" / "half" / "written").write_bytes(b"partial")
    os.mkdir(d / "work")
    os.symlink("../%s/diff" % cache, c.root / "overlay2/l" / link)
    c.w("overlay2/%s/link" % cache, link.encode())
    parent_lower = c.root / c.ovl(parent) / "lower"
    lower = "l/" + c.view.link(parent) + (":" + parent_lower.read_text() if parent_lower.exists() else "")
    c.w("overlay2/%s/lower" % cache, lower.encode())
    return Expect([("staging-leftover", stage)], repairable=True)


def c_staging_leftover_live(c: Ctx) -> Expect:
    """A write-set-* leftover whose cache-id names the overlay2 dir of a published layer: dropping the leftover
    must leave that layer's files alone."""
    stage = "%s/layerdb/tmp/write-set-%s" % (IMG, secrets.token_hex(5))
    os.makedirs(c.root / stage, mode=0o700)
    c.w(stage + "/cache-id", c.view.cache_id(c.mid).encode())
    return Expect([("staging-leftover", stage)], repairable=True)


CASES: dict[str, Callable[[Ctx], Expect]] = {
    "l-link-deleted": c_l_link_deleted,
    "link-file-emptied": c_link_file_emptied,
    "size-truncated": c_size_truncated,
    "cache-id-truncated": c_cache_id_truncated,
    "diff-truncated": c_diff_truncated,
    "config-truncated": c_config_truncated,
    "repositories-truncated": c_repositories_truncated,
    "overlay2-dir-removed": c_overlay2_dir_removed,
    "stray-dir": c_stray_dir,
    "diff-byte-flipped": c_diff_byte_flipped,
    "tar-split-dropped": c_tar_split_dropped,
    "layerdb-dir-emptied": c_layerdb_dir_emptied,
    "parent-broken": c_parent_broken,
    "removing-leftover-copied": c_removing_leftover_copied,
    "removing-leftover-interrupted-rmi": c_removing_leftover_interrupted_rmi,
    "staging-leftover-orphan": c_staging_leftover_orphan,
    "staging-leftover-live-cache-id": c_staging_leftover_live,
}


# ------------------------------------------------------------------------------------------------ the test
def _check_findings(rep: dict, ex: Expect, problems: list[str], when: str) -> None:
    got = {(f["code"], f["path"]) for f in rep["findings"]}
    for code, path in ex.required:
        if (code, path) not in got:
            problems.append("%s: expected finding %s at %s, not reported" % (when, code, path))
    codes = {c for c, _ in ex.required} | ex.tolerated
    for f in rep["findings"]:
        if f["code"] not in codes:
            problems.append("%s: unexpected finding %s at %s (%s)" % (when, f["code"], f["path"], f["message"]))


def _check_damaged(rep: dict, ex: Expect, problems: list[str], when: str) -> None:
    dmg = rep.get("damaged_images", {})
    if set(dmg) != set(ex.damaged):
        problems.append("%s: damaged_images %s, expected %s" % (when, sorted(dmg), sorted(ex.damaged)))
    for image, chains in ex.damaged.items():
        text = " ".join(dmg.get(image, []))
        named = {w.strip(":;,") for w in text.split() if w.startswith("sha256:")}
        if chains and named != chains:
            problems.append("%s: damaged image %s: reasons name layers %s, expected exactly %s (%r)"
                            % (when, image, sorted(named), sorted(chains), dmg.get(image)))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", ["dockyard", "docker"])
def test_corruption(kind, case, dockyard_template, docker_template, scratch):  # noqa: F811
    template = dockyard_template if kind == "dockyard" else docker_template
    root = clone_root(template, scratch / "root")
    s0 = snapshot(root)
    ctx = Ctx(root, kind, StoreView.read(root), scratch)
    ex = CASES[case](ctx)
    s1 = snapshot(root)
    assert s1 != s0, "the corruption changed nothing"
    problems: list[str] = []
    deep = ("--deep",) if ex.deep else ()

    # 1. detection
    rc, rep = fsck_report(root, *deep)
    if rc != 1:
        problems.append("fsck%s exited %d on the damaged root, expected 1:\n%s" % (" --deep" if deep else "", rc,
                                                                                 fmt_findings(rep)))
    _check_findings(rep, ex, problems, "fsck")
    if not ex.repairable:
        _check_damaged(rep, ex, problems, "fsck")

    # 2. --dry-run changes nothing
    p = dy(root, "fsck", "--repair", "--dry-run", *deep)
    no_traceback(p)
    d = compare_files(s1, snapshot(root), allow_committed=False)
    if d:
        problems.append("fsck --repair --dry-run changed the data-root:\n  " + "\n  ".join(d))

    # orphans are deleted only with --yes (stdin is not a tty here)
    if case == "stray-dir":
        p = dy(root, "fsck", "--repair")
        no_traceback(p)
        stray = ex.required[0][1]
        if not (root / stray).is_dir():
            problems.append("fsck --repair without --yes deleted the orphan %s" % stray)
        if p.returncode == 0:
            problems.append("fsck --repair without --yes exited 0 with the orphan left in place")

    # what survived the corruption unchanged; an unrepairable case must never lose any of it
    intact = {q: v for q, v in s1.items() if s0.get(q) == v and not ex.allowed(q) and not ex.destroyed(q)}
    if not ex.repairable:
        # plain --repair (no --yes, no tty) must not delete anything intact either
        p = dy(root, "fsck", "--repair", *deep)
        no_traceback(p)
        d = compare_files(intact, {q: v for q, v in snapshot(root).items() if q in intact}, allow_committed=False)
        if d:
            problems.append("fsck --repair WITHOUT --yes destroyed intact data:\n  %s\n%s" % ("\n  ".join(d),
                                                                                             p.stdout))

    # 3. repair
    p = dy(root, "fsck", "--repair", "--yes", *deep)
    no_traceback(p)
    s2 = snapshot(root)
    repair_log = show(p)
    if ex.repairable:
        if p.returncode != 0:
            problems.append("fsck --repair --yes did not end clean (rc %d):\n%s" % (p.returncode, p.stdout))
        for flags in ((), ("--deep",)):
            rc, rep = fsck_report(root, *flags)
            if rc != 0:
                problems.append("fsck %s after repair is not clean:\n%s" % (" ".join(flags), fmt_findings(rep)))
        sp = structural_problems(root, strict=True)
        if sp:
            problems.append("after repair the data-root is inconsistent (independent check):\n  " + "\n  ".join(sp))
        ref = ex.final_ref if ex.final_ref is not None else s0
        keep = {q for q in set(ref) | set(s2) if not ex.allowed(q)}
        d = compare_files({q: v for q, v in ref.items() if q in keep}, {q: v for q, v in s2.items() if q in keep},
                          allow_committed=False)
        if d:
            problems.append("repair touched what it should not (vs. %s):\n  %s" % (
                "a completed run" if ex.final_ref is not None else "before the fault", "\n  ".join(d)))
    else:
        if p.returncode != 1:
            problems.append("fsck --repair --yes exited %d although the damage cannot be repaired" % p.returncode)
        rc, rep = fsck_report(root, *deep)
        left = [f for f in rep["findings"] if f["repairable"]]
        if left:
            problems.append("repairable findings left after --repair --yes:\n" + fmt_findings({"findings": left}))
        if rc != 1:
            problems.append("fsck after repair exited %d, the damage is still there" % rc)
        _check_findings(rep, ex, problems, "fsck after repair")
        _check_damaged(rep, ex, problems, "fsck after repair")
        # nothing intact lost: what survived the corruption unchanged is still there, unchanged
        d = compare_files(intact, {q: v for q, v in s2.items() if q in intact}, allow_committed=False)
        if d:
            problems.append("repair destroyed intact data:\n  " + "\n  ".join(d))
        # the other images verify: --deep finds nothing beyond the known damage
        rc, rep = fsck_report(root, "--deep")
        _check_findings(rep, ex, problems, "fsck --deep after repair")
        _check_damaged(rep, ex, problems, "fsck --deep after repair")
        # salvage: exactly the intact images, with their tags
        view0 = ctx.view
        intact_ids = sorted(set(view0.images) - set(ex.damaged))
        out = scratch / "salvage.tar"
        p = dy(root, "save", "--all-intact", "-o", out)
        no_traceback(p)
        if p.returncode != 0:
            problems.append("save --all-intact failed:\n" + show(p))
        else:
            for i in ex.damaged:
                if i not in p.stderr:
                    problems.append("save --all-intact did not warn about skipping %s:\n%s" % (i, p.stderr))
            saved = fixture_images(out)
            if sorted(s.id for s in saved) != intact_ids:
                problems.append("save --all-intact saved %s, expected the intact images %s"
                                % (sorted(s.id for s in saved), intact_ids))
            fresh = scratch / "fresh"
            fresh.mkdir()
            p = dy(fresh, "load", "-i", out)
            if p.returncode != 0:
                problems.append("load of the salvage archive failed:\n" + show(p))
            else:
                v = StoreView.read(fresh)
                if sorted(v.images) != intact_ids:
                    problems.append("fresh root holds %s, expected %s" % (sorted(v.images), intact_ids))
                for i in intact_ids:
                    if v.tags_of(i) != view0.tags_of(i):
                        problems.append("image %s: tags %s after salvage, %s before" % (i, v.tags_of(i),
                                                                                      view0.tags_of(i)))
                rc, rep = fsck_report(fresh, "--deep")
                if rc != 0:
                    problems.append("salvaged root is not clean:\n" + fmt_findings(rep))
    assert not problems, "%s root, case %s:\n- %s\n\nrepair run:\n%s" % (kind, case, "\n- ".join(problems),
                                                                      repair_log)
