#!/usr/bin/env python3
"""Where the time of ``dockyard create`` goes, next to ``docker create``, as a staircase of floors.

    python3 bench/create_floor.py [-n 21] [--python PY]

Each row starts a fresh process and adds one thing to the row above it:

1. the interpreter, started as the ``dockyard`` command would start it (with ``site``);
2. plus the standard-library modules any create needs (json, hashlib, fcntl for the lock,
   ctypes for mount(2), secrets for the random IDs), and nothing else;
3. plus dockyard's own modules on the create path (the store and the container lifecycle);
4. plus the create itself, called through the library (lock, image lookup, init layer with its
   overlay mount and umount, the read-write layer, the records, fsyncs), with no CLI;
5. the real ``dockyard create`` command (click front end included).

Rows are run interleaved, round by round, on the benchmark image of bench.py
(``dockyard-bench/distro:1`` in /tmp/dy-bench and in the perf dockerd); containers made by a row
are removed after it, untimed. Each row is exec'd directly (no shell) and timed from spawn to
reap. ``--python`` picks the interpreter, e.g. that of a virtual environment dockyard is
installed in (as pipx installs it), to leave out whatever the shared interpreter's site-packages
import at start-up. Benchmarks are never part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

DY_ROOT = "/tmp/dy-bench"
IMG = "dockyard-bench/distro:1"
DOCKER_ENV = {**os.environ, "DOCKER_HOST": "unix:///tmp/perf.sock"}

STDLIB = "import json, hashlib, fcntl, ctypes, secrets"
LIBRARY = "import dockyard.store, dockyard.containers.lifecycle"
LIBRARY_CREATE = f"""
import os
os.umask(0o022)
from dockyard.engine.stores import open_store
from dockyard.containers.lifecycle import Containers, CreateOptions
mgr = Containers(open_store({DY_ROOT!r}), exec_root=None, runtime=None)
print(mgr.create({IMG!r}, CreateOptions(cmd=["true"], network="none", image_name={IMG!r})))
"""
CLI = "import sys; from dockyard.cli.main import main; sys.exit(main())"  # what the console script runs


def rows(py: str) -> list[tuple[str, list[str], dict[str, str] | None, bool]]:
    """(label, argv, env, makes a container)"""
    return [
        ("docker create", ["docker", "create", "--network", "none", IMG, "true"], DOCKER_ENV, True),
        ("1 interpreter (python -c pass)", [py, "-c", "pass"], None, False),
        ("2 + stdlib modules create needs", [py, "-c", STDLIB], None, False),
        ("3 + dockyard store and lifecycle", [py, "-c", LIBRARY], None, False),
        ("4 + the create, via the library", [py, "-c", LIBRARY_CREATE], None, True),
        (
            "5 dockyard create (the CLI)",
            [py, "-c", CLI, "--data-root", DY_ROOT, "create", "--network", "none", IMG, "true"],
            None,
            True,
        ),
    ]


def remove(label: str, cid: str, py: str) -> None:
    if label.startswith("docker"):
        subprocess.run(["docker", "rm", "-f", cid], env=DOCKER_ENV, stdout=subprocess.DEVNULL, check=True)
    else:
        subprocess.run(
            [py, "-c", CLI, "--data-root", DY_ROOT, "rm", "-f", cid], stdout=subprocess.DEVNULL, check=True
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=21, help="rounds (default 21)")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs dockyard")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (overlay mounts, the perf dockerd)")
    py = a.python
    pkg = subprocess.run(
        [py, "-c", "import dockyard, os; print(os.path.dirname(dockyard.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run(
        [py, "-m", "compileall", "-q", pkg], check=True, stdout=subprocess.DEVNULL
    )  # as pip install does
    for argv, env in (
        ([py, "-c", CLI, "--data-root", DY_ROOT, "inspect", IMG], None),
        (["docker", "image", "inspect", IMG], DOCKER_ENV),
    ):
        if subprocess.run(argv, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            raise SystemExit(f"{IMG} is missing: load it first (python3 bench/bench.py -n 1 create does)")
    table = rows(py)
    times: dict[str, list[float]] = {label: [] for label, *_ in table}
    for r in range(a.n):
        for label, argv, env, makes in table[r % len(table) :] + table[: r % len(table)]:
            t0 = time.perf_counter()
            p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True)
            dt = time.perf_counter() - t0
            if p.returncode != 0:
                raise SystemExit(f"{label} failed ({p.returncode})")
            times[label].append(dt)
            if makes:
                remove(label, p.stdout.strip(), py)
    docker = statistics.median(times["docker create"])
    print(f"interpreter: {py}  rounds: {a.n}")
    print(f"{'':36}{'median s':>10}{'min s':>9}{'x docker create':>17}")
    for label, *_ in table:
        t = times[label]
        print(f"{label:36}{statistics.median(t):10.4f}{min(t):9.4f}{statistics.median(t) / docker:17.2f}")


if __name__ == "__main__":
    main()
