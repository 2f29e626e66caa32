"""Crash injection: SIGKILL at every store write boundary, and at random times (issue acceptance, automated).

For each command below, a dry run with ``DOCKYARD_CRASH_LOG`` on a copy of its starting data-root tells how many
write boundaries N it passes (and is the reference run: it must succeed). Then, each on a fresh copy:

- ``DOCKYARD_CRASH_AT=n`` for every n in 1..N (the process SIGKILLs itself at its n-th boundary), and
- a few kills after a random delay (``random.Random(seed)``, delay within the reference run's duration) --
  our SIGKILL to the dockyard process only, as a crash would; only runs that really died of SIGKILL count.

After every kill:

1. the process (and any worker it forked) is gone within 3 s, and no mount is left below the root;
2. ``fsck --format json`` reports only findings whose ``repairable`` is true (or none);
3. ``fsck --repair --yes --deep`` exits 0 (its own re-check, deep, is clean);
4. every image that was fully there BEFORE the killed command and that the command does not target is intact:
   its config, metadata, layerdb dirs, overlay2 dirs and l/ links are byte-identical to before (an added empty
   ``committed`` marker excepted), and ``fsck --deep`` is clean;
5. repeating the interrupted command succeeds. EXPLICIT RULE for ``rmi``: a repeat that fails only with
   ``Error: No such image: <name>`` lines counts as done for each such name IF the killed run had already
   finished that part -- the tag is gone from repositories.json, or (for an ID) the config is gone (see
   ``_repeat_rmi``). The end-state check then still requires that no reference of that repository is left and
   that the image is gone, or -- when the kill came right after the untag -- dangling and removed by
   ``image prune -f``. ``image prune``/``container prune``/``tag``/``import``/``load`` must simply succeed;
6. the end state is what the command promises (from the fixtures and the store before the command), ``fsck
   --deep`` is clean, the independent structural check (faultlib.structural_problems) finds nothing.

Commands: ``load`` of fx-edge (docker-save, 11 layers), fx-shared (two images sharing a base layer that the
root already holds), the OCI layout fx-edge.oci-gzip; and on a copy of the Docker-written data-root: ``rmi``
(by tag, by ID, and a tag with digest references), ``tag``, ``import``, ``image prune -a -f``,
``container prune -f``. Kills run three at a time, each on its own copy, all on a tmpfs (mounted by the module,
unmounted at its end); the data-roots of failed kills are copied out and their paths printed.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import subprocess
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import mounts_below, umount_below
from faultlib import (
    OCI,
    SAVE,
    StoreView,
    build_dockyard_root,
    clone_root,
    compare_files,
    count_boundaries,
    docker_template,  # noqa: F401  (fixture)
    dy,
    files_of,
    fixture_images,
    fmt_findings,
    fsck_report,
    image_paths,
    rmtree,
    run_killed,
    show,
    snapshot,
    structural_problems,
)

pytestmark = pytest.mark.slow

WORKERS = (os.cpu_count() or 2) + 1    # each pipeline also waits (process exit polls, fsync)
MIN_TOTAL_KILLS = 200
KILLS: dict[str, int] = {}          # scenario -> kills that really happened

EDGE = SAVE / "fx-edge.docker.tar"
SHARED = SAVE / "fx-shared.docker.tar"
TAGS = SAVE / "fx-tags.docker.tar"
EDGE_OCI = OCI / "fx-edge.oci-gzip"


# ------------------------------------------------------------------------------------------------ starting roots
@pytest.fixture(scope="module")
def ramdisk(tmp_path_factory):
    """Every data-root of this module lives on a tmpfs: hundreds of copies are made and deleted, and a SIGKILL
    does not care about the filesystem (ext4 here has no journal and is slow after big deletions)."""
    d = tmp_path_factory.mktemp("crash-tmpfs")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g,mode=0755", "tmpfs", str(d)], check=True)
    yield d
    umount_below(d)


@pytest.fixture(scope="module")
def crash_bases(ramdisk, docker_template):  # noqa: F811
    return {
        "no-edge": build_dockyard_root(ramdisk / "base-no-edge", (SHARED, TAGS)),    # for loads of fx-edge
        "no-shared": build_dockyard_root(ramdisk / "base-no-shared", (EDGE, TAGS)),  # fx-tags has fx-shared's base
        "docker": clone_root(docker_template, ramdisk / "base-docker"),
    }


@pytest.fixture(scope="session")
def rootfs_tar(tmp_path_factory) -> Path:
    """A small rootfs tarball for ``import`` (its sha256 is the diffID docker import gives it)."""
    p = tmp_path_factory.mktemp("rootfs") / "rootfs.tar"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        def add(name, data=None, *, kind=tarfile.REGTYPE, mode=0o644, target=""):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime, ti.linkname = kind, mode, 1_700_000_000, target
            ti.size = len(data) if data else 0
            t.addfile(ti, io.BytesIO(data) if data else None)
        add("bin", kind=tarfile.DIRTYPE, mode=0o755)
        add("etc", kind=tarfile.DIRTYPE, mode=0o755)
        add("etc/hostname", b"crash\n")
        add("etc/motd", b"x" * 70000)
        add("bin/sh", kind=tarfile.SYMTYPE, mode=0o777, target="busybox")
        add("bin/busybox", os.urandom(4096), mode=0o755)
    p.write_bytes(buf.getvalue())
    return p


# ------------------------------------------------------------------------------------------------ scenarios
@dataclass
class Scenario:
    name: str
    base: str
    args: Callable[[dict], tuple]              # ctx -> CLI args
    targets: Callable[[StoreView], set[str]]   # images the command may remove or change
    final: Callable[[Path, StoreView, dict, list[str]], None]   # (root, view before, ctx, problems)
    repeat: Callable[[object, Path, StoreView, dict, list[str]], None] | None = None
    random_kills: int = 6
    seed: int = 0


def _load_final(root: Path, before: StoreView, ctx: dict, problems: list[str]) -> None:
    v = StoreView.read(root)
    want = ctx["ref_view"]
    for i in want.images:
        if i not in v.images:
            problems.append("image %s missing after the repeated load" % i)
        elif v.tags_of(i) != want.tags_of(i):
            problems.append("image %s: tags %s, the reference run gave %s" % (i, v.tags_of(i), want.tags_of(i)))
    extra = set(v.images) - set(want.images) - set(before.images)
    if extra:
        problems.append("images nobody loaded: %s" % sorted(extra))


def _ids_of_fixture(path: Path) -> list[str]:
    return sorted(s.id for s in fixture_images(path))


def _repeat_ok(p, root, before, ctx, problems) -> None:
    if p.returncode != 0:
        problems.append("repeating the interrupted command failed:\n" + show(p))


NO_SUCH = re.compile(r"^Error: No such image: (\S+)$")


def _repeat_rmi(p, root, before, ctx, problems) -> None:
    """rmi repeated after a crash. Accepted: rc 0; or rc 1 where EVERY error line is ``Error: No such image:
    <name>`` for a name the killed run had already dealt with -- its reference is gone from repositories.json
    (a tag) or its config is gone (an ID). That part counts as done. Anything else is a failure."""
    if p.returncode == 0:
        return
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    refs = StoreView.read(root).refs
    for ln in lines:
        m = NO_SUCH.match(ln)
        if not m:
            problems.append("repeated rmi failed with something other than 'No such image':\n" + show(p))
            return
        name = m.group(1)
        if name.startswith("sha256:"):
            if (root / "image/overlay2/imagedb/content/sha256" / name[7:]).exists():
                problems.append("repeated rmi says No such image: %s, but its config exists" % name)
        elif name in refs or (name + ":latest") in refs:
            problems.append("repeated rmi says No such image: %s, but the reference exists" % name)
    if not lines:
        problems.append("repeated rmi exited %d without an error line" % p.returncode)


def _rmi_final(root: Path, before: StoreView, ctx: dict, problems: list[str]) -> None:
    v = StoreView.read(root)
    for name in ctx["rmi_tags"]:
        gone = [r for r in v.refs if r == name or r.startswith(name.rsplit(":", 1)[0] + "@")]
        if gone:
            problems.append("after rmi the references %s still exist" % gone)
    for i in ctx["rmi_ids"]:
        if i in v.images:
            problems.append("after rmi image %s still exists" % i)
    for i in ctx["rmi_by_tag"]:
        # Removing by tag untags first (as Docker does); a kill right after the untag leaves the image dangling
        # and the repeat then rightly says "No such image". A dangling image is a valid state, and
        # `image prune -f` must then remove it. An image that still has references is not dangling: the
        # interrupted rmi left it half-untagged and the repeat could not finish the job.
        if i in v.images:
            left = sorted(r for r, x in v.refs.items() if x == i)
            if left:
                problems.append("image %s is still referenced by %s after the repeated rmi" % (i, left))
                continue
            p = dy(root, "image", "prune", "-f")
            if p.returncode != 0 or i in StoreView.read(root).images:
                problems.append("dangling %s left by the interrupted rmi is not pruned:\n%s" % (i, show(p)))


def _tag_final(root: Path, before: StoreView, ctx: dict, problems: list[str]) -> None:
    v = StoreView.read(root)
    if v.refs.get("mirror/edge:crash") != ctx["edge_id"]:
        problems.append("mirror/edge:crash -> %s, expected %s" % (v.refs.get("mirror/edge:crash"), ctx["edge_id"]))
    if sorted(v.images) != sorted(before.images):
        problems.append("tag changed the set of images: %s" % sorted(set(v.images) ^ set(before.images)))
    lu = root / "image/overlay2/imagedb/metadata/sha256" / ctx["edge_id"][7:] / "lastUpdated"
    if not lu.is_file() or not lu.read_text():
        problems.append("no lastUpdated for the tagged image")


def _import_final(root: Path, before: StoreView, ctx: dict, problems: list[str]) -> None:
    v = StoreView.read(root)
    new = sorted(set(v.images) - set(before.images))
    tagged = v.refs.get("imported/rootfs:crash")
    if tagged not in new:
        problems.append("imported/rootfs:crash -> %s, not a new image (new: %s)" % (tagged, new))
        return
    if tagged != ctx["repeat_out"]:
        problems.append("the repeated import printed %s, the tag points to %s" % (ctx["repeat_out"], tagged))
    for i in new:
        if v.images[i] != [ctx["rootfs_diff_id"]]:
            problems.append("imported image %s has chain %s, expected [sha256 of the tarball %s]"
                            % (i, v.images[i], ctx["rootfs_diff_id"]))
        if i != tagged and v.tags_of(i):
            problems.append("a second imported image %s is tagged %s" % (i, v.tags_of(i)))
    if len(new) > 2:
        problems.append("more than one leftover imported image: %s" % new)


def _prune_final(root: Path, before: StoreView, ctx: dict, problems: list[str]) -> None:
    v = StoreView.read(root)
    keep = sorted(before.container_images())
    if sorted(v.images) != keep:
        problems.append("after image prune -a the images are %s, expected those used by containers %s"
                        % (sorted(v.images), keep))


def _container_prune_final(root: Path, before: StoreView, ctx: dict, problems: list[str]) -> None:
    v = StoreView.read(root)
    if v.containers:
        problems.append("containers left: %s" % sorted(v.containers))
    left = sorted(os.listdir(root / "containers")) if (root / "containers").is_dir() else []
    if left:
        problems.append("containers/ still holds %s" % left)
    for c in before.containers.values():
        for k in ("mount_id", "init_id"):
            if c[k] and (root / "overlay2" / c[k]).exists():
                problems.append("overlay2/%s of a pruned container is still there" % c[k])
    if sorted(v.images) != sorted(before.images):
        problems.append("container prune changed the images: %s" % sorted(set(v.images) ^ set(before.images)))


SCENARIOS = [
    Scenario("load-fx-edge-docker-save", "no-edge", lambda c: ("load", "-i", EDGE), lambda v: set(), _load_final,
             random_kills=10, seed=11),
    Scenario("load-fx-shared-docker-save", "no-shared", lambda c: ("load", "-i", SHARED), lambda v: set(),
             _load_final, random_kills=6, seed=12),
    Scenario("load-fx-edge-oci-gzip", "no-edge", lambda c: ("load", "-i", EDGE_OCI), lambda v: set(), _load_final,
             random_kills=6, seed=13),
    Scenario("rmi", "docker",
             lambda c: ("rmi", "fx-shared-a:1", c["shared_b_id"], "127.0.0.1:5055/fx/dup:1"),
             lambda v: {v.refs["fx-shared-a:1"], v.refs["fx-shared-b:1"], v.refs["127.0.0.1:5055/fx/dup:1"]},
             _rmi_final, repeat=_repeat_rmi, random_kills=4, seed=14),
    Scenario("tag", "docker", lambda c: ("tag", "fx-edge:1", "mirror/edge:crash"), lambda v: set(), _tag_final,
             random_kills=2, seed=15),
    Scenario("import", "docker", lambda c: ("import", c["rootfs"], "imported/rootfs:crash"), lambda v: set(),
             _import_final, random_kills=4, seed=16),
    Scenario("image-prune-all", "docker", lambda c: ("image", "prune", "-a", "-f"),
             lambda v: set(v.images) - v.container_images(), _prune_final, random_kills=4, seed=17),
    Scenario("container-prune", "docker", lambda c: ("container", "prune", "-f"), lambda v: set(),
             _container_prune_final, random_kills=4, seed=18),
]


# ------------------------------------------------------------------------------------------------ one kill
@dataclass
class Outcome:
    plan: str
    killed: bool
    root: Path = Path()
    where: str = ""
    problems: list[str] = field(default_factory=list)


def _one_kill(sc: Scenario, base: Path, before: StoreView, base_snap: dict, ctx: dict, work: Path, plan: tuple,
              idx: int) -> Outcome:
    root = clone_root(base, work / ("k%03d" % idx))
    args = sc.args(ctx)
    kind, val = plan
    out = Outcome("%s=%s" % ("CRASH_AT" if kind == "at" else "SIGKILL after", val if kind == "at" else
                             "%.3fs" % val), False, root)
    try:
        if kind == "at":
            k = run_killed(root, *args, crash_at=val)
            out.where = ctx["names"][val - 1]
            if not k.killed:
                out.problems.append("not killed at boundary %d (rc %s): the boundary count is not stable\n%s"
                                    % (val, k.returncode, k.stderr[-2000:]))
                return out
        else:
            k = run_killed(root, *args, delay=val)
            if not k.killed:
                return out          # finished (or failed) before the kill: not a kill
        out.killed = True
        p = out.problems
        if k.stragglers:
            p.append("processes of the killed command still alive 3 s later: %s" % k.stragglers)
        if mounts_below(root):
            p.append("mounts left after the kill: %s" % mounts_below(root))
        # 2. only repairable findings
        rc, rep = fsck_report(root)
        bad = [f for f in rep["findings"] if not f["repairable"]]
        if bad:
            p.append("unrepairable findings after the kill:\n" + fmt_findings({"findings": bad}))
        # 3. repair makes it clean (deep)
        r = dy(root, "fsck", "--repair", "--yes", "--deep")
        if r.returncode != 0:
            p.append("fsck --repair --yes --deep did not end clean:\n" + show(r))
        # 4. images that were there before and are not targeted: byte-identical, and fsck --deep clean (above)
        after = snapshot(root)
        for i in sorted(set(before.images) - sc.targets(before)):
            prefixes = image_paths(before, i)
            if sc.name == "tag" and i == ctx["edge_id"]:
                prefixes = [x for x in prefixes if "/imagedb/metadata/" not in x]   # tag writes lastUpdated
            d = compare_files(files_of(base_snap, prefixes), files_of(after, prefixes), limit=8)
            if d:
                p.append("image %s (there before the command) changed:\n  %s" % (i, "\n  ".join(d)))
        # 5. the repeat
        r = dy(root, *args)
        if "Traceback" in r.stderr:
            p.append("traceback in the repeat:\n" + show(r))
        ctx_k = dict(ctx, repeat_out=r.stdout.strip())
        (sc.repeat or _repeat_ok)(r, root, before, ctx_k, p)
        # 6. the end state
        sc.final(root, before, ctx_k, p)
        rc, rep = fsck_report(root, "--deep")
        if rc != 0:
            p.append("fsck --deep after the repeated command is not clean:\n" + fmt_findings(rep))
        sp = structural_problems(root, strict=True)
        if sp:
            p.append("end state inconsistent (independent check):\n  " + "\n  ".join(sp[:10]))
        if mounts_below(root):
            p.append("mounts left at the end: %s" % mounts_below(root))
        return out
    finally:
        if not out.problems:
            rmtree(root)


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_crash(sc: Scenario, crash_bases, rootfs_tar, ramdisk, tmp_path_factory):
    tmp_path = ramdisk / sc.name
    tmp_path.mkdir()
    base = crash_bases[sc.base]
    before = StoreView.read(base)
    base_snap = snapshot(base)
    ctx: dict = {
        "rootfs": rootfs_tar,
        "rootfs_diff_id": "sha256:" + hashlib.sha256(rootfs_tar.read_bytes()).hexdigest(),
        "edge_id": fixture_images(EDGE)[0].id,
    }
    if sc.base == "docker":
        ctx["shared_b_id"] = before.refs["fx-shared-b:1"]
        ctx["rmi_tags"] = ["fx-shared-a:1", "127.0.0.1:5055/fx/dup:1"]
        ctx["rmi_ids"] = [ctx["shared_b_id"]]
        ctx["rmi_by_tag"] = [before.refs["fx-shared-a:1"], before.refs["127.0.0.1:5055/fx/dup:1"]]

    # the reference run: counts the boundaries, must succeed, gives the expected end state
    ref = clone_root(base, tmp_path / "reference")
    t0 = time.monotonic()
    names, p = count_boundaries(ref, *sc.args(ctx), logdir=tmp_path)
    duration = time.monotonic() - t0
    assert p.returncode == 0, "reference run failed:\n" + show(p)
    assert names, "the reference run passed no write boundary (is DOCKYARD_CRASH_LOG honoured?)"
    ctx["names"] = names
    ctx["ref_view"] = StoreView.read(ref)
    if sc.name.startswith("load"):
        src = sc.args(ctx)[-1]
        loaded = set(ctx["ref_view"].images) - set(before.images)
        assert sorted(set(_ids_of_fixture(src)) - set(before.images)) == sorted(loaded), \
            "reference load gave %s, the fixture holds %s" % (sorted(loaded), _ids_of_fixture(src))
        if Path(src).is_file():
            for s in fixture_images(src):
                assert ctx["ref_view"].tags_of(s.id) == sorted(s.repo_tags), (s.id, ctx["ref_view"].tags_of(s.id))
        ctx["ref_view"].images = {i: c for i, c in ctx["ref_view"].images.items() if i in set(_ids_of_fixture(src))}
    rmtree(ref)

    rng = random.Random(sc.seed)
    plans = [("at", n) for n in range(1, len(names) + 1)]
    plans += [("after", rng.uniform(0.08, max(0.15, duration * 1.1))) for _ in range(sc.random_kills)]
    with ThreadPoolExecutor(max_workers=WORKERS) as ex:
        outcomes = list(ex.map(lambda a: _one_kill(sc, base, before, base_snap, ctx, tmp_path, a[1], a[0]),
                               enumerate(plans)))
    kills = sum(1 for o in outcomes if o.killed)
    KILLS[sc.name] = kills
    failed = [o for o in outcomes if o.problems]
    print("%s: %d boundaries, %d kills (%d at boundaries, %d at random times), %d failed"
          % (sc.name, len(names), kills, sum(1 for o in outcomes if o.killed and o.where),
             sum(1 for o in outcomes if o.killed and not o.where), len(failed)))
    assert kills >= len(names), "only %d of %d boundary kills happened" % (kills, len(names))
    if failed:
        report = ["%d of %d kills left a problem (%s, boundaries: %s)" % (len(failed), len(outcomes), sc.name,
                                                                         " ".join(names))]
        keep = tmp_path_factory.mktemp("crash-failures-" + sc.name)
        for o in failed[:12]:
            saved = keep / o.root.name
            clone_root(o.root, saved)       # the tmpfs goes away with the module; keep the evidence
            report.append("--- %s%s [data-root kept at %s]:\n%s" % (
                o.plan, " (%s)" % o.where if o.where else "", saved, "\n".join(o.problems)))
        if len(failed) > 12:
            report.append("... and %d more: %s" % (len(failed) - 12, ", ".join(o.plan for o in failed[12:])))
        pytest.fail("\n".join(report), pytrace=False)


def test_total_kills():
    """The module as a whole kills dockyard at least 200 times (every boundary of every command + random)."""
    if len(KILLS) < len(SCENARIOS):
        pytest.skip("only %d of %d crash scenarios ran in this session" % (len(KILLS), len(SCENARIOS)))
    total = sum(KILLS.values())
    print("kills per scenario: %s; total %d" % (json.dumps(KILLS), total))
    assert total >= MIN_TOTAL_KILLS, KILLS
