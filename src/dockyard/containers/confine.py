"""Confinement as dockerd 20.10 applies it, from a container's hostconfig.json to its OCI spec.

Two halves:

- ``check`` refuses, with one line naming the field, every hostconfig field that changes
  confinement or limits and that dockyard cannot enforce exactly as dockerd does (the table is
  in docs/confinement.md). A container is never run more weakly than its configuration says.
- ``apply`` edits the spec that ``spec.build_spec`` made: capabilities (``TweakCapabilities``,
  empty inheritable and ambient sets), seccomp (``seccomp.convert`` of Docker's profile),
  ``noNewPrivileges``, ``--privileged`` (all capabilities and host devices, no seccomp, writable
  /sys and cgroup, no masked or read-only paths), devices and device cgroup rules, ``rlimits``,
  ``linux.resources``, tmpfs mounts, the /dev/shm size, ``--init``, ``--read-only``, masked and
  read-only paths, sysctls, the OOM score, namespaces of ``PidMode``/``UTSMode``/``IpcMode``/
  ``CgroupnsMode`` and the cgroup path (``CgroupParent``). The order of the steps is that of
  dockerd's ``createSpec``.

The security options themselves (``no-new-privileges``, ``seccomp=``) are read from config.v2.json
(``NoNewPrivileges``, ``SeccompProfile``), where dockerd keeps what it parsed at create, and from
``SecurityOpt``; the stricter of the two wins.
"""

from __future__ import annotations

import os
import shutil
import stat
from typing import Any

from dockyard.containers import capabilities, resources, seccomp
from dockyard.containers.model import MASKED_PATHS, READONLY_PATHS
from dockyard.errors import DockyardError, InvalidInput

DEFAULT_MOUNTS = ("/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue", "/dev/shm")
INIT_PATH = "/sbin/docker-init"
NETWORK_FILES = ("/etc/resolv.conf", "/etc/hostname", "/etc/hosts")
INIT_BINARIES = ("docker-init", "tini")
_HOST_DEV_SKIP = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}


class Refused(DockyardError):
    """A hostconfig field dockyard cannot enforce as dockerd does: the start is refused."""


# ---------------------------------------------------------------------------------------------- security opts
def parse_security_opts(hc: dict[str, Any]) -> tuple[str, bool]:
    """dockerd's ``parseSecurityOpt``: (seccomp profile or "unconfined" or "", no-new-privileges)."""
    profile = ""
    nnp = False
    for opt in hc.get("SecurityOpt") or []:
        opt = str(opt)
        if opt == "no-new-privileges":
            nnp = True
            continue
        if opt == "disable":
            continue
        if "=" in opt:
            key, _, val = opt.partition("=")
        elif ":" in opt:
            key, _, val = opt.partition(":")
        else:
            raise Refused(f'hostconfig SecurityOpt: invalid --security-opt 1: "{opt}"')
        if key in ("label", "apparmor"):
            continue  # neither SELinux nor AppArmor is enabled on such a host: dockerd ignores them too
        if key == "seccomp":
            profile = val
        elif key == "no-new-privileges":
            b = _go_bool(val)
            if b is None:
                raise Refused(f'hostconfig SecurityOpt: invalid --security-opt 2: "{opt}"')
            nnp = b
        else:
            raise Refused(f'hostconfig SecurityOpt: invalid --security-opt 2: "{opt}"')
    return profile, nnp


def _go_bool(s: str) -> bool | None:
    if s in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if s in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


# ---------------------------------------------------------------------------------------------- refusals
_EMPTY_OK = ("GroupAdd", "StorageOpt", "DeviceRequests", "BlkioWeightDevice", "BlkioDeviceReadBps",
             "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps")  # fmt: skip
_ZERO_OK = ("BlkioWeight", "KernelMemory", "CpuCount", "CpuPercent", "IOMaximumIOps", "IOMaximumBandwidth")


def check(hc: dict[str, Any]) -> None:
    """Refuse what cannot be enforced as dockerd enforces it (one line naming the field)."""
    for k in _EMPTY_OK:
        if hc.get(k):
            raise Refused(
                f"hostconfig {k} is set ({_short(hc[k])}): dockyard cannot enforce it, refusing to start"
            )
    for k in _ZERO_OK:
        if int(hc.get(k) or 0) != 0:
            raise Refused(f"hostconfig {k} is {hc[k]}: dockyard cannot enforce it, refusing to start")
    if hc.get("Cgroup"):
        raise Refused(f"hostconfig Cgroup is {hc['Cgroup']!r}: joining another cgroup is not supported")
    ipc = str(hc.get("IpcMode") or "")
    if ipc not in ("", "private", "shareable", "none"):
        raise Refused(f"hostconfig IpcMode {ipc!r} is not supported (private, shareable or none)")
    pid = str(hc.get("PidMode") or "")
    if pid not in ("", "host"):
        raise Refused(f"hostconfig PidMode {pid!r} is not supported ('' or host)")
    uts = str(hc.get("UTSMode") or "")
    if uts not in ("", "host"):
        raise Refused(f"hostconfig UTSMode {uts!r} is not supported ('' or host)")
    userns = str(hc.get("UsernsMode") or "")
    if userns not in ("", "host"):
        raise Refused(f"hostconfig UsernsMode {userns!r} is not supported ('' or host)")
    cgns = str(hc.get("CgroupnsMode") or "")
    if cgns not in ("", "host", "private"):
        raise Refused(f"hostconfig CgroupnsMode: invalid cgroup namespace mode: {cgns}")
    iso = str(hc.get("Isolation") or "")
    if iso not in ("", "default"):
        raise Refused(f"hostconfig Isolation {iso!r} is not supported on Linux")
    parent = str(hc.get("CgroupParent") or "")
    if ".." in parent.split("/"):
        raise Refused(f"hostconfig CgroupParent {parent!r} may not contain '..'")
    for m in hc.get("Mounts") or []:
        t = (m or {}).get("Type")
        if t != "tmpfs":
            raise Refused(f"hostconfig Mounts: a mount of type {t!r} is not supported yet (use -v)")
    parse_security_opts(hc)
    for k in ("CapAdd", "CapDrop"):
        try:
            capabilities.normalize(hc.get(k))
        except InvalidInput as e:
            raise Refused(f"hostconfig {k}: {e}") from None
    try:
        resources.verify(hc)
        for r in hc.get("DeviceCgroupRules") or []:
            _cgroup_rule(str(r))
        resources.rlimits(hc.get("Ulimits"))
    except InvalidInput as e:
        raise Refused(f"hostconfig: {e}") from None
    if hc.get("Init") and not init_binary():
        raise Refused(
            "hostconfig Init is set, but neither docker-init nor tini is installed (apt-get install tini)"
        )


def _short(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."


# ---------------------------------------------------------------------------------------------- devices
def _device(path: str, dest: str, perms: str) -> dict[str, Any] | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    if stat.S_ISCHR(st.st_mode):
        typ = "c"
    elif stat.S_ISBLK(st.st_mode):
        typ = "b"
    else:
        return None
    return {
        "path": dest,
        "type": typ,
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": st.st_mode & 0o777,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "_perms": perms,
    }


def devices_from_path(host: str, dest: str, perms: str) -> list[dict[str, Any]]:
    """``oci.DevicesFromPath``: one device node, or every device below a directory."""
    resolved = os.path.realpath(host) if os.path.islink(host) else host
    d = _device(resolved, dest, perms)
    if d is not None:
        return [d]
    out = []
    if os.path.isdir(resolved):
        for dirpath, dirnames, filenames in os.walk(resolved):
            dirnames.sort()
            for n in sorted(filenames + [x for x in dirnames if os.path.islink(os.path.join(dirpath, x))]):
                p = os.path.join(dirpath, n)
                c = _device(p, p.replace(resolved, dest, 1), perms)
                if c is not None:
                    out.append(c)
    if not out:
        raise InvalidInput(
            f'error gathering device information while adding custom device "{host}": not a device node'
        )
    return out


def host_devices(root: str = "/dev") -> list[dict[str, Any]]:
    """runc's ``devices.HostDevices``: every device node below /dev (not pts, shm, fd, mqueue, console)."""
    out: list[dict[str, Any]] = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return out
    for n in names:
        p = os.path.join(root, n)
        if os.path.isdir(p) and not os.path.islink(p):
            if n not in _HOST_DEV_SKIP:
                out += host_devices(p)
            continue
        if n == "console":
            continue
        d = _device(p, p, "rwm")
        if d is not None:
            out.append(d)
    return out


def _cgroup_rule(rule: str) -> dict[str, Any]:
    """``AppendDevicePermissionsFromCgroupRules``: ``c 1:3 rwm``, ``*`` for any number."""
    parts = rule.split()
    ok = len(parts) == 3 and parts[0] in ("a", "b", "c") and ":" in parts[1]
    if ok:
        ma, _, mi = parts[1].partition(":")
        ok = all(x == "*" or x.isdigit() for x in (ma, mi)) and bool(parts[2]) and set(parts[2]) <= set("rwm")
    if not ok:
        raise InvalidInput(f"invalid device cgroup format '{rule}'")
    return {
        "allow": True,
        "type": parts[0],
        "major": -1 if ma == "*" else int(ma),
        "minor": -1 if mi == "*" else int(mi),
        "access": parts[2],
    }


def _cgroup_for(d: dict[str, Any]) -> dict[str, Any]:
    return {"allow": True, "type": d["type"], "major": d["major"], "minor": d["minor"], "access": d["_perms"]}


def _spec_device(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not k.startswith("_")}


# ---------------------------------------------------------------------------------------------- mounts
def merge_tmpfs_options(options: list[str]) -> list[str]:
    """moby/sys/mount ``MergeTmpfsOptions``: later flags and key=value options win."""
    flags = {
        "ro": "rdonly", "rw": "rdonly", "suid": "nosuid", "nosuid": "nosuid", "dev": "nodev", "nodev": "nodev",
        "exec": "noexec", "noexec": "noexec", "sync": "sync", "async": "sync", "dirsync": "dirsync",
        "remount": "remount", "mand": "mand", "nomand": "mand", "atime": "noatime", "noatime": "noatime",
        "diratime": "nodiratime", "nodiratime": "nodiratime", "relatime": "relatime", "norelatime": "relatime",
        "strictatime": "strictatime", "nostrictatime": "strictatime",
    }  # fmt: skip
    propagation = {"bind", "rbind", "unbindable", "runbindable", "private", "rprivate", "shared", "rshared",
                   "slave", "rslave"}  # fmt: skip
    valid = {"", "size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"}
    seen_flags: set[str] = set()
    seen_data: set[str] = set()
    out: list[str] = []
    for o in reversed(options):
        if o == "defaults":
            continue
        if o in propagation or o in flags:
            key = "propagation" if o in propagation else flags[o]
            if key not in seen_flags:
                out.insert(0, o)
                seen_flags.add(key)
            continue
        k, eq, _ = o.partition("=")
        if not eq or k not in valid:
            raise InvalidInput(f'invalid tmpfs option ["{o}"]')
        if k not in seen_data:
            out.insert(0, o)
            seen_data.add(k)
    return out


def tmpfs_data(opts: dict[str, Any] | None, read_only: bool) -> str:
    """The linux parser's ``ConvertTmpfsOptions`` (a ``--mount type=tmpfs``'s options)."""
    raw = ["ro"] if read_only else []
    opts = opts or {}
    mode = int(opts.get("Mode") or 0)
    if mode:
        raw.append(f"mode={mode & 0o7777:o}")
    size = int(opts.get("SizeBytes") or 0)
    if size:
        suffix = ""
        for s, div in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if size % div == 0:
                size, suffix = size // div, s
                break
        raw.append(f"size={size}{suffix}")
    return ",".join(raw)


def _tmpfs_mounts(hc: dict[str, Any], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    items = [(str(d), str(v or "")) for d, v in sorted((hc.get("Tmpfs") or {}).items())]
    for dest, mp in sorted((cfg.get("MountPoints") or {}).items()):
        if (mp or {}).get("Type") == "tmpfs":
            spec = mp.get("Spec") or {}
            items.append((str(dest), tmpfs_data(spec.get("TmpfsOptions"), bool(spec.get("ReadOnly")))))
    for dest, data in items:
        if not os.path.isabs(dest) or os.path.normpath(dest) == "/":
            raise Refused(f"hostconfig Tmpfs: invalid mount path {dest!r}")
        try:
            merged = merge_tmpfs_options(
                ["noexec", "nosuid", "nodev", "rprivate"] + (data.split(",") if data else [])
            )
        except InvalidInput as e:
            raise Refused(f"hostconfig Tmpfs {dest}: {e}") from None
        out.append({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": merged})
    return out


def init_binary() -> str | None:
    for name in INIT_BINARIES:
        p = shutil.which(name)
        if p:
            return p
    return None


def _clear_ro(m: dict[str, Any]) -> None:
    m["options"] = [o for o in m.get("options") or [] if o != "ro"]


# ---------------------------------------------------------------------------------------------- apply
def apply(spec: dict[str, Any], hc: dict[str, Any], cfg: dict[str, Any], cid: str, *, parent: str) -> None:
    """Edit ``spec`` (from ``build_spec``) to confine the container as dockerd would."""
    check(hc)
    privileged = bool(hc.get("Privileged"))
    proc = spec["process"]
    linux = spec.setdefault("linux", {})
    # WithCommonOptions: --init, the sysctls of a private network namespace
    net = str(hc.get("NetworkMode") or "")
    mounts: list[dict[str, Any]] = spec["mounts"]
    n_default = 0
    while n_default < len(mounts) and mounts[n_default]["destination"] in DEFAULT_MOUNTS:
        n_default += 1
    defaults, user = mounts[:n_default], mounts[n_default:]
    if hc.get("Init") and str(hc.get("PidMode") or "") != "host":
        path = init_binary()
        if path is None:
            raise Refused(
                "hostconfig Init is set, but neither docker-init nor tini is installed (apt-get install tini)"
            )
        proc["args"] = [INIT_PATH, "--", *proc["args"]]
        defaults.append({"destination": INIT_PATH, "type": "bind", "source": path, "options": ["bind", "ro"]})
    sysctl: dict[str, str] = dict(linux.get("sysctl") or {})
    if net != "host" and not net.startswith("container:"):
        if os.path.exists("/proc/sys/net/ipv4/ping_group_range"):
            sysctl["net.ipv4.ping_group_range"] = "0 2147483647"
        if os.path.exists("/proc/sys/net/ipv4/ip_unprivileged_port_start"):
            sysctl["net.ipv4.ip_unprivileged_port_start"] = "0"
    # WithCgroups
    cg_parent = str(hc.get("CgroupParent") or "") or parent
    linux["cgroupsPath"] = os.path.join("/" + cg_parent.strip("/"), cid) if cg_parent else "/" + cid
    # WithResources, WithSysctls
    res = resources.spec_resources(hc)
    dev_rules = list((linux.get("resources") or {}).get("devices") or [])
    for k, v in (hc.get("Sysctls") or {}).items():
        sysctl[str(k)] = str(v)
    if sysctl:
        linux["sysctl"] = {k: sysctl[k] for k in sorted(sysctl)}
    # WithDevices
    devs: list[dict[str, Any]] = []
    if privileged:
        devs = host_devices()
        for dm in hc.get("Devices") or []:
            if dm.get("PathOnHost") == dm.get("PathInContainer"):
                continue
            devs += devices_from_path(str(dm["PathOnHost"]), str(dm["PathInContainer"]), "rwm")
        dev_rules = [{"allow": True, "access": "rwm"}]
    else:
        for dm in hc.get("Devices") or []:
            try:
                got = devices_from_path(
                    str(dm["PathOnHost"]),
                    str(dm["PathInContainer"]),
                    str(dm.get("CgroupPermissions") or "rwm"),
                )
            except InvalidInput as e:
                raise Refused(f"hostconfig Devices: {e}") from None
            devs += got
            dev_rules += [_cgroup_for(d) for d in got]
        dev_rules += [_cgroup_rule(str(r)) for r in hc.get("DeviceCgroupRules") or []]
    if devs:
        linux["devices"] = [_spec_device(d) for d in devs]
    linux["resources"] = {"devices": dev_rules, **res}
    # WithRlimits
    rl = resources.rlimits(hc.get("Ulimits"))
    if rl:
        proc["rlimits"] = rl
    # WithNamespaces
    ns = [n for n in linux.get("namespaces") or []]
    if str(hc.get("IpcMode") or "") not in ("", "private", "shareable", "none"):
        raise Refused(f"hostconfig IpcMode {hc.get('IpcMode')!r} is not supported")
    if str(hc.get("PidMode") or "") == "host":
        ns = [n for n in ns if n.get("type") != "pid"]
    if str(hc.get("UTSMode") or "") == "host":
        ns = [n for n in ns if n.get("type") != "uts"]
        spec.pop("hostname", None)
    if str(hc.get("CgroupnsMode") or "") == "private" and not any(n.get("type") == "cgroup" for n in ns):
        ns.append({"type": "cgroup"})
    linux["namespaces"] = ns
    # WithCapabilities
    try:
        caps = capabilities.tweak(hc.get("CapAdd"), hc.get("CapDrop"), privileged)
    except InvalidInput as e:
        raise Refused(f"hostconfig CapAdd/CapDrop: {e}") from None
    uid = int((proc.get("user") or {}).get("uid") or 0)
    proc["capabilities"] = capabilities.spec_capabilities(caps, uid)
    # WithSeccomp
    profile, nnp = parse_security_opts(hc)
    recorded = str(cfg.get("SeccompProfile") or "")
    if recorded and recorded != "unconfined":
        profile = recorded  # what dockerd parsed at create and runs with
    elif recorded == "unconfined" and profile not in ("", "unconfined"):
        pass  # SecurityOpt names a profile: the stricter one is kept
    elif recorded == "unconfined":
        profile = "unconfined"
    linux.pop("seccomp", None)
    if profile != "unconfined" and not privileged:
        text = profile or seccomp.default_profile_text()
        try:
            sc = seccomp.convert(text, caps)
        except InvalidInput as e:
            raise Refused(f"hostconfig SecurityOpt seccomp: {e}") from None
        if sc is not None:
            linux["seccomp"] = sc
    # WithMounts
    tmpfs = _tmpfs_mounts(hc, cfg)
    user = user + tmpfs
    user_dests = {m["destination"] for m in user}
    mount_dev = "/dev" in user_dests
    kept = []
    ipc = str(hc.get("IpcMode") or "")
    shm = int(hc.get("ShmSize") or 0) or resources.DEFAULT_SHM_SIZE
    for m in defaults:
        d = m["destination"]
        if d in user_dests or (mount_dev and d.startswith("/dev/")):
            continue
        if d == "/dev/shm":
            if ipc == "none":
                continue
            m["options"] = [o for o in m["options"] if not o.startswith("size=")] + [f"size={shm}"]
        kept.append(m)
    user.sort(key=lambda m: len([p for p in m["destination"].split("/") if p]))
    mounts[:] = kept + user
    if hc.get("ReadonlyRootfs"):
        for m in mounts:  # the container's own hostname/hosts/resolv.conf are read-only too (NetworkMounts)
            own = os.path.basename(os.path.dirname(str(m.get("source") or ""))) == cid
            if own and m["destination"] in NETWORK_FILES and m["type"] == "bind" and "ro" not in m["options"]:
                m["options"].insert(1 if m["options"][:1] == ["rbind"] else 0, "ro")
        for m in mounts:
            if m["destination"] in ("/proc", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev"):
                continue
            if m["destination"] not in user_dests and "ro" not in m["options"]:
                m["options"].append("ro")
    if privileged:
        for m in mounts:
            if m["destination"] == "/sys" or m["type"] == "cgroup":
                _clear_ro(m)
        linux.pop("maskedPaths", None)
        linux.pop("readonlyPaths", None)
    spec["root"]["readonly"] = bool(hc.get("ReadonlyRootfs"))
    if not spec["root"]["readonly"]:
        spec["root"].pop("readonly", None)
    # WithOOMScore, no-new-privileges, masked and read-only paths
    proc["oomScoreAdj"] = int(hc.get("OomScoreAdj") or 0)
    if nnp or bool(cfg.get("NoNewPrivileges")):
        proc["noNewPrivileges"] = True
    if hc.get("MaskedPaths") is not None:
        linux["maskedPaths"] = list(hc["MaskedPaths"])
    elif not privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
    if hc.get("ReadonlyPaths") is not None:
        linux["readonlyPaths"] = list(hc["ReadonlyPaths"])
    elif not privileged:
        linux["readonlyPaths"] = list(READONLY_PATHS)
    for k in ("maskedPaths", "readonlyPaths"):
        if k in linux and not linux[k]:
            del linux[k]
    _order(spec)


_PROC_ORDER = ("terminal", "consoleSize", "user", "args", "commandLine", "env", "cwd", "capabilities", "rlimits",
               "noNewPrivileges", "apparmorProfile", "oomScoreAdj", "selinuxLabel")  # fmt: skip
_LINUX_ORDER = ("uidMappings", "gidMappings", "sysctl", "resources", "cgroupsPath", "namespaces", "devices",
                "seccomp", "rootfsPropagation", "maskedPaths", "readonlyPaths", "mountLabel", "intelRdt")  # fmt: skip


def _order(spec: dict[str, Any]) -> None:
    """Go's struct field order for process and linux, so the bundle reads as dockerd's does."""
    for key, order in (("process", _PROC_ORDER), ("linux", _LINUX_ORDER)):
        d = spec.get(key) or {}
        spec[key] = {k: d[k] for k in order if k in d} | {k: v for k, v in d.items() if k not in order}
