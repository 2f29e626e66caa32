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
``container prune -f``. Kills run several at a time (WORKERS), each on its own copy, all on a tmpfs (mounted by
the module, unmounted at its end); the data-roots of failed kills are copied out and their paths printed.

Commands that need more than a data-root (each kill also gets its own ``--exec-root`` on the tmpfs; the kill is
the CLI's -- a detached container's monitor and pull's/load's workers are processes of their own, their
boundaries are not counted):

- ``commit victim crash/commit:1`` of a stopped container of fx-edge:1 that changed, added and deleted files:
  after each kill the container (record, mount record, rw and init layers, links) and every image are
  byte-identical, the repeated commit gives fx-edge's chain plus the reference run's layer, and
  ``run --rm crash/commit:1`` shows the changes; an image the killed commit had already written is a dangling
  copy that ``image prune -f`` removes;
- ``run --rm`` in the foreground (the CLI is the monitor) and ``run -d`` + ``stop`` + ``rm`` (each of the three
  killed): after the kill, the next command (``ps -a``, which reaps) and ``fsck --repair --yes``: nothing mounted
  below the data-root (/proc/self/mountinfo), nothing in ``runc --root <exec-root>/runtime list``, no bundle, no
  process of the container or naming the exec-root, no staging dir -- except what belongs to a container that
  really runs (its monitor alive, only possible after a detached start). A container of a killed ``run --rm``
  may remain only if it was never started (docker's "Created"; ``rm`` removes it: dockyard cannot tell it from
  one a live ``run`` is about to start). The interrupted step is then finished as a user would, and the run
  repeated: same output, same exit code, nothing left. EXPLICIT RULE for ``rm``: the repeat may fail only with
  ``Error: No such container: <id>`` and only if the killed rm had already renamed the record away
  (``containers/<id>`` gone right after the kill; fsck --repair finishes such a removal);
- ``pull`` of fx-edge.oci-gzip from a real ``docker-registry`` (started by the module, seeded by skopeo, stopped
  by its pid) into a data-root that already holds fx-edge's bottom layers (as another image, made by
  faultlib.prefix_save): after each kill and repair, the repeated pull succeeds and leaves the image/ files of an
  uninterrupted pull (pulllib.StoreFacts), the same overlay2 shape and tmp/, and ``fsck --deep`` clean.
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
from containerlib import staging_leftovers
from faultlib import (
    HEX64,
    OCI,
    SAVE,
    KillResult,
    StoreView,
    build_dockyard_root,
    clone_root,
    compare_files,
    container_ids_in,
    container_record,
    count_boundaries,
    docker_template,  # noqa: F401  (fixture)
    dy,
    files_of,
    fixture_images,
    fmt_findings,
    force_cleanup,
    fsck_report,
    image_paths,
    monitor_pid,
    never_started,
    prefix_save,
    rmtree,
    run_killed,
    runtime_leftovers,
    show,
    snapshot,
    structural_problems,
)
from pulllib import (
    StoreFacts,
    compare_image_trees,
    compare_overlay,
    isolated_docker_config,  # noqa: F401  (autouse fixture: a private DOCKER_CONFIG for the module)
    skopeo_copy,
)
from registry_servers import DockerRegistry, need

pytestmark = pytest.mark.slow

#: kills run in parallel, each on its own copy; every pipeline also waits (process exits, the registry, runc)
WORKERS = int(os.environ.get("DOCKYARD_CRASH_WORKERS") or (os.cpu_count() or 2) + 2)
MIN_TOTAL_KILLS = 200
KILLS: dict[str, int] = {}          # scenario -> kills that really happened
KILL_DETAIL: dict[str, int] = {}    # run -d / stop / rm -> kills (they share one scenario)

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


ALL_SCENARIOS = [s.name for s in SCENARIOS] + ["commit", "run-rm", "run-d+stop+rm", "pull"]


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
        _, rep = fsck_report(root)
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
        _clean_end(root, "command", p)
        return out
    finally:
        if not out.problems:
            rmtree(root)


def _clean_end(root: Path, what: str, problems: list[str]) -> None:
    """After the repeated command: fsck --deep clean, the independent check clean, no mount left."""
    rc, rep = fsck_report(root, "--deep")
    if rc != 0:
        problems.append("fsck --deep after the repeated %s is not clean:\n" % what + fmt_findings(rep))
    sp = structural_problems(root, strict=True)
    if sp:
        problems.append("end state inconsistent (independent check):\n  " + "\n  ".join(sp[:10]))
    if mounts_below(root):
        problems.append("mounts left at the end: %s" % mounts_below(root))


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
    _report(sc.name, len(names), " ".join(names), outcomes, tmp_path_factory)


def _report(name: str, n_boundaries: int, boundaries: str, outcomes: list[Outcome], tmp_path_factory) -> None:
    """Count the kills of a scenario, print them, and fail with the problems of the failed kills (their
    data-roots copied out of the tmpfs, which goes away with the module)."""
    kills = sum(1 for o in outcomes if o.killed)
    KILLS[name] = kills
    failed = [o for o in outcomes if o.problems]
    print("%s: %d boundaries, %d kills (%d at boundaries, %d at random times), %d failed"
          % (name, n_boundaries, kills, sum(1 for o in outcomes if o.killed and o.where),
             sum(1 for o in outcomes if o.killed and not o.where), len(failed)))
    if failed:
        report = ["%d of %d kills left a problem (%s, boundaries: %s)" % (len(failed), len(outcomes), name,
                                                                         boundaries)]
        keep = tmp_path_factory.mktemp("crash-failures-" + name)
        for o in failed[:12]:
            saved = keep / o.root.name
            if o.root.exists():
                clone_root(o.root, saved)       # the tmpfs goes away with the module; keep the evidence
            report.append("--- %s%s [data-root kept at %s]:\n%s" % (
                o.plan, " (%s)" % o.where if o.where else "", saved, "\n".join(o.problems)))
        if len(failed) > 12:
            report.append("... and %d more: %s" % (len(failed) - 12, ", ".join(
                o.plan + (" (%s)" % o.where if o.where else "") for o in failed[12:])))
        pytest.fail("\n".join(report), pytrace=False)
    assert kills >= n_boundaries, "only %d of %d boundary kills happened" % (kills, n_boundaries)


# ================================================================================================ commit, run, pull
# These commands need more than a data-root: an exec-root (runtime state, bundles), running containers, a
# registry. Each kill gets its own data-root AND exec-root on the tmpfs; what a failed case leaves running is
# killed by the cgroup of ITS containers and the processes naming ITS exec-root (faultlib.force_cleanup).

#: the stopped container that ``commit`` is killed on made these changes to fx-edge:1
CHANGE_SCRIPT = "echo changed > /wh/keep; mkdir -p /new/dir; echo hello > /new/dir/file; rm /wh/file-to-delete"
COMMIT_REF = "crash/commit:1"
COMMIT_CHECK = ("run", "--rm", "--network", "none", COMMIT_REF, "sh", "-c",
                "cat /wh/keep /new/dir/file; test -e /wh/file-to-delete || echo deleted")
COMMIT_CHECK_OUT = "changed\nhello\ndeleted\n"
#: foreground run: output on both streams and an exit code of its own
RUN_RM = ("run", "--rm", "--network", "none", "fx-edge:1", "sh", "-c", "cat /wh/keep; echo to-stderr >&2; exit 7")
RUN_RM_RESULT = (7, "keep\n", "to-stderr\n")
#: detached run: announces itself once its TERM trap is set, exits 3 on `stop`
DAEMON = 'trap "echo got-term; exit 3" TERM; echo up; while :; do sleep 0.1; done'
RUN_D = ("run", "-d", "--network", "none", "fx-edge:1", "sh", "-c", DAEMON)
NO_SUCH_CONTAINER = re.compile(r"^Error: No such container: (\S+)$")
#: the pull base holds fx-edge's bottom PULL_KEEP of 11 layers (as another image): the pull finds those, fetches the
#: rest -- a layer on a layer that was there and a layer on a layer it made (every layer adds 9 boundaries)
PULL_KEEP = 9
PULL_REPO = "fx/edge:1"


@dataclass
class Box:
    """One kill's data-root and exec-root."""
    root: Path
    ex: Path

    def dy(self, *args, **kw) -> subprocess.CompletedProcess:
        return dy(self.root, "--exec-root", self.ex, *args, **kw)

    def kill(self, *args, **kw) -> KillResult:
        return run_killed(self.root, "--exec-root", self.ex, *args, **kw)


def _box(base: Path, work: Path, idx: int) -> Box:
    root = clone_root(base, work / ("k%03d" % idx))
    ex = work / ("k%03d-exec" % idx)
    ex.mkdir()
    return Box(root, ex)


def _plan_text(kind: str, val) -> str:
    return "CRASH_AT=%d" % val if kind == "at" else "SIGKILL after %.3fs" % val


def _killed(box: Box, args: tuple, kind: str, val, names: list[str], out: Outcome) -> KillResult | None:
    """Run ``args`` and kill it as planned; None when it was not a kill (a random kill that came too late)."""
    if kind == "at":
        k = box.kill(*args, crash_at=val)
        out.where = names[val - 1]
        if not k.killed:
            out.problems.append("not killed at boundary %d (rc %s): the boundary count is not stable\n%s"
                                % (val, k.returncode, k.stderr[-2000:]))
            return None
    else:
        k = box.kill(*args, delay=val)
        if not k.killed:
            return None
    out.killed = True
    if k.stragglers:
        out.problems.append("processes of the killed command still alive 3 s later: %s" % k.stragglers)
    return k


def _ok(p: subprocess.CompletedProcess, problems: list[str], what: str, rc: int = 0) -> bool:
    if "Traceback (most recent call last)" in p.stderr + p.stdout or p.returncode != rc:
        problems.append("%s: expected rc %d\n%s" % (what, rc, show(p)))
        return False
    return True


def _fsck_and_repair(root: Path, problems: list[str]) -> None:
    """fsck reports only repairable findings; fsck --repair --yes --deep ends clean."""
    _rc, rep = fsck_report(root)
    bad = [f for f in rep["findings"] if not f["repairable"]]
    if bad:
        problems.append("unrepairable findings after the kill:\n" + fmt_findings({"findings": bad}))
    r = dy(root, "fsck", "--repair", "--yes", "--deep")
    if r.returncode != 0:
        problems.append("fsck --repair --yes --deep did not end clean:\n" + show(r))


def _intact(base_snap: dict, root: Path, groups: dict[str, list[str]], problems: list[str]) -> None:
    """Everything listed (image or container -> path prefixes) is byte-identical to the starting data-root."""
    after = snapshot(root)
    for what, prefixes in groups.items():
        d = compare_files(files_of(base_snap, prefixes), files_of(after, prefixes), limit=8)
        if d:
            problems.append("%s (there before the command) changed:\n  %s" % (what, "\n  ".join(d)))


def _image_groups(view: StoreView) -> dict[str, list[str]]:
    return {"image %s %s" % (i[:19], view.tags_of(i)): image_paths(view, i) for i in sorted(view.images)}


def _container_paths(root: Path, cid: str) -> list[str]:
    mdir = root / "image/overlay2/layerdb/mounts" / cid
    mid = (mdir / "mount-id").read_text().strip()
    out = ["containers/" + cid, "image/overlay2/layerdb/mounts/" + cid]
    for d in (mid, mid + "-init"):
        out.append("overlay2/" + d)
        link = (root / "overlay2" / d / "link").read_text().strip()
        out.append("overlay2/l/" + link)
    return out


def _next_command(box: Box, problems: list[str]) -> dict[str, dict]:
    """The next dockyard command after the kill: ``ps -a`` (it reaps what the dead monitor watched)."""
    p = box.dy("ps", "-a", "--no-trunc", "--format", "json")
    if not _ok(p, problems, "`ps -a` after the kill"):
        return {}
    try:
        return {r["ID"]: r for r in (json.loads(ln) for ln in p.stdout.splitlines() if ln.strip())}
    except (ValueError, KeyError):
        problems.append("`ps -a --format json` printed something else:\n" + show(p))
        return {}


def _mount_ids(root: Path, cids) -> dict[str, str]:
    out = {}
    for cid in cids:
        try:
            out[cid] = (root / "image/overlay2/layerdb/mounts" / cid / "mount-id").read_text().strip()
        except OSError:
            out[cid] = ""
    return out


def _no_leftovers(box: Box, cids: set[str], problems: list[str], when: str,
                  running: dict[str, str] | None = None) -> None:
    """No mount below the data-root, nothing in runc's state, no bundle, no process naming the exec-root or in a
    container's cgroup -- except what belongs to the ``running`` containers -- and no staging dir."""
    left = runtime_leftovers(box.root, box.ex, cids, running=running)
    left += ["staging leftover %s" % x for x in staging_leftovers(box.root)]
    if left:
        problems.append("%s:\n  %s" % (when, "\n  ".join(left)))


def _end_state(box: Box, cids: set[str], problems: list[str]) -> None:
    """No container, nothing mounted or running, fsck --deep clean, the independent check clean."""
    cids |= container_ids_in(box.root)
    if container_ids_in(box.root):
        problems.append("containers left at the end: %s" % sorted(container_ids_in(box.root)))
    _no_leftovers(box, cids, problems, "left at the end")
    rc, rep = fsck_report(box.root, "--deep")
    if rc != 0:
        problems.append("fsck --deep at the end is not clean:\n" + fmt_findings(rep))
    sp = structural_problems(box.root, strict=True)
    if sp:
        problems.append("end state inconsistent (independent check):\n  " + "\n  ".join(sp[:10]))


def _finish_box(box: Box, out: Outcome, cids: set[str]) -> None:
    force_cleanup(box.root, box.ex, cids | container_ids_in(box.root))
    if not out.problems:
        rmtree(box.root)
        rmtree(box.ex)


def _wait_log(root: Path, cid: str, text: str, timeout: float = 10) -> bool:
    log = root / "containers" / cid / ("%s-json.log" % cid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(json.loads(ln).get("log") == text for ln in log.read_text().splitlines() if ln.strip()):
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return False


def _parallel(fn, plans: list) -> list[Outcome]:
    with ThreadPoolExecutor(max_workers=WORKERS) as ex:
        return list(ex.map(lambda a: fn(a[1], a[0]), enumerate(plans)))


def _random_plans(seed: int, n: int, duration: float) -> list[tuple]:
    rng = random.Random(seed)
    return [("after", rng.uniform(0.08, max(0.15, duration * 1.1))) for _ in range(n)]


@pytest.fixture(scope="module")
def container_bases(ramdisk):
    """``edge``: fx-edge only (for runs). ``commit``: fx-edge + fx-shared and a stopped container "victim" of
    fx-edge:1 that changed, added and deleted files (CHANGE_SCRIPT)."""
    need("runc")
    edge = build_dockyard_root(ramdisk / "base-edge", (EDGE,))
    commit = build_dockyard_root(ramdisk / "base-commit", (EDGE, SHARED))
    ex = ramdisk / "base-commit-exec"
    ex.mkdir()
    b = Box(commit, ex)
    p = b.dy("create", "--name", "victim", "--network", "none", "fx-edge:1", "sh", "-c", CHANGE_SCRIPT)
    assert p.returncode == 0, show(p)
    cid = p.stdout.strip()
    assert HEX64.match(cid), show(p)
    p = b.dy("start", "-a", "victim")
    assert p.returncode == 0, show(p)
    left = runtime_leftovers(commit, ex, {cid})
    assert not left, left
    return {"edge": edge, "commit": commit, "victim": cid}


# ------------------------------------------------------------------------------------------------ commit
def test_crash_commit(container_bases, ramdisk, tmp_path_factory):
    """``commit victim crash/commit:1`` killed at every boundary and at random times. After each kill: only
    repairable findings, repair; the container (record, mount record, rw and init layers, links) and every image
    (fx-edge, its base, fx-shared's) byte-identical; the repeated commit succeeds, its image has fx-edge's chain
    plus the committed layer (the reference run's diffID) and runs: the changes are there. An image the killed
    commit had already written is dangling (untagged, the same chain) and ``image prune -f`` removes it."""
    work = ramdisk / "commit"
    work.mkdir()
    base, victim = container_bases["commit"], container_bases["victim"]
    before = StoreView.read(base)
    base_snap = snapshot(base)
    edge_id = before.refs["fx-edge:1"]
    groups = _image_groups(before)
    groups["the container"] = _container_paths(base, victim)
    args = ("commit", "victim", COMMIT_REF)

    ref = _box(base, work, 999)
    t0 = time.monotonic()
    names, p = count_boundaries(ref.root, "--exec-root", ref.ex, *args, logdir=work)
    duration = time.monotonic() - t0
    assert p.returncode == 0 and HEX64.match(p.stdout.strip()[7:]), "reference commit failed:\n" + show(p)
    assert names, "the reference commit passed no write boundary"
    ref_id = p.stdout.strip()
    ref_chain = StoreView.read(ref.root).images[ref_id]
    assert ref_chain[:-1] == before.images[edge_id], "the committed image does not sit on fx-edge"
    r = ref.dy(*COMMIT_CHECK)
    assert (r.returncode, r.stdout) == (0, COMMIT_CHECK_OUT), "the reference commit's image:\n" + show(r)
    force_cleanup(ref.root, ref.ex, container_ids_in(ref.root))
    rmtree(ref.root)

    def one(plan, idx) -> Outcome:
        kind, val = plan
        box = _box(base, work, idx)
        out = Outcome(_plan_text(kind, val), False, box.root)
        cids = {victim}
        try:
            k = _killed(box, args, kind, val, names, out)
            if k is None:
                return out
            pr = out.problems
            if mounts_below(box.root):
                pr.append("mounts left after the kill: %s" % mounts_below(box.root))
            _fsck_and_repair(box.root, pr)
            _intact(base_snap, box.root, groups, pr)
            r = box.dy(*args)
            if not _ok(r, pr, "repeating the interrupted commit"):
                return out
            new_id = r.stdout.strip()
            v = StoreView.read(box.root)
            if v.refs.get(COMMIT_REF) != new_id:
                pr.append("%s -> %s, the repeated commit printed %s" % (COMMIT_REF, v.refs.get(COMMIT_REF), new_id))
            if v.images.get(new_id) != ref_chain:
                pr.append("the committed image has the chain %s, the reference commit %s"
                          % (v.images.get(new_id), ref_chain))
            parent = box.root / "image/overlay2/imagedb/metadata/sha256" / new_id[7:] / "parent"
            if not parent.is_file() or parent.read_text() != edge_id:
                pr.append("the committed image's parent metadata is %r, expected %s"
                          % (parent.read_text() if parent.is_file() else None, edge_id))
            extra = sorted(set(v.images) - set(before.images) - {new_id})
            for i in extra:
                if v.tags_of(i) or v.images[i] != ref_chain:
                    pr.append("image %s left by the killed commit is not a dangling copy of the commit: tags %s, "
                              "chain %s" % (i, v.tags_of(i), v.images[i]))
            if extra:
                r = box.dy("image", "prune", "-f")
                _ok(r, pr, "image prune -f of the dangling image of the killed commit")
                left = sorted(set(StoreView.read(box.root).images) - set(before.images) - {new_id})
                if left:
                    pr.append("image prune -f left %s" % left)
            r = box.dy(*COMMIT_CHECK)
            if _ok(r, pr, "running the committed image") and r.stdout != COMMIT_CHECK_OUT:
                pr.append("the committed image shows %r, expected %r" % (r.stdout, COMMIT_CHECK_OUT))
            cids |= container_ids_in(box.root)
            if container_ids_in(box.root) != {victim}:
                pr.append("containers after the check run: %s, expected only the victim"
                          % sorted(container_ids_in(box.root)))
            _no_leftovers(box, cids, pr, "left at the end")
            rc, rep = fsck_report(box.root, "--deep")
            if rc != 0:
                pr.append("fsck --deep at the end is not clean:\n" + fmt_findings(rep))
            sp = structural_problems(box.root, strict=True)
            if sp:
                pr.append("end state inconsistent (independent check):\n  " + "\n  ".join(sp[:10]))
            return out
        finally:
            _finish_box(box, out, cids)

    plans = [("at", n) for n in range(1, len(names) + 1)] + _random_plans(21, 6, duration)
    _report("commit", len(names), " ".join(names), _parallel(one, plans), tmp_path_factory)


# ------------------------------------------------------------------------------------------------ run --rm
def test_crash_run_rm(container_bases, ramdisk, tmp_path_factory):
    """Foreground ``run --rm`` (the CLI is the container's monitor) killed at every boundary and at random
    times. After the kill: the next command (``ps -a``) finds no container running (its monitor, the CLI, is
    dead); fsck reports only repairable findings; after the repair nothing is mounted below the data-root, runc
    knows nothing, no bundle, no process of the container, no staging dir is left. A container of the killed run may remain only if it was never started
    (docker's "Created": the kill came between create and start) -- ``rm`` removes it; one that was started is
    gone (``--rm``). fx-edge is byte-identical. Repeating the run prints the same output, exits 7, leaves no
    container."""
    work = ramdisk / "run-rm"
    work.mkdir()
    base = container_bases["edge"]
    before = StoreView.read(base)
    base_snap = snapshot(base)
    groups = _image_groups(before)

    ref = _box(base, work, 999)
    t0 = time.monotonic()
    names, p = count_boundaries(ref.root, "--exec-root", ref.ex, *RUN_RM, logdir=work)
    duration = time.monotonic() - t0
    assert (p.returncode, p.stdout, p.stderr) == RUN_RM_RESULT, "reference run failed:\n" + show(p)
    assert names, "the reference run passed no write boundary"
    assert not container_ids_in(ref.root), "the reference run --rm left a container"
    rmtree(ref.root)

    def one(plan, idx) -> Outcome:
        kind, val = plan
        box = _box(base, work, idx)
        out = Outcome(_plan_text(kind, val), False, box.root)
        cids: set[str] = set()
        try:
            k = _killed(box, RUN_RM, kind, val, names, out)
            if k is None:
                return out
            pr = out.problems
            cids = container_ids_in(box.root)
            rows = _next_command(box, pr)
            running = sorted(c for c, r in rows.items() if r.get("State") == "running")
            if running:
                pr.append("containers running after the next command, whose monitor (the killed CLI) is dead: %s"
                          % running)
            _fsck_and_repair(box.root, pr)
            _no_leftovers(box, cids, pr, "after the kill, the next command (`ps -a`) and fsck --repair")
            for cid in sorted(container_ids_in(box.root)):
                rec = container_record(box.root, cid)
                if rec is None or not never_started(rec):
                    pr.append("container %s of the killed `run --rm` is still there after `ps -a` and fsck --repair "
                              "(state %s, ps: %s): it was started, --rm must remove it"
                              % (cid[:12], (rec or {}).get("State"), (rows.get(cid) or {}).get("Status")))
                r = box.dy("rm", cid)
                _ok(r, pr, "rm of the container the killed run left")
            _intact(base_snap, box.root, groups, pr)
            r = box.dy(*RUN_RM)
            if (r.returncode, r.stdout, r.stderr) != RUN_RM_RESULT:
                pr.append("the repeated run: expected rc, stdout, stderr %r\n%s" % (RUN_RM_RESULT, show(r)))
            _end_state(box, cids, pr)
            return out
        finally:
            _finish_box(box, out, cids)

    plans = [("at", n) for n in range(1, len(names) + 1)] + _random_plans(22, 6, duration)
    _report("run-rm", len(names), " ".join(names), _parallel(one, plans), tmp_path_factory)


# ------------------------------------------------------------------------------------------------ run -d, stop, rm
def _daemon_lifecycle(box: Box, problems: list[str], logdir: Path | None = None) -> list[tuple[list[str], float]]:
    """``run -d`` (prints the ID), wait for "up", ``stop`` (exit code 3 from the TERM trap, logs "up" and
    "got-term"), ``rm`` (container gone). With ``logdir``: the boundaries and durations of the three commands."""
    steps: list[tuple[list[str], float]] = []

    def call(*args):
        t0 = time.monotonic()
        if logdir is not None:
            names, p = count_boundaries(box.root, "--exec-root", box.ex, *args, logdir=logdir)
        else:
            names, p = [], box.dy(*args)
        steps.append((names, time.monotonic() - t0))
        return p

    p = call(*RUN_D)
    if not _ok(p, problems, "run -d") or not HEX64.match(p.stdout.strip()):
        problems.append("run -d did not print a container ID:\n" + show(p))
        return steps
    cid = p.stdout.strip()
    if not _wait_log(box.root, cid, "up\n"):
        problems.append("the detached container never said 'up'")
    p = call("stop", cid)
    if _ok(p, problems, "stop") and p.stdout != cid + "\n":
        problems.append("stop printed %r" % p.stdout)
    rec = container_record(box.root, cid) or {}
    if (rec.get("State") or {}).get("ExitCode") != 3 or (rec.get("State") or {}).get("Running"):
        problems.append("after stop the container's state is %s, expected exited with 3" % rec.get("State"))
    p = box.dy("logs", cid)
    if _ok(p, problems, "logs") and p.stdout != "up\ngot-term\n":
        problems.append("logs of the detached container: %r" % p.stdout)
    p = call("rm", cid)
    if _ok(p, problems, "rm") and p.stdout != cid + "\n":
        problems.append("rm printed %r" % p.stdout)
    if container_ids_in(box.root):
        problems.append("containers left after rm: %s" % sorted(container_ids_in(box.root)))
    return steps


STEPS = ("run -d", "stop", "rm")


def test_crash_run_detached(container_bases, ramdisk, tmp_path_factory):
    """``run -d`` + ``stop`` + ``rm``: each of the three commands killed at every boundary and at random times
    (the earlier ones ran to their end on that copy first). The monitor of a detached container is a process of
    its own (its boundaries are not counted; the kill is the CLI's). After the kill, the next command (``ps -a``)
    finds no container running without a live monitor; fsck reports only repairable findings; after the repair:
    nothing mounted, known to runc, bundled, alive or staged but what belongs to a container that really runs
    (its monitor alive); fx-edge byte-identical. Then the interrupted step is finished as a user would (a running container is
    stopped, every container removed; a repeated ``rm`` may say ``No such container`` only if the killed rm had
    already taken the container's record away), nothing is left, and the whole life cycle runs again."""
    work = ramdisk / "run-d"
    work.mkdir()
    base = container_bases["edge"]
    before = StoreView.read(base)
    base_snap = snapshot(base)
    groups = _image_groups(before)

    ref = _box(base, work, 999)
    refp: list[str] = []
    steps = _daemon_lifecycle(ref, refp, logdir=work)
    assert not refp, "the reference life cycle failed:\n" + "\n".join(refp)
    assert all(n for n, _ in steps), "a step passed no write boundary: %s" % [len(n) for n, _ in steps]
    force_cleanup(ref.root, ref.ex, container_ids_in(ref.root))
    rmtree(ref.root)

    def one(plan, idx) -> Outcome:
        step, kind, val = plan
        box = _box(base, work, idx)
        out = Outcome("%s: %s" % (STEPS[step], _plan_text(kind, val)), False, box.root)
        cids: set[str] = set()
        cid = None
        try:
            pre: list[str] = []
            if step >= 1:
                p = box.dy(*RUN_D)
                if _ok(p, pre, "run -d (before the killed step)"):
                    cid = p.stdout.strip()
                    cids.add(cid)
                    if not _wait_log(box.root, cid, "up\n"):
                        pre.append("the detached container never said 'up'")
                if step >= 2 and cid:
                    _ok(box.dy("stop", cid), pre, "stop (before the killed step)")
            if pre or (step >= 1 and not cid):
                out.problems += pre or ["no container to work on"]
                return out
            args = RUN_D if step == 0 else ("stop", cid) if step == 1 else ("rm", cid)
            k = _killed(box, args, kind, val, steps[step][0], out)
            if k is None:
                return out
            pr = out.problems
            cids |= container_ids_in(box.root)
            record_gone = cid is not None and not (box.root / "containers" / cid).is_dir()
            rows = _next_command(box, pr)
            running = {c: m for c, m in _mount_ids(box.root, rows).items() if rows[c].get("State") == "running"}
            for c in running:
                mon = monitor_pid(box.ex, c)
                if step == 2 or not mon or not os.path.exists("/proc/%d" % mon):
                    pr.append("container %s runs without a live monitor (monitor %s) after the next command"
                              % (c[:12], mon))
            _fsck_and_repair(box.root, pr)
            _no_leftovers(box, cids, pr, "after the kill, the next command (`ps -a`) and fsck --repair",
                          running=running)
            _intact(base_snap, box.root, groups, pr)
            # finish what the kill interrupted
            if step == 2:
                r = box.dy("rm", cid)
                m = NO_SUCH_CONTAINER.match(r.stderr.strip())
                if r.returncode != 0 and not (m and m.group(1) == cid and record_gone):
                    pr.append("repeating the interrupted rm failed (the killed rm had %s the record away):\n%s"
                              % ("taken" if record_gone else "not taken", show(r)))
            else:
                if step == 1:
                    r = box.dy("stop", cid)
                    if _ok(r, pr, "repeating the interrupted stop"):
                        rec = container_record(box.root, cid) or {}
                        if (rec.get("State") or {}).get("ExitCode") != 3:
                            pr.append("after the repeated stop the state is %s, expected exit code 3"
                                      % rec.get("State"))
                for c in sorted(container_ids_in(box.root)):
                    if c in running and step == 0:
                        _ok(box.dy("stop", c), pr, "stop of the container the killed run -d started")
                    _ok(box.dy("rm", c), pr, "rm of the container the killed %s left" % STEPS[step])
            if container_ids_in(box.root):
                pr.append("containers left after finishing the interrupted step: %s"
                          % sorted(container_ids_in(box.root)))
            _no_leftovers(box, cids, pr, "left after finishing the interrupted step")
            # and the whole life cycle again
            _daemon_lifecycle(box, pr)
            _end_state(box, cids, pr)
            return out
        finally:
            _finish_box(box, out, cids | ({cid} if cid else set()))

    plans: list[tuple] = []
    for i, (names, dur) in enumerate(steps):
        plans += [(i, "at", n) for n in range(1, len(names) + 1)]
        plans += [(i, *x) for x in _random_plans(23 + i, (3, 2, 2)[i], dur)]
    outcomes = _parallel(one, plans)
    for i, s in enumerate(STEPS):
        KILL_DETAIL[s] = sum(1 for o, pl in zip(outcomes, plans, strict=True) if pl[0] == i and o.killed)
    _report("run-d+stop+rm", sum(len(n) for n, _ in steps),
            "; ".join("%s: %s" % (s, " ".join(n)) for s, (n, _) in zip(STEPS, steps, strict=True)), outcomes,
            tmp_path_factory)


# ------------------------------------------------------------------------------------------------ pull
@pytest.fixture(scope="module")
def edge_registry(tmp_path_factory):
    """A real docker-registry (ours, stopped by its pid) seeded by skopeo with fx-edge.oci-gzip as fx/edge:1."""
    skopeo = need("skopeo")
    need("docker-registry")
    with DockerRegistry(tmp_path_factory.mktemp("crash-registry")) as reg:
        skopeo_copy(skopeo, "fx-edge.oci-gzip", "1", "%s/%s" % (reg.addr, PULL_REPO))
        yield reg


@pytest.fixture(scope="module")
def pull_base(ramdisk):
    """fx-shared + an image made of fx-edge's bottom PULL_KEEP layers (faultlib.prefix_save): the pull of
    fx-edge finds those layers ("Already exists") and fetches the others on top of them."""
    spec = prefix_save(EDGE, PULL_KEEP, ramdisk / "edge-prefix.tar", "fx-edge-base:%d" % PULL_KEEP)
    return build_dockyard_root(ramdisk / "base-pull", (ramdisk / "edge-prefix.tar", SHARED)), spec


def _tmp_listing(root: Path) -> list[str]:
    t = root / "tmp"
    return sorted(os.path.relpath(os.path.join(dp, n), t) for dp, dn, fn in os.walk(t) for n in dn + fn)


def test_crash_pull(edge_registry, pull_base, ramdisk, tmp_path_factory):
    """``pull <registry>/fx/edge:1`` killed at every boundary and at random times (downloads and extraction run
    in worker processes; they must die with the CLI). After each kill: only repairable findings, repair; the
    images there before (one shares fx-edge's bottom layers) byte-identical; the repeated pull succeeds and the
    data-root's image/ files are those of an uninterrupted pull (pulllib.StoreFacts: cache-ids through the
    chainIDs, tar-split uncompressed), overlay2 has the same shape, tmp/ holds what it holds after an
    uninterrupted pull, fsck --deep is clean, the independent check too."""
    base, prefix = pull_base
    work = ramdisk / "pull"
    work.mkdir()
    before = StoreView.read(base)
    assert before.images.get(prefix.id) == prefix.chain_ids, "the prefix image is not in the pull base"
    base_snap = snapshot(base)
    groups = _image_groups(before)
    ref_name = "%s/%s" % (edge_registry.addr, PULL_REPO)
    args = ("pull", ref_name)

    ref = clone_root(base, work / "reference")
    t0 = time.monotonic()
    names, p = count_boundaries(ref, *args, logdir=work)
    duration = time.monotonic() - t0
    assert p.returncode == 0, "reference pull failed:\n" + show(p)
    assert names, "the reference pull passed no write boundary"
    assert p.stdout.count(": Already exists") == PULL_KEEP, "the pull did not find the layers there:\n" + show(p)
    ref_facts = StoreFacts.read(ref)
    assert not ref_facts.problems, ref_facts.problems
    ref_tmp = _tmp_listing(ref)
    edge = fixture_images(EDGE_OCI)[0]
    assert StoreView.read(ref).refs.get(ref_name) == edge.id, "the pull did not give fx-edge.oci-gzip's image"
    assert edge.chain_ids[:PULL_KEEP] == prefix.chain_ids

    def one(plan, idx) -> Outcome:
        kind, val = plan
        root = clone_root(base, work / ("k%03d" % idx))
        out = Outcome(_plan_text(kind, val), False, root)
        try:
            if kind == "at":
                k = run_killed(root, *args, crash_at=val)
                out.where = names[val - 1]
                if not k.killed:
                    out.problems.append("not killed at boundary %d (rc %s): the boundary count is not stable\n%s"
                                        % (val, k.returncode, k.stderr[-2000:]))
                    return out
            else:
                k = run_killed(root, *args, delay=val)
                if not k.killed:
                    return out
            out.killed = True
            pr = out.problems
            if k.stragglers:
                pr.append("processes of the killed pull still alive 3 s later: %s" % k.stragglers)
            if mounts_below(root):
                pr.append("mounts left after the kill: %s" % mounts_below(root))
            _fsck_and_repair(root, pr)
            _intact(base_snap, root, groups, pr)
            r = dy(root, *args)
            if not _ok(r, pr, "repeating the interrupted pull"):
                return out
            facts = StoreFacts.read(root)
            d = compare_image_trees(facts, ref_facts, limit=12)
            if d:
                pr.append("image/ after the repeated pull differs from an uninterrupted pull (\"docker\" = the "
                          "uninterrupted pull):\n  " + "\n  ".join(d))
            d = compare_overlay(facts, ref_facts)
            if d:
                pr.append("overlay2/ after the repeated pull differs from an uninterrupted pull:\n  " + "\n  ".join(d))
            if _tmp_listing(root) != ref_tmp:
                pr.append("tmp/ holds %s, after an uninterrupted pull %s" % (_tmp_listing(root), ref_tmp))
            _clean_end(root, "pull", pr)
            return out
        finally:
            if not out.problems:
                rmtree(root)

    plans = [("at", n) for n in range(1, len(names) + 1)] + _random_plans(24, 6, duration)
    _report("pull", len(names), " ".join(names), _parallel(one, plans), tmp_path_factory)
    rmtree(ref)


def test_total_kills():
    """The module as a whole kills dockyard at least 200 times (every boundary of every command + random)."""
    missing = [s.name for s in SCENARIOS if s.name not in KILLS]
    if missing:
        pytest.skip("crash scenarios that did not run (or did not finish) in this session: %s" % missing)
    total = sum(KILLS.values())
    print("kills per scenario: %s (run -d / stop / rm: %s); total %d%s" % (
        json.dumps(KILLS), json.dumps(KILL_DETAIL), total,
        "; did not run (skipped for a missing peer, or failed before killing): %s"
        % [n for n in ALL_SCENARIOS if n not in KILLS] if len(KILLS) < len(ALL_SCENARIOS) else ""))
    assert total >= MIN_TOTAL_KILLS, KILLS
