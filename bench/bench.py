#!/usr/bin/env python3
"""dockyard vs docker, side by side on the same input: interleaved, cold, as ratios.

    python3 bench/bench.py [-n 5] [CASE ...]   # cases: load save pull push run create (default: all)

Needs root, the benchmark image set of shared/bench/make-bench-images.sh in $BENCH (default
/tmp/bench; ``--build`` makes it), and a private dockerd on unix:///tmp/perf.sock (started with
shared/bench/perfd.sh when it is not running). Each round runs every selected command once, in
an order rotated by the round number; before each timed run the page cache is dropped
(``sync; echo 3 > drop_caches``) and the input re-read (warm input, cold inodes), as the
baseline in shared/bench/BASELINE.md was measured. For dockyard the peak RSS of its whole
process tree (workers included) is sampled every 20 ms. Timings never go into tests.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED_BENCH = os.path.normpath(os.path.join(REPO, "..", "shared", "bench"))
B = os.environ.get("BENCH", "/tmp/bench")
IMG = "dockyard-bench/distro:1"
SOCK = "unix:///tmp/perf.sock"
DOCKER = f"DOCKER_HOST={SOCK} docker"
DY_ROOT = "/tmp/dy-bench"
DY = f"{shlex.quote(sys.executable)} -m dockyard --data-root {DY_ROOT}"
TAR = f"{B}/distro.docker.tar"

RMI = f"{DOCKER} rmi -f {IMG} >/dev/null 2>&1; {DOCKER} image prune -af >/dev/null 2>&1; true"
DY_WIPE = f"rm -rf {DY_ROOT}"
ENSURE_DOCKER_IMG = f"{DOCKER} image inspect {IMG} >/dev/null 2>&1 || {DOCKER} load -q -i {TAR} >/dev/null"
ENSURE_DY_IMG = f"{DY} inspect {IMG} >/dev/null 2>&1 || {DY} load -q -i {TAR}"
WARM_TAR = f"cat {TAR} >/dev/null"

REG = os.environ.get("BENCH_REGISTRY", "127.0.0.1:5000")
REGIMG = f"{REG}/dockyard-bench/distro:1"
PUSHIMG = f"{REG}/dockyard-bench/pushed:1"
DOCKER_RMI_REG = f"{DOCKER} rmi -f {REGIMG} >/dev/null 2>&1; {DOCKER} image prune -af >/dev/null 2>&1; true"
WARM_BLOBS = f"cat {B}/registry/data/docker/registry/v2/blobs/sha256/*/*/data >/dev/null"
# push: the registry must not have the pushed repository's layers yet (no mount either): a fresh
# repository name per round, and the blobs of earlier rounds deleted from the registry's store
# would need a restart; instead each round pushes to a new repository, which docker and dockyard
# both fill by cross-repository mounts when the digests are known. To measure real uploads, the
# push cases below first forget the distribution metadata, so both must compress and upload.
DOCKER_FORGET = "rm -rf /tmp/perfroot/image/overlay2/distribution"
DY_FORGET = f"rm -rf {DY_ROOT}/image/overlay2/distribution"

# name -> (peer, dict(setup, prep, cmd, post, rewarm, cold))
CASES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "load": [
        ("docker", dict(prep=RMI, cmd=f"{DOCKER} load -q -i {TAR} >/dev/null", post=RMI, rewarm=WARM_TAR)),
        ("dockyard", dict(prep=DY_WIPE, cmd=f"{DY} load -q -i {TAR}", post=DY_WIPE, rewarm=WARM_TAR)),
    ],
    "run": [
        ("docker", dict(prep=ENSURE_DOCKER_IMG, cold=False,
                        cmd=f"{DOCKER} run --rm --network none {IMG} true")),
        ("dockyard", dict(prep=ENSURE_DY_IMG, cold=False, cmd=f"{DY} run --rm --network none {IMG} true")),
    ],
    "create": [
        ("docker", dict(prep=ENSURE_DOCKER_IMG, cold=False,
                        cmd=f"{DOCKER} create --network none {IMG} true > /tmp/bench-cid",
                        post=f"{DOCKER} rm -f $(cat /tmp/bench-cid) >/dev/null")),
        ("dockyard", dict(prep=ENSURE_DY_IMG, cold=False,
                          cmd=f"{DY} create --network none {IMG} true > /tmp/bench-cid",
                          post=f"{DY} rm -f $(cat /tmp/bench-cid) >/dev/null")),
    ],
    "pull": [
        ("docker", dict(prep=DOCKER_RMI_REG, cmd=f"{DOCKER} pull -q {REGIMG} >/dev/null", post=DOCKER_RMI_REG,
                        rewarm=WARM_BLOBS)),
        ("dockyard", dict(prep=DY_WIPE, cmd=f"{DY} pull -q {REGIMG} >/dev/null", post=DY_WIPE, rewarm=WARM_BLOBS)),
    ],
    "push": [
        ("docker", dict(prep=f"{ENSURE_DOCKER_IMG}; {DOCKER_FORGET}; {DOCKER} tag {IMG} {REG}/dockyard-bench/d$RANDOM$RANDOM:1"
                             f" && {DOCKER} images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' | grep '/dockyard-bench/d' > /tmp/bench-push-ref",
                        cmd=f"{DOCKER} push $(cat /tmp/bench-push-ref) >/dev/null",
                        post=f"{DOCKER} rmi $(cat /tmp/bench-push-ref) >/dev/null")),
        ("dockyard", dict(prep=f"{ENSURE_DY_IMG}; {DY_FORGET}; echo {REG}/dockyard-bench/y$RANDOM$RANDOM:1 > /tmp/bench-push-ref"
                               f" && {DY} tag {IMG} $(cat /tmp/bench-push-ref)",
                          cmd=f"{DY} push -q $(cat /tmp/bench-push-ref) >/dev/null",
                          post=f"{DY} rmi $(cat /tmp/bench-push-ref) >/dev/null")),
    ],
    "save": [
        ("docker", dict(prep=f"{ENSURE_DOCKER_IMG}; rm -f /tmp/bench-save.tar",
                        cmd=f"{DOCKER} save -o /tmp/bench-save.tar {IMG}", post="rm -f /tmp/bench-save.tar")),
        ("dockyard", dict(prep=f"{ENSURE_DY_IMG}; rm -f /tmp/bench-save.tar",
                          cmd=f"{DY} save -q -o /tmp/bench-save.tar {IMG}", post="rm -f /tmp/bench-save.tar")),
    ],
}


def sh(cmd: str) -> None:
    subprocess.run(["bash", "-c", cmd], check=True)


def drop_caches() -> None:
    sh("sync; echo 3 > /proc/sys/vm/drop_caches")


def tree_rss_kb(root_pid: int) -> int:
    """Sum of VmRSS over root_pid and its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid = int(fields[1])
            with open(f"/proc/{d}/statm") as f:
                pages = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
        rss[int(d)] = pages * os.sysconf("SC_PAGE_SIZE") // 1024
    total, stack = 0, [root_pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total


def timed(cmd: str) -> tuple[float, int]:
    """Wall time and peak tree RSS (KB) of one command.

    A waiter thread takes the end time the moment the command is reaped, so the 20 ms RSS
    sampling does not round short commands (create takes tens of milliseconds) up to its period;
    commands that end between two samples get their peak from wait4's ru_maxrss."""
    sys.setswitchinterval(0.0005)  # the waiter gets the GIL back quickly from the sampler
    t0 = time.monotonic()
    p = subprocess.Popen(["bash", "-c", cmd])
    end: list[Any] = []

    def waiter() -> None:
        _, status, usage = os.wait4(p.pid, 0)
        end.append((time.monotonic(), status, usage.ru_maxrss))

    th = threading.Thread(target=waiter)
    th.start()
    peak = 0
    while th.is_alive():
        peak = max(peak, tree_rss_kb(p.pid))
        th.join(0.02)
    t1, status, maxrss = end[0]
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {cmd}")
    return t1 - t0, max(peak, maxrss)


def compile_bytecode() -> None:
    """Commands start faster from compiled bytecode (pip does this on install; PYTHONDONTWRITEBYTECODE
    environments otherwise recompile every module on every run)."""
    sh(f"{shlex.quote(sys.executable)} -m compileall -q {REPO}/src/dockyard")


def ensure_inputs(build: bool) -> None:
    if not os.path.exists(TAR):
        if not build:
            raise SystemExit(f"{TAR} is missing: run with --build (or {SHARED_BENCH}/make-bench-images.sh)")
        sh(f"{SHARED_BENCH}/perfd.sh start && {SHARED_BENCH}/make-bench-images.sh")
    if subprocess.run(["bash", "-c", f"{DOCKER} version >/dev/null 2>&1"]).returncode != 0:
        sh(f"{SHARED_BENCH}/perfd.sh start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--build", action="store_true", help="build the benchmark images when missing")
    ap.add_argument("cases", nargs="*", default=list(CASES))
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (drop_caches, dockerd)")
    ensure_inputs(a.build)
    compile_bytecode()
    runs = [(case, peer, spec) for case in a.cases for peer, spec in CASES[case]]
    for _, _, spec in runs:
        if spec.get("setup"):
            sh(spec["setup"])
    results: dict[tuple[str, str], list[float]] = {}
    rss: dict[tuple[str, str], int] = {}
    for r in range(a.n):
        order = runs[r % len(runs):] + runs[: r % len(runs)]
        for case, peer, spec in order:
            if spec.get("prep"):
                sh(spec["prep"])
            if spec.get("cold", True):
                drop_caches()
            if spec.get("rewarm"):
                sh(spec["rewarm"])
            dt, peak = timed(spec["cmd"])
            results.setdefault((case, peer), []).append(dt)
            rss[(case, peer)] = max(rss.get((case, peer), 0), peak)
            if spec.get("post"):
                sh(spec["post"])
            print(f"round {r + 1}: {case:6} {peer:9} {dt:7.3f} s  peak tree RSS {peak / 1024:6.1f} MB", flush=True)
    print()
    print(f"{'case':8}{'docker s (median, min-max)':30}{'dockyard s (median, min-max)':32}{'ratio':>7}  dockyard peak RSS")
    for case in a.cases:
        d = results[(case, "docker")]
        y = results[(case, "dockyard")]
        ratio = statistics.median(y) / statistics.median(d)
        print(f"{case:8}{statistics.median(d):7.3f} ({min(d):.3f}-{max(d):.3f}){'':8}"
              f"{statistics.median(y):7.3f} ({min(y):.3f}-{max(y):.3f}){'':10}{ratio:7.2f}  "
              f"{rss[(case, 'dockyard')] / 1024:.0f} MB")


if __name__ == "__main__":
    main()
