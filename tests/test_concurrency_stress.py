"""Concurrency stress: 8 workers hammer one data-root for a bounded time (issue acceptance, automated).

Eight worker threads each run dockyard CLI processes back to back (so up to 8 dockyard processes -- plus their
extraction workers -- at once) for ``DURATION`` seconds on ONE data-root, picking operations from a seeded RNG:

- ``load -i`` of fx-edge, fx-shared, fx-tags, fx-dup (docker-save) and fx-shared.oci (OCI layout; the fixtures
  share layers with each other, so concurrent loads race to register the same chainIDs);
- ``rmi`` of a tag or an image ID (sometimes ``-f``), ``tag`` to a per-worker name, ``import`` of a rootfs
  tarball, ``image prune -f``;
- ``images -a`` (a reader that takes no lock, next to the writers).

Accepted failures are Docker's own refusals only -- every non-empty stderr line of a failed command must match
one of ``ACCEPTED`` exactly:

- ``Error: No such image: <name>`` (rmi/tag of something another worker removed);
- ``Error: conflict: unable to delete <12 hex> (must be forced) - image is referenced in multiple
  repositories`` and ``Error: conflict: unable to delete <12 hex> (cannot be forced) - image has dependent child
  images`` (rmi of an ID with several tags / with children).

Anything else (another error, a traceback, a hang > 120 s, a non-zero exit without an accepted line) fails.
At the end: ``fsck --deep`` is clean, the independent structural check finds nothing, every image's ID is one
the fixtures define (or an imported one, whose only layer is the tarball's sha256), and shared layers are stored
once: the layerdb dirs are exactly the distinct chainIDs the images use, each has its own overlay2 dir, and no
overlay2 dir or l/ link is orphaned.

TODO (container commands, for when the stress test grows them; none is exercised here yet):
  - TODO-run-rm: add ``run --rm <image> true`` to the op mix; accepted refusals: ``No such image``; afterwards no
    container, no ``layerdb/mounts`` entry, no mount left below the root.
  - TODO-commit: add ``create`` + ``commit <container> stress/commit:<n>`` (+ ``rm``); accepted refusals: ``No such
    container``; the committed image's parent metadata and layer chain must survive concurrent ``rmi``/``prune``
    of its base (``conflict ... image has dependent child images`` / ``being used by stopped container``).
  - TODO-conflicts: once containers run concurrently, accept ``conflict: unable to delete <id> (cannot be forced)
    - image is being used by running container <id>`` and ``(must be forced) - image is being used by stopped
    container <id>`` and check that ``image prune -a`` never removes an image a container uses.
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
    dy,
    fixture_images,
    fmt_findings,
    fsck_report,
    show,
    structural_problems,
)

WORKERS = 8
DURATION = float(os.environ.get("DOCKYARD_STRESS_SECONDS", "30"))
SEED = int(os.environ.get("DOCKYARD_STRESS_SEED", "20261128"))

INPUTS = [SAVE / "fx-edge.docker.tar", SAVE / "fx-shared.docker.tar", SAVE / "fx-tags.docker.tar",
          SAVE / "fx-dup.docker.tar", OCI / "fx-shared.oci"]

ACCEPTED = [
    re.compile(r"^Error: No such image: \S+$"),
    re.compile(r"^Error: conflict: unable to delete [0-9a-f]{12} \(must be forced\) - "
               r"image is referenced in multiple repositories$"),
    re.compile(r"^Error: conflict: unable to delete [0-9a-f]{12} \(cannot be forced\) - "
               r"image has dependent child images$"),
]


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
    rootfs = tmp_path / "rootfs.tar"
    rootfs_diff = _rootfs(rootfs)
    known = {s.id for x in INPUTS for s in fixture_images(x)}
    tags = sorted({t for x in INPUTS[:4] for s in fixture_images(x) for t in s.repo_tags})

    lock = threading.Lock()
    stats: Counter = Counter()
    refusals: Counter = Counter()
    failures: list[str] = []
    seen_ids: set[str] = set(known)
    deadline = time.monotonic() + DURATION

    def op(rng: random.Random, w: int, n: int) -> tuple[str, tuple]:
        r = rng.random()
        with lock:
            names = tags + sorted(seen_ids)
        if r < 0.30:
            return "load", ("load", "-q", "-i", rng.choice(INPUTS))
        if r < 0.50:
            target = rng.choice(names)
            return "rmi", ("rmi", *(("-f",) if rng.random() < 0.3 else ()), target)
        if r < 0.65:
            return "tag", ("tag", rng.choice(names), "stress/w%d:%d" % (w, n % 5))
        if r < 0.77:
            return "import", ("import", rootfs, "stress/imported:w%d" % w)
        if r < 0.87:
            return "prune", ("image", "prune", "-f")
        return "images", ("images", "-a", "--no-trunc", "-q")

    def worker(w: int) -> None:
        rng = random.Random(SEED * 100 + w)
        n = 0
        while time.monotonic() < deadline:
            kind, args = op(rng, w, n)
            n += 1
            t0 = time.monotonic()
            try:
                p = dy(root, *args, timeout=120)
            except subprocess.TimeoutExpired:
                with lock:
                    failures.append("worker %d: %s hung for more than 120 s" % (w, " ".join(map(str, args))))
                return
            dt = time.monotonic() - t0
            lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
            bad = [ln for ln in lines if not any(a.match(ln) for a in ACCEPTED)]
            with lock:
                stats[kind] += 1
                stats["seconds:" + kind] += dt
                if kind == "import" and p.returncode == 0:
                    seen_ids.add(p.stdout.strip())
                if p.returncode == 0 and not bad:
                    continue
                if p.returncode != 0 and lines and not bad:
                    for ln in lines:
                        refusals[re.sub(r"[0-9a-f]{12,}|\S+:\S+$", "<x>", ln)] += 1
                    continue
                failures.append("worker %d: %s" % (w, show(p)))

    threads = [threading.Thread(target=worker, args=(w,), name="stress-%d" % w) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(v for k, v in stats.items() if not k.startswith("seconds:"))
    summary = "ops: %s; refusals: %s" % (
        {k: v for k, v in sorted(stats.items()) if not k.startswith("seconds:")}, dict(refusals))
    print(summary)
    assert not failures, "%d of %d operations failed with something other than Docker's refusals:\n%s\n%s" % (
        len(failures), total, "\n\n".join(failures[:10]), summary)
    assert stats["load"] and stats["rmi"] and stats["tag"] and stats["import"] and stats["prune"], summary

    # ---------------------------------------------------------------- the end state
    rc, rep = fsck_report(root, "--deep")
    assert rc == 0, "fsck --deep after the stress:\n" + fmt_findings(rep)
    sp = structural_problems(root, strict=True)
    assert not sp, "data-root inconsistent after the stress (independent check):\n  " + "\n  ".join(sp)
    v = StoreView.read(root)
    for i, chains in v.images.items():
        assert i in seen_ids, "image %s is neither a fixture image nor one of the imports" % i
        if i not in known:
            assert chains == [rootfs_diff], "imported image %s has chain %s" % (i, chains)
    # shared layers stored once
    in_use = {c for chains in v.images.values() for c in chains}
    assert set(v.layers) == in_use, "layerdb holds %s beyond the chains in use, lacks %s" % (
        sorted(set(v.layers) - in_use), sorted(in_use - set(v.layers)))
    caches = [v.layers[c]["cache_id"] for c in v.layers]
    assert len(set(caches)) == len(caches), "two layers share an overlay2 dir"
    ovl = sorted(n for n in os.listdir(root / "overlay2") if n != "l") if (root / "overlay2").is_dir() else []
    assert sorted(caches) == ovl, "overlay2 dirs %s, layers use %s" % (ovl, sorted(caches))
    links = os.listdir(root / "overlay2" / "l") if (root / "overlay2" / "l").is_dir() else []
    assert len(links) == len(ovl), "%d l/ links for %d overlay2 dirs" % (len(links), len(ovl))
    # the listing agrees with the store
    p = dy(root, "images", "-a", "--no-trunc", "-q")
    assert p.returncode == 0, show(p)
    assert set(p.stdout.split()) == set(v.images), (p.stdout, sorted(v.images))
