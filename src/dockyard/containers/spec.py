"""The OCI runtime spec (``config.json``) for a container, as Docker 20.10 builds it.

Docker's defaults (``oci/defaults.go``, ``daemon/oci_linux.go``): the 14 default capabilities
(bounding, effective, permitted; never inheritable),
``/proc``, ``/dev`` (tmpfs), ``/dev/pts``, ``/sys`` (ro), ``/sys/fs/cgroup`` (ro), ``/dev/mqueue``,
``/dev/shm`` (64 MiB tmpfs), the masked and read-only paths, the default device cgroup rules,
and bind mounts of the container's ``resolv.conf``, ``hostname`` and ``hosts``. Namespaces:
mount, network (unless ``--network host``), uts, pid, ipc.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

from dockyard.archive.fsutil import RootDir
from dockyard.containers import capabilities
from dockyard.containers.model import MASKED_PATHS, READONLY_PATHS
from dockyard.errors import DockyardError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_CAPS = list(capabilities.DEFAULT_CAPS)


def _dev_rule(
    allow: bool,
    typ: str | None = None,
    major: int | None = None,
    minor: int | None = None,
    access: str = "rwm",
) -> dict[str, Any]:
    r: dict[str, Any] = {"allow": allow}
    if typ:
        r["type"] = typ
    if major is not None:
        r["major"] = major
    if minor is not None:
        r["minor"] = minor
    r["access"] = access
    return r


DEFAULT_DEVICE_RULES = [  # moby's oci/defaults.go; runc adds its own allowed devices (pts, ptmx...)
    _dev_rule(False),
    _dev_rule(True, "c", 1, 5),  # /dev/zero
    _dev_rule(True, "c", 1, 3),  # /dev/null
    _dev_rule(True, "c", 1, 9),  # /dev/urandom
    _dev_rule(True, "c", 1, 8),  # /dev/random
    _dev_rule(True, "c", 5, 0),  # /dev/tty
    _dev_rule(True, "c", 5, 1),  # /dev/console
    _dev_rule(False, "c", 10, 229),  # /dev/fuse (denied, as docker does)
]


@dataclass
class User:
    uid: int
    gid: int
    additional_gids: list[int] = field(default_factory=list)
    home: str = "/"


_MAX_ACCOUNT_FILE = 4 << 20


def _read_rootfs_file(rootfs: str, rel: str) -> str | None:
    """A small regular file of the container (passwd, group), read fd-relative: no symlink on
    the way, O_NONBLOCK (a FIFO planted there cannot block us), regular files only, size-capped."""
    try:
        with RootDir(rootfs) as rd:
            parent, _, base = rel.encode().rpartition(b"/")
            fd = os.open(
                base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=rd.dirfd(parent)
            )
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_ACCOUNT_FILE:
                return None
            return f.read(_MAX_ACCOUNT_FILE).decode("utf-8", "replace")
    except Exception:
        return None


def resolve_user(rootfs: str, spec: str) -> User:
    """docker's user resolution: ``name|uid[:group|gid]`` looked up in the image's passwd/group."""
    passwd = _read_rootfs_file(rootfs, "etc/passwd") or ""
    group = _read_rootfs_file(rootfs, "etc/group") or ""
    users = [line.split(":") for line in passwd.splitlines() if line and not line.startswith("#")]
    groups = [line.split(":") for line in group.splitlines() if line and not line.startswith("#")]
    u, _, g = (spec or "").partition(":")
    uid, gid, name, home = 0, 0, "root", "/root"
    if u:
        match = next((x for x in users if len(x) >= 4 and (x[0] == u or x[2] == u)), None)
        if match is not None:
            name, uid, gid = match[0], int(match[2]), int(match[3])
            home = match[5] if len(match) > 5 and match[5] else "/"
        elif u.isdigit():
            uid, gid, name, home = int(u), 0, "", "/"  # unknown numeric uid: group 0
        else:
            raise DockyardError(f"unable to find user {u}: no matching entries in passwd file")
    elif users:
        root = next((x for x in users if len(x) >= 4 and x[0] == "root"), None)
        if root is not None and len(root) > 5:
            home = root[5] or "/"
    if g:
        gm = next((x for x in groups if len(x) >= 3 and (x[0] == g or x[2] == g)), None)
        if gm is not None:
            gid = int(gm[2])
        elif g.isdigit():
            gid = int(g)
        else:
            raise DockyardError(f"unable to find group {g}: no matching entries in group file")
    # dockerd's getUser: the primary gid first, then (only when no group was named) the groups
    # that list the matched user name (libcontainer's Sgids)
    extra = [gid]
    if name and not g:
        for x in groups:
            if len(x) >= 4 and name in x[3].split(",") and x[2].isdigit():
                extra.append(int(x[2]))
    return User(uid, gid, extra, home)


def merge_env(base: list[str], override: list[str]) -> list[str]:
    """docker's ReplaceOrAppendEnvValues."""
    out = list(base)
    keys = {e.partition("=")[0]: i for i, e in enumerate(out)}
    for e in override:
        k, eq, _ = e.partition("=")
        if not eq:
            # "KEY" alone removes it
            if k in keys:
                out[keys[k]] = ""
            continue
        if k in keys:
            out[keys[k]] = e
        else:
            keys[k] = len(out)
            out.append(e)
    return [e for e in out if e]


def build_spec(
    *,
    rootfs: str,
    args: list[str],
    env: list[str],
    cwd: str,
    user: User,
    hostname: str,
    tty: bool,
    read_only: bool,
    network_mode: str,
    container_dir: str,
    binds: list[tuple[str, str, bool]],
    cgroups_path: str,
) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["ro", "nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"],
        },
    ]
    file_binds = [
        ("/etc/resolv.conf", os.path.join(container_dir, "resolv.conf")),
        ("/etc/hostname", os.path.join(container_dir, "hostname")),
        ("/etc/hosts", os.path.join(container_dir, "hosts")),
    ]
    user_dests = {d for _, d, _ in binds}
    extra = []
    for dest, src in file_binds:
        if dest not in user_dests:
            extra.append(
                {"destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate"]}
            )
    for src, dest, rw in binds:
        opts = ["rbind"] + ([] if rw else ["ro"]) + ["rprivate"]
        extra.append({"destination": dest, "type": "bind", "source": src, "options": opts})
    extra.sort(key=lambda m: m["destination"].count("/"))
    mounts.extend(extra)
    namespaces = [{"type": "mount"}]
    if network_mode != "host":
        namespaces.append({"type": "network"})
    namespaces += [{"type": "uts"}, {"type": "pid"}, {"type": "ipc"}]
    process: dict[str, Any] = {
        "terminal": tty,
        "user": {
            "uid": user.uid,
            "gid": user.gid,
            **({"additionalGids": user.additional_gids} if user.additional_gids else {}),
        },
        "args": args,
        "env": env,
        "cwd": cwd or "/",
        # never the inheritable or ambient set (CVE-2022-24769); confine.apply sets the final ones
        "capabilities": capabilities.spec_capabilities(DEFAULT_CAPS, user.uid),
        "oomScoreAdj": 0,
    }
    return {
        "ociVersion": "1.0.2-dev",
        "process": process,
        "root": {"path": rootfs, "readonly": read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "resources": {"devices": DEFAULT_DEVICE_RULES},
            "cgroupsPath": cgroups_path,
            "namespaces": namespaces,
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
