"""Concurrency stress: 8 workers hammer one data-root for a bounded time (issue acceptance, automated).

Eight worker threads each run dockyard CLI processes back to back (so up to 8 dockyard processes -- plus their
extraction workers, container monitors and runc -- at once) for ``DURATION`` seconds on ONE data-root and ONE
exec-root, picking operations from a seeded RNG:

- ``load -i`` of fx-edge, fx-shared, fx-tags, fx-dup (docker-save) and fx-shared.oci (OCI layout; the fixtures
  share layers with each other, so concurrent loads race to register the same chainIDs);
- ``rmi`` of a tag or an image ID (sometimes ``-f``), ``tag`` to a per-worker name, ``import`` of a rootfs
  tarball, ``image prune -f`` and (rarely) ``image prune -a -f``;
- ``run --rm --network none fx-edge:1 sh -c ...`` (foreground: the CLI is the monitor); it must print exactly
  what the script prints, exit 0, and leave no container;
- a short-lived container committed: ``create --network none fx-edge:1 sh -c ...``, ``start -a`` (prints the
  script's output, exits 0), ``commit <id> stress/commit:w<n>`` (prints the new image ID), ``rm <id>``
  (always, whatever the commit said);
- ``images -a`` (a reader that takes no lock, next to the writers).

Accepted failures are Docker's own refusals only, per command -- every non-empty stderr line of a failed command
must match one of that command's patterns in ``ACCEPTED`` exactly:

- rmi: ``Error: No such image: <name>`` (another worker removed it);
  ``Error: conflict: unable to delete <12 hex> (must be forced) - image is referenced in multiple repositories``;
  ``Error: conflict: unable to delete <12 hex> (cannot be forced) - image has dependent child images``;
  ``Error: conflict: unable to remove repository reference "<name>" (must force) - container <12 hex> is using
  its referenced image <12 hex>`` (the last tag of an image a container uses);
  ``Error: conflict: unable to delete <12 hex> (must be forced) - image is being used by stopped container
  <12 hex>`` and ``Error: conflict: unable to delete <12 hex> (cannot be forced) - image is being used by
  running container <12 hex>`` (rmi by ID of an image a container uses);
- tag: ``Error: No such image: <name>``;
- run, create: ``Error: No such image: fx-edge:1`` (an rmi removed fx-edge:1 first);
- commit: ``Error: No such image: sha256:<fx-edge's ID>`` -- and only when an ``rmi -f`` really deleted that
  image (its ``Deleted:`` line; Docker's ``rmi -f`` ignores stopped containers) while the container existed;
- load, import, image prune, start, rm, images: none.

``No such container`` is accepted for nothing: each container is only ever touched by the worker that created it.
Anything else (another error, a traceback, a hang > 120 s, a non-zero exit without an accepted line, a run or
start with other output, a container left behind by ``run --rm``) fails.

At the end: no container is left; nothing is mounted below the data-root (/proc/self/mountinfo), runc knows no
container (``runc --root <exec-root>/runtime list``), no bundle or process is left in the exec-root, no process
is left in the cgroup of a container the workers made; ``fsck --deep`` is clean, the independent structural check
finds nothing; every image's ID is one the fixtures define, an imported one (whose only layer is the tarball's
sha256) or a committed one (fx-edge's chain plus one layer); shared layers are stored once: the layerdb dirs are
exactly the distinct chainIDs the images use, each has its own overlay2 dir, and no overlay2 dir or l/ link is
orphaned; ``images -a`` lists exactly the images the store holds.
"""
from __future__ import annotations

import hashlib
import io
import os
import random
import re
import subprocess
import tarfile
import threading
import time
from collections import Counter

import pytest

from conftest import umount_below
from faultlib import (
    OCI,
    SAVE,
    StoreView,
    chain_of,
    container_ids_in,
    dy,
    fixture_images,
    fmt_findings,
    force_cleanup,
    fsck_report,
    runtime_leftovers,
    show,
    structural_problems,
)

WORKERS = 8
DURATION = float(os.environ.get("DOCKYARD_STRESS_SECONDS", "30"))
SEED = int(os.environ.get("DOCKYARD_STRESS_SEED", "20261128"))

EDGE = SAVE / "fx-edge.docker.tar"
INPUTS = [EDGE, SAVE / "fx-shared.docker.tar", SAVE / "fx-tags.docker.tar",
          SAVE / "fx-dup.docker.tar", OCI / "fx-shared.oci"]
EDGE_REF = "fx-edge:1"

_H12 = "[0-9a-f]{12}"
NO_SUCH_IMAGE = re.compile(r"^Error: No such image: \S+$")
NO_SUCH_EDGE = re.compile(r"^Error: No such image: fx-edge:1$")
MULTI_REPO = re.compile(r"^Error: conflict: unable to delete %s \(must be forced\) - "
                        r"image is referenced in multiple repositories$" % _H12)
CHILDREN = re.compile(r"^Error: conflict: unable to delete %s \(cannot be forced\) - "
                      r"image has dependent child images$" % _H12)
LAST_TAG_IN_USE = re.compile(r'^Error: conflict: unable to remove repository reference "[^"]+" \(must force\) - '
                             r"container %s is using its referenced image %s$" % (_H12, _H12))
USED_STOPPED = re.compile(r"^Error: conflict: unable to delete %s \(must be forced\) - "
                          r"image is being used by stopped container %s$" % (_H12, _H12))
USED_RUNNING = re.compile(r"^Error: conflict: unable to delete %s \(cannot be forced\) - "
                          r"image is being used by running container %s$" % (_H12, _H12))
#: per command: the refusals accepted (anything else fails); commit's "No such image" is checked separately
ACCEPTED: dict[str, list[re.Pattern]] = {
    "rmi": [NO_SUCH_IMAGE, MULTI_REPO, CHILDREN, LAST_TAG_IN_USE, USED_STOPPED, USED_RUNNING],
    "tag": [NO_SUCH_IMAGE],
    "run": [NO_SUCH_EDGE],
    "create": [NO_SUCH_EDGE],
}
COMMIT_NO_IMAGE = re.compile(r"^Error: No such image: (sha256:[0-9a-f]{64})$")
DELETED = re.compile(r"^Deleted: (sha256:[0-9a-f]{64})$", re.M)


def _rootfs(path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in (("etc/stress", b"stress\n"), ("bin/tool", os.urandom(2048))):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o755, 1_700_000_000
            t.addfile(ti, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()


@pytest.fixture
def stress_root(tmp_path):
    d = tmp_path / "fs"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g,mode=0755", "tmpfs", str(d)], check=True)
    yield d / "root"
    umount_below(d)


def test_concurrency_stress(stress_root, tmp_path):
    root = stress_root
    ex = stress_root.parent / "exec"      # one exec-root for the data-root, as one dockerd would have
    rootfs = tmp_path / "rootfs.tar"
    rootfs_diff = _rootfs(rootfs)
    known = {s.id for x in INPUTS for s in fixture_images(x)}
    tags = sorted({t for x in INPUTS[:4] for s in fixture_images(x) for t in s.repo_tags})
    edge = fixture_images(EDGE)[0]

    lock = threading.Lock()
    stats: Counter = Counter()
    refusals: Counter = Counter()
    failures: list[str] = []
    seen_ids: set[str] = set(known)
    imported: set[str] = set()
    committed: set[str] = set()
    cids: set[str] = set()
    force_deleted: set[str] = set()          # image IDs an `rmi -f` printed as Deleted
    commit_no_image: list[tuple[str, str]] = []  # (image ID a commit said does not exist, the failed commit)
    deadline = time.monotonic() + DURATION

    def cli(*args, timeout=120) -> subprocess.CompletedProcess:
        return dy(root, "--exec-root", ex, *args, timeout=timeout)

    def judge(w: int, kind: str, p: subprocess.CompletedProcess, *, expect_out: str | None = None) -> bool:
        """True when the command succeeded (with ``expect_out`` if given); a refusal in ACCEPTED[kind] is
        counted; anything else is a failure."""
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        ok_patterns = ACCEPTED.get(kind, [])
        with lock:
            stats["cmd:" + kind] += 1
            if p.returncode == 0 and "Traceback" not in p.stderr:
                if expect_out is not None and (p.stdout != expect_out or p.stderr):
                    failures.append("worker %d: %s printed something else than %r\n%s" % (w, kind, expect_out,
                                                                                          show(p)))
                    return False
                return True
            if p.returncode != 0 and lines and all(any(a.match(ln) for a in ok_patterns) for ln in lines):
                for ln in lines:
                    refusals["%s: %s" % (kind, re.sub(r"[0-9a-f]{12,}|\S+:\S+$", "<x>", ln))] += 1
                return False
            failures.append("worker %d: %s" % (w, show(p)))
            return False

    def op(rng: random.Random, w: int, n: int) -> str:
        r = rng.random()
        with lock:
            names = tags + sorted(seen_ids)
        if r < 0.22:
            p = cli("load", "-q", "-i", rng.choice(INPUTS))
            judge(w, "load", p)
            return "load"
        if r < 0.38:
            force = rng.random() < 0.3
            p = cli("rmi", *(("-f",) if force else ()), rng.choice(names))
            judge(w, "rmi", p)
            if force:
                with lock:
                    force_deleted.update(DELETED.findall(p.stdout))
            return "rmi"
        if r < 0.48:
            p = cli("tag", rng.choice(names), "stress/w%d:%d" % (w, n % 5))
            judge(w, "tag", p)
            return "tag"
        if r < 0.56:
            p = cli("import", rootfs, "stress/imported:w%d" % w)
            if judge(w, "import", p):
                with lock:
                    imported.add(p.stdout.strip())
                    seen_ids.add(p.stdout.strip())
            return "import"
        if r < 0.63:
            prune_all = rng.random() < 0.15
            judge(w, "prune", cli("image", "prune", *(("-a",) if prune_all else ()), "-f"))
            return "prune -a" if prune_all else "prune"
        if r < 0.78:
            word = "run-w%d-%d" % (w, n)
            p = cli("run", "--rm", "--network", "none", EDGE_REF, "sh", "-c", "echo %s; cat /wh/keep" % word)
            judge(w, "run", p, expect_out="%s\nkeep\n" % word)
            return "run --rm"
        if r < 0.92:
            word = "commit-w%d-%d" % (w, n)
            p = cli("create", "--network", "none", EDGE_REF, "sh", "-c", "echo %s | tee /stress-file" % word)
            if not judge(w, "create", p):
                return "commit"
            cid = p.stdout.strip()
            with lock:
                cids.add(cid)
            try:
                judge(w, "start", cli("start", "-a", cid), expect_out=word + "\n")
                p = cli("commit", cid, "stress/commit:w%d" % w)
                m = COMMIT_NO_IMAGE.match(p.stderr.strip())
                if p.returncode == 1 and m and "Traceback" not in p.stderr:
                    with lock:
                        stats["cmd:commit"] += 1
                        refusals["commit: Error: No such image: <x>"] += 1
                        commit_no_image.append((m.group(1), show(p)))   # judged at the end
                elif judge(w, "commit", p):
                    new = p.stdout.strip()
                    if not re.match(r"^sha256:[0-9a-f]{64}$", new):
                        with lock:
                            failures.append("worker %d: commit printed %r" % (w, p.stdout))
                    else:
                        with lock:
                            committed.add(new)
                            seen_ids.add(new)
            finally:
                judge(w, "rm", cli("rm", cid), expect_out=cid + "\n")
            return "commit"
        judge(w, "images", cli("images", "-a", "--no-trunc", "-q"))
        return "images"

    def worker(w: int) -> None:
        rng = random.Random(SEED * 100 + w)
        n = 0
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                kind = op(rng, w, n)
            except subprocess.TimeoutExpired as e:
                with lock:
                    failures.append("worker %d: %s hung for more than 120 s" % (w, " ".join(map(str, e.cmd[3:]))))
                return
            n += 1
            with lock:
                stats[kind] += 1
                stats["seconds:" + kind] += time.monotonic() - t0

    threads = [threading.Thread(target=worker, args=(w,), name="stress-%d" % w) for w in range(WORKERS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with lock:
            for image_id, shown in commit_no_image:
                if image_id not in force_deleted:
                    failures.append("commit said its container's image does not exist, but no `rmi -f` deleted "
                                    "%s:\n%s" % (image_id, shown))
        ops = {k: v for k, v in sorted(stats.items()) if not k.startswith(("seconds:", "cmd:"))}
        total = sum(ops.values())
        summary = "ops: %s; commands: %s; refusals: %s; mean seconds: %s" % (
            ops, {k[4:]: v for k, v in sorted(stats.items()) if k.startswith("cmd:")}, dict(refusals),
            {k: round(stats["seconds:" + k] / v, 2) for k, v in ops.items()})
        print(summary)
        end = _end_state(root, ex, cids, seen_ids, imported, committed, rootfs_diff, chain_of(list(edge.diff_ids)))
        assert not failures, "%d of %d operations failed with something other than Docker's refusals:\n%s\n%s%s" % (
            len(failures), total, "\n\n".join(failures[:10]), summary,
            "\nand the end state: " + ("\n  ".join(["", *end]) if end else "fine"))
        for kind in ("load", "rmi", "tag", "import", "prune", "run --rm", "commit"):
            assert stats[kind], "no %s ran: %s" % (kind, summary)
        assert committed, "no commit succeeded: %s" % summary
        assert not end, "the end state after the stress:\n  " + "\n  ".join(end)
    finally:
        force_cleanup(root, ex, cids | container_ids_in(root))


def _end_state(root, ex, cids, seen_ids, imported, committed, rootfs_diff, edge_chain) -> list[str]:
    """Everything wrong with the data-root once the workers are done (empty: fine)."""
    out = []
    left = container_ids_in(root)
    if left:
        out.append("containers left (run --rm and the commit sequence remove theirs): %s" % sorted(left))
    out += runtime_leftovers(root, ex, cids)
    rc, rep = fsck_report(root, "--deep")
    if rc != 0:
        out.append("fsck --deep is not clean:\n" + fmt_findings(rep))
    sp = structural_problems(root, strict=True)
    if sp:
        out.append("data-root inconsistent (independent check):\n  " + "\n  ".join(sp))
    v = StoreView.read(root)
    for i, chains in v.images.items():
        if i not in seen_ids:
            out.append("image %s is neither a fixture image nor one of the imports or commits" % i)
        if i in imported and chains != [rootfs_diff]:
            out.append("imported image %s has chain %s" % (i, chains))
        if i in committed and chains[:-1] != edge_chain:
            out.append("committed image %s has chain %s" % (i, chains))
    # shared layers stored once
    in_use = {c for chains in v.images.values() for c in chains}
    if set(v.layers) != in_use:
        out.append("layerdb holds %s beyond the chains in use, lacks %s" % (
            sorted(set(v.layers) - in_use), sorted(in_use - set(v.layers))))
    caches = [v.layers[c]["cache_id"] for c in v.layers]
    if len(set(caches)) != len(caches):
        out.append("two layers share an overlay2 dir")
    ovl = sorted(n for n in os.listdir(root / "overlay2") if n != "l") if (root / "overlay2").is_dir() else []
    if sorted(caches) != ovl:
        out.append("overlay2 dirs %s, layers use %s" % (ovl, sorted(caches)))
    links = os.listdir(root / "overlay2" / "l") if (root / "overlay2" / "l").is_dir() else []
    if len(links) != len(ovl):
        out.append("%d l/ links for %d overlay2 dirs" % (len(links), len(ovl)))
    # the listing agrees with the store
    p = dy(root, "images", "-a", "--no-trunc", "-q")
    if p.returncode != 0 or set(p.stdout.split()) != set(v.images):
        out.append("`images -a -q` does not list the images the store holds %s:\n%s" % (sorted(v.images), show(p)))
    return out
