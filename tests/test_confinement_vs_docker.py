"""Confinement, issue 11 acceptance 2 and 6 and issue 17 acceptance 3: dockyard confines a container exactly as a
real dockerd 20.10 does (one private daemon, on its own data-root, for the module).

For the defaults and for ``--cap-drop ALL``, ``--cap-add SYS_ADMIN``, ``--security-opt seccomp=unconfined``,
``--read-only``, ``--privileged`` and a set of limits (memory, swap, cpus, shares, pids, ulimit, shm size, tmpfs,
devices, ``--init``, no-new-privileges), with ``--network none`` on both sides:

- inside the container: ``/proc/self/status`` (CapInh, CapPrm, CapEff, CapBnd, CapAmb, NoNewPrivs, Seccomp),
  ``/proc/mounts`` (the overlay root's layer paths aside), ``/dev`` (names, types, modes, owners, device numbers,
  symlink targets) and the errno of syscalls Docker's profile blocks (keyctl, add_key, unshare, clone3), from a
  small static C helper built here with gcc;
- the OCI spec each one handed to runc (dockerd's from its containerd bundle, dockyard's from its exec-root):
  capabilities, rlimits, noNewPrivileges, seccomp, resources, devices, sysctls, masked/read-only paths, mounts;
- ``hostconfig.json`` of ``create`` with the same flags, field for field.

Then a container made by dockerd with ``--cap-drop ALL --security-opt no-new-privileges --pids-limit 20 --memory
64m`` shows the same status lines and cgroup limits under ``dockyard start -a`` as under ``docker start -a`` (17.3),
and ``--memory 64m --pids-limit 50`` are in the cgroup files and stop a fork bomb at the limit (11.6).
"""
from __future__ import annotations

import json
import re
import subprocess
import time
import types
from pathlib import Path
from typing import Any

import pytest

import containerlib as cl
import peers

pytestmark = [pytest.mark.peers, pytest.mark.timeout(900)]

PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
static void show(const char *what, long r) { printf("%s %s %d\n", what, r < 0 ? "fail" : "ok", r < 0 ? errno : 0); }
int main(void) {
    errno = 0; show("keyctl", syscall(SYS_keyctl, 0L, -1L, 0L));
    errno = 0; show("add_key", syscall(SYS_add_key, "user", "dockyard", "x", 1L, -2L));
    errno = 0; show("unshare_ns", syscall(SYS_unshare, (long)CLONE_NEWNS));
    errno = 0; show("clone3", syscall(435L, 0L, 0L));
    errno = 0; show("unshare_user", syscall(SYS_unshare, (long)CLONE_NEWUSER));
    return 0;
}
"""

SCRIPT = r"""
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status
echo '--- mounts'
sed -E 's/lowerdir=[^ ]*/LAYERS/' /proc/mounts
echo '--- dev'
find /dev -xdev 2>/dev/null | sort | while read f; do
  if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; else stat -c '%n %F %a %u %g %t %T' "$f"; fi
done
echo '--- syscalls'
/probe
"""

STATUS_KEYS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")

CASES = {
    "default": [],
    "cap-drop-all": ["--cap-drop", "ALL"],
    "cap-add-sys-admin": ["--cap-add", "SYS_ADMIN"],
    "seccomp-unconfined": ["--security-opt", "seccomp=unconfined"],
    "read-only": ["--read-only"],
    "privileged": ["--privileged"],
    "limits": ["--memory", "64m", "--memory-swap", "128m", "--cpus", "1.5", "--cpu-shares", "512",
               "--pids-limit", "50", "--ulimit", "nofile=1024:2048", "--shm-size", "128m", "--tmpfs", "/run",
               "--tmpfs", "/scratch:rw,size=10m,mode=1777", "--mount", "type=tmpfs,dst=/t,tmpfs-size=1000000,tmpfs-mode=0700",
               "--device", "/dev/null:/dev/mynull:r", "--init", "--security-opt", "no-new-privileges"],
}


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Any:
    peers.need_root()
    peers.need("runc")
    gcc = peers.need("gcc")
    base = tmp_path_factory.mktemp("confine-vs-docker")
    probe = base / "probe"
    (base / "probe.c").write_text(PROBE_C)
    subprocess.run([gcc, "-static", "-O2", "-o", str(probe), str(base / "probe.c")], check=True, timeout=120)
    d = peers.Dockerd(base / "docker-root")
    d.start()
    try:
        d.docker("load", "-i", str(cl.EDGE_TAR))
        dy = cl.Dy(base / "dy-root", base / "dy-exec")
        (base / "dy-root").mkdir()
        dy.load_edge()
        yield types.SimpleNamespace(d=d, dy=dy, base=base, probe=probe, cache={})
    finally:
        d.cleanup()
        peers.unmount_below(base)


def _sections(out: str) -> dict[str, str]:
    parts = re.split(r"^--- (\w+)$", out, flags=re.M)
    res = {"status": parts[0]}
    for i in range(1, len(parts) - 1, 2):
        res[parts[i]] = parts[i + 1]
    return res


def _inside(pair, case: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    key = ("inside", case)
    if key not in pair.cache:
        flags = CASES[case]
        vol = ["-v", f"{pair.probe}:/probe:ro"]
        dk = pair.d.docker("run", "--rm", "--network", "none", *flags, *vol, cl.EDGE_REF, "sh", "-c", SCRIPT,
                           check=False)
        dy = pair.dy("run", "--rm", "--network", "none", *flags, *vol, cl.EDGE_REF, "sh", "-c", SCRIPT, check=False)
        pair.cache[key] = (dk, dy)
    return pair.cache[key]


def _docker_bundle(pair, cid: str) -> dict[str, Any]:
    p = Path(pair.d.exec_root) / "containerd" / "daemon" / "io.containerd.runtime.v2.task" / "moby" / cid / "config.json"
    return json.loads(p.read_text())


SPEC_PROCESS = ("capabilities", "rlimits", "noNewPrivileges", "oomScoreAdj")
SPEC_LINUX = ("sysctl", "resources", "devices", "seccomp", "maskedPaths", "readonlyPaths")


def _spec_view(spec: dict[str, Any]) -> dict[str, Any]:
    own = ("/etc/resolv.conf", "/etc/hostname", "/etc/hosts")
    return {
        "process": {k: spec["process"].get(k) for k in SPEC_PROCESS},
        "args": spec["process"]["args"],
        "linux": {k: spec["linux"].get(k) for k in SPEC_LINUX},
        "namespaces": sorted(n["type"] for n in spec["linux"]["namespaces"]),
        "readonly": bool(spec["root"].get("readonly")),
        "mounts": [(m["destination"], m["type"], m.get("options")) for m in spec["mounts"]
                   if m["destination"] not in own and m["destination"] != "/probe"],
    }


def _specs(pair, case: str) -> tuple[dict[str, Any] | str, dict[str, Any] | str]:
    """The OCI spec each engine gave runc for `sleep` under the case's flags (or the start error)."""
    flags = CASES[case]
    dk = pair.d.docker("run", "-d", "--network", "none", *flags, cl.EDGE_REF, "sleep", "600", check=False)
    if dk.returncode != 0:
        dk_spec: dict[str, Any] | str = dk.stderr
    else:
        cid = dk.stdout.strip()
        try:
            dk_spec = _spec_view(_docker_bundle(pair, cid))
        finally:
            pair.d.docker("rm", "-f", cid, check=False)
    dy = pair.dy("run", "-d", "--network", "none", *flags, cl.EDGE_REF, "sleep", "600", check=False)
    if dy.returncode != 0:
        dy_spec: dict[str, Any] | str = dy.stderr
    else:
        cid = dy.stdout.strip()
        try:
            dy_spec = _spec_view(json.loads((pair.dy.exec_root / cid / "config.json").read_text()))
        finally:
            pair.dy("rm", "-f", cid, check=False)
    return dk_spec, dy_spec


def _runc_cap_failure(text: str) -> bool:
    return "unable to apply caps" in text


@pytest.mark.parametrize("case", list(CASES))
def test_inside_the_container_as_in_docker(pair, case):
    dk, dy = _inside(pair, case)
    if dk.returncode != 0:
        # e.g. --privileged on a host whose own bounding set lacks a capability: runc refuses for docker too
        assert dy.returncode != 0, "docker failed (%s) but dockyard ran:\n%s" % (dk.stderr, dy.stdout)
        assert _runc_cap_failure(dk.stderr) == _runc_cap_failure(dy.stderr), (dk.stderr, dy.stderr)
        return  # docker cannot run it on this host (its bounding set lacks a capability), and neither does dockyard
    assert dy.returncode == 0, cl.show(dy)
    a, b = _sections(dk.stdout), _sections(dy.stdout)
    st_dk = dict(re.findall(r"^(\w+):\s+(\S+)$", a["status"], re.M))
    st_dy = dict(re.findall(r"^(\w+):\s+(\S+)$", b["status"], re.M))
    assert set(STATUS_KEYS) <= set(st_dk), a["status"]
    assert {k: st_dy.get(k) for k in STATUS_KEYS} == {k: st_dk[k] for k in STATUS_KEYS}
    assert st_dy["CapInh"] == "0000000000000000" and st_dy["CapAmb"] == "0000000000000000"  # CVE-2022-24769
    assert b["mounts"].splitlines() == a["mounts"].splitlines()
    assert b["dev"].splitlines() == a["dev"].splitlines()
    assert b["syscalls"].splitlines() == a["syscalls"].splitlines()


@pytest.mark.parametrize("case", list(CASES))
def test_oci_spec_as_dockerd_makes_it(pair, case):
    dk, dy = _specs(pair, case)
    if isinstance(dk, str):
        assert isinstance(dy, str), "docker failed (%s) but dockyard ran" % dk
        assert _runc_cap_failure(dk) == _runc_cap_failure(dy), (dk, dy)
        return  # docker cannot run it on this host, and neither does dockyard
    assert not isinstance(dy, str), dy
    for k in dk:
        assert dy[k] == dk[k], "spec %s differs:\n dockyard %s\n dockerd  %s" % (
            k, json.dumps(dy[k])[:3000], json.dumps(dk[k])[:3000])


def _hostconfig(root: Path, cid: str) -> dict[str, Any]:
    return json.loads((root / "containers" / cid / "hostconfig.json").read_bytes())


@pytest.mark.parametrize("case", list(CASES))
def test_hostconfig_as_dockerd_records_it(pair, case):
    flags = CASES[case]
    dk_id = pair.d.docker("create", "--network", "none", *flags, cl.EDGE_REF, "true").stdout.strip()
    dy_id = pair.dy("create", "--network", "none", *flags, cl.EDGE_REF, "true").stdout.strip()
    try:
        dk_raw = (Path(pair.d.data_root) / "containers" / dk_id / "hostconfig.json").read_bytes()
        dy_raw = (pair.dy.root / "containers" / dy_id / "hostconfig.json").read_bytes()
        assert json.loads(dy_raw) == json.loads(dk_raw)
        assert list(json.loads(dy_raw)) == list(json.loads(dk_raw)), "field order"
        dk_cfg = json.loads((Path(pair.d.data_root) / "containers" / dk_id / "config.v2.json").read_bytes())
        dy_cfg = json.loads((pair.dy.root / "containers" / dy_id / "config.v2.json").read_bytes())
        for k in ("SeccompProfile", "NoNewPrivileges"):
            assert dy_cfg[k] == dk_cfg[k], k
        assert dy_cfg["MountPoints"] == dk_cfg["MountPoints"]
    finally:
        pair.d.docker("rm", "-f", dk_id, check=False)
        pair.dy("rm", "-f", dy_id, check=False)


def test_seccomp_profile_file_as_docker(pair, tmp_path):
    """--security-opt seccomp=FILE: the file's JSON is recorded and enforced (here: Docker's profile, mkdir denied)."""
    prof = json.loads(Path("/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json").read_text())
    for rule in prof["syscalls"]:
        if rule.get("names") and "mkdir" in rule["names"]:
            rule["names"] = [n for n in rule["names"] if n not in ("mkdir", "mkdirat")]
    path = tmp_path / "no-mkdir.json"
    path.write_text(json.dumps(prof, indent=2))
    args = ["--network", "none", "--security-opt", f"seccomp={path}", cl.EDGE_REF, "sh", "-c", "mkdir /x; echo rc=$?"]
    dk = pair.d.docker("run", "--rm", *args, check=False)
    dy = pair.dy("run", "--rm", *args, check=False)
    assert dy.stdout == dk.stdout and "rc=1" in dk.stdout, (cl.show(dy), dk.stdout, dk.stderr)


def test_bad_seccomp_profile_is_refused(pair, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    before = {c["ID"] for c in pair.dy.ps()} if hasattr(pair.dy, "ps") else set()
    for arg in (f"seccomp={bad}", f"seccomp={tmp_path / 'missing.json'}"):
        p = pair.dy("create", "--network", "none", "--security-opt", arg, cl.EDGE_REF, "true", check=False)
        assert p.returncode != 0 and p.stderr.startswith("Error: ") and len(p.stderr.strip().splitlines()) == 1, \
            cl.show(p)
    p = pair.dy("create", "--network", "none", "--cap-add", "NOPE", cl.EDGE_REF, "true", check=False)
    assert p.returncode != 0 and 'unknown capability: "CAP_NOPE"' in p.stderr, cl.show(p)
    assert {c["ID"] for c in pair.dy.ps()} == before


# 17 item 3: a hostconfig field is honoured, or the start is refused ----------------------------------------------
STATUS_AND_LIMITS = r"""
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status
for f in pids/pids.max memory/memory.limit_in_bytes memory/memory.memsw.limit_in_bytes pids.max memory.max memory.swap.max; do
  [ -e /sys/fs/cgroup/$f ] && echo "$f $(cat /sys/fs/cgroup/$f)"
done
true
"""


def test_dockerd_container_keeps_its_hardening_under_dockyard(tmp_path):
    peers.need_root()
    root = tmp_path / "shared-root"
    d = peers.Dockerd(root)
    d.start()
    try:
        d.docker("load", "-i", str(cl.EDGE_TAR))
        d.docker("create", "--name", "locked", "--network", "none", "--cap-drop", "ALL", "--security-opt",
                 "no-new-privileges", "--pids-limit", "20", "--memory", "64m", cl.EDGE_REF, "sh", "-c",
                 STATUS_AND_LIMITS)
        want = d.docker("start", "-a", "locked").stdout
    finally:
        d.cleanup()
    assert "CapEff:\t0000000000000000" in want and "NoNewPrivs:\t1" in want and "pids.max 20" in want, want
    dy = cl.Dy(root, tmp_path / "dy-exec")
    got = dy("start", "-a", "locked")
    assert got.stdout.splitlines() == want.splitlines()
    peers.unmount_below(tmp_path)


@pytest.mark.parametrize("field,value", [
    ("GroupAdd", ["audio"]), ("BlkioWeight", 300), ("IpcMode", "host"), ("Cgroup", "container:x"),
    ("UsernsMode", "private"), ("DeviceRequests", [{"Driver": "nvidia", "Count": -1}]), ("IOMaximumIOps", 5),
    ("SecurityOpt", ["bogus=1"]), ("CapAdd", ["CAP_NOPE"]), ("Mounts", [{"Type": "npipe", "Target": "/x"}]),
])
def test_start_refuses_a_field_it_cannot_enforce(pair, field, value):
    cid = pair.dy("create", "--network", "none", cl.EDGE_REF, "true").stdout.strip()
    try:
        p = pair.dy.root / "containers" / cid / "hostconfig.json"
        hc = json.loads(p.read_bytes())
        hc[field] = value
        p.write_text(json.dumps(hc))
        r = pair.dy("start", "-a", cid, check=False)
        assert r.returncode != 0, cl.show(r)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and field in lines[0], cl.show(r)
        assert not cl.mounts_below(pair.dy.root), "start left a mount"
    finally:
        pair.dy("rm", "-f", cid, check=False)


# 11 acceptance 6 -------------------------------------------------------------------------------------------------
FORK_BOMB = r"""
for f in memory/memory.limit_in_bytes pids/pids.max memory.max pids.max; do
  [ -e /sys/fs/cgroup/$f ] && echo "$f $(cat /sys/fs/cgroup/$f)"
done
# the bomb runs in a child shell (a shell that cannot fork gives up); it counts what it started in /tmp/n
sh -c 'n=0; while [ $n -lt 200 ]; do sleep 300 & n=$((n+1)); echo $n > /tmp/n; done' 2>/dev/null
c=/sys/fs/cgroup/pids/pids.current; [ -e $c ] || c=/sys/fs/cgroup/pids.current
read cur < $c  # builtins only from here: no fork is left
read n < /tmp/n
echo "current $cur"
echo "started $n"
"""


def test_limits_in_the_cgroup_and_a_fork_bomb_stops(pair):
    p = pair.dy("run", "--rm", "--network", "none", "--memory", "64m", "--pids-limit", "50", cl.EDGE_REF, "sh", "-c",
                FORK_BOMB, check=False, timeout=300)
    out = p.stdout
    lim = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    mem = lim.get("memory/memory.limit_in_bytes") or lim.get("memory.max")
    pids = lim.get("pids/pids.max") or lim.get("pids.max")
    assert mem == "67108864" and pids == "50", cl.show(p)
    assert int(lim["current"]) <= 50, out
    assert int(lim["started"]) < 200, "the fork bomb was not stopped:\n" + out
    # bounded and cleaned up: the container's init ended, nothing of it is left
    deadline = time.monotonic() + 60
    while cl.leftovers(pair.dy.root, pair.dy.exec_root) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not cl.leftovers(pair.dy.root, pair.dy.exec_root)


# update -----------------------------------------------------------------------------------------------------------
CG_FILES = ("memory/{p}/memory.limit_in_bytes", "memory/{p}/memory.memsw.limit_in_bytes", "pids/{p}/pids.max",
            "cpu/{p}/cpu.cfs_quota_us", "cpu/{p}/cpu.shares")


def _cgroup_values(prefix: str, cid: str) -> dict[str, str]:
    out = {}
    for f in CG_FILES:
        p = Path("/sys/fs/cgroup") / f.format(p=f"{prefix}/{cid}")
        if p.exists():
            out[f.format(p="X")] = p.read_text().strip()
    return out


def test_update_as_docker(pair):
    if not Path("/sys/fs/cgroup/memory").is_dir():
        pytest.skip("the cgroup v1 paths this test reads are absent (cgroup v2 host)")
    run = ["run", "-d", "--network", "none", "--memory", "64m", "--pids-limit", "20", cl.EDGE_REF, "sleep", "600"]
    upd = ["--memory", "100m", "--memory-swap", "200m", "--pids-limit", "30", "--cpus", "0.5", "--cpu-shares", "256"]
    dk_id = pair.d.docker(*run).stdout.strip()
    dy_id = pair.dy(*run).stdout.strip()
    try:
        dk = pair.d.docker("update", *upd, dk_id)
        dy = pair.dy("update", *upd, dy_id)
        assert dy.stdout == dk.stdout.replace(dk_id, dy_id)
        assert _cgroup_values("dockyard", dy_id) == _cgroup_values("docker", dk_id) != {}
        hk = _hostconfig(Path(pair.d.data_root), dk_id)
        hy = _hostconfig(pair.dy.root, dy_id)
        for k in ("Memory", "MemorySwap", "PidsLimit", "NanoCpus", "CpuShares"):
            assert hy[k] == hk[k], k
        bad = pair.dy("update", "--memory", "300m", dy_id, check=False)
        assert bad.returncode != 0 and "memoryswap" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    finally:
        pair.d.docker("rm", "-f", dk_id, check=False)
        pair.dy("rm", "-f", dy_id, check=False)
