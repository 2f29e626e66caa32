"""docker run/create's confinement and limit flags, turned into what dockerd 20.10 records.

``host_fields`` gives the hostconfig.json fields (Docker's names, and the values dockerd writes
after its ``adaptContainerSettings``: ``MemorySwap`` twice ``Memory``, ``label=disable`` and no
masked paths for ``--privileged``, ``PidsLimit`` null for 0 or less...), the config.v2.json fields
(``SeccompProfile``, ``NoNewPrivileges``) and the ``MountPoints`` of ``--mount type=tmpfs``.
``order`` puts a hostconfig back in Go's struct order, with the ``omitempty`` fields left out when
empty. Everything is validated here, at create, so a bad flag or profile never makes a container.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from dockyard.containers import capabilities, confine, resources, seccomp
from dockyard.errors import InvalidInput

HOSTCONFIG_ORDER = (
    "Binds", "ContainerIDFile", "LogConfig", "NetworkMode", "PortBindings", "RestartPolicy", "AutoRemove",
    "VolumeDriver", "VolumesFrom", "CapAdd", "CapDrop", "CgroupnsMode", "Dns", "DnsOptions", "DnsSearch",
    "ExtraHosts", "GroupAdd", "IpcMode", "Cgroup", "Links", "OomScoreAdj", "PidMode", "Privileged",
    "PublishAllPorts", "ReadonlyRootfs", "SecurityOpt", "StorageOpt", "Tmpfs", "UTSMode", "UsernsMode", "ShmSize",
    "Sysctls", "Runtime", "ConsoleSize", "Isolation", "CpuShares", "Memory", "NanoCpus", "CgroupParent",
    "BlkioWeight", "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps", "CpuPeriod", "CpuQuota", "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpusetCpus",
    "CpusetMems", "Devices", "DeviceCgroupRules", "DeviceRequests", "KernelMemory", "KernelMemoryTCP",
    "MemoryReservation", "MemorySwap", "MemorySwappiness", "OomKillDisable", "PidsLimit", "Ulimits", "CpuCount",
    "CpuPercent", "IOMaximumIOps", "IOMaximumBandwidth", "Mounts", "MaskedPaths", "ReadonlyPaths", "Init",
)  # fmt: skip
_OMITEMPTY = {"StorageOpt", "Tmpfs", "Sysctls", "Runtime", "Mounts", "Init"}


def order(hc: dict[str, Any]) -> dict[str, Any]:
    out = {k: hc[k] for k in HOSTCONFIG_ORDER if k in hc and not (k in _OMITEMPTY and not hc[k])}
    out.update({k: v for k, v in hc.items() if k not in HOSTCONFIG_ORDER})
    return out


@dataclass
class ConfineFlags:
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    device_cgroup_rules: list[str] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    shm_size: str | None = None
    ulimits: list[str] = field(default_factory=list)
    init: bool = False
    memory: str | None = None
    memory_swap: str | None = None
    memory_reservation: str | None = None
    cpus: str | None = None
    cpu_shares: int | None = None
    pids_limit: int | None = None
    sysctls: list[str] = field(default_factory=list)
    oom_score_adj: int | None = None
    cgroup_parent: str | None = None


def _valid_perms(s: str) -> bool:
    return bool(s) and set(s) <= set("rwm") and len(s) <= 3


def parse_device(spec: str) -> dict[str, Any]:
    """``--device HOST[:CONTAINER][:PERMS]`` as the docker CLI reads it."""
    parts = spec.split(":")
    src, dst, perms = parts[0], "", "rwm"
    if len(parts) == 3:
        dst, perms = parts[1], parts[2]
    elif len(parts) == 2:
        if _valid_perms(parts[1]):
            perms = parts[1]
        else:
            dst = parts[1]
    elif len(parts) != 1:
        raise InvalidInput(f"invalid device specification: {spec}")
    if not dst:
        dst = src
    if not _valid_perms(perms):
        raise InvalidInput(f"invalid device specification: {spec}")
    if not os.path.isabs(dst):
        raise InvalidInput(f"{dst} is not an absolute path")
    confine.devices_from_path(src, dst, perms)  # the node must exist now, as docker checks at create
    return {"PathOnHost": src, "PathInContainer": dst, "CgroupPermissions": perms}


def _tmpfs_dest(dest: str) -> str:
    if not os.path.isabs(dest):
        raise InvalidInput(f"invalid mount path: '{dest}' mount path must be absolute")
    if os.path.normpath(dest) == "/":
        raise InvalidInput("invalid specification: destination can't be '/'")
    return dest


def parse_mount(spec: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--mount type=tmpfs,dst=/x[,tmpfs-size=..][,tmpfs-mode=..][,ro]``: (Mounts entry, MountPoint)."""
    kv: dict[str, str] = {}
    for part in spec.split(","):
        k, eq, v = part.partition("=")
        kv[k.strip().lower()] = v if eq else ""
    typ = kv.get("type", "volume")
    if typ != "tmpfs":
        raise InvalidInput(f"--mount type={typ} is not supported yet: use -v for bind mounts and volumes")
    dest = kv.get("dst") or kv.get("destination") or kv.get("target") or ""
    if not dest:
        raise InvalidInput("invalid argument for --mount: target is required")
    _tmpfs_dest(dest)
    ro = any(k in kv and kv[k] in ("", "1", "true") for k in ("ro", "readonly"))
    m: dict[str, Any] = {"Type": "tmpfs", "Target": dest}
    if ro:
        m["ReadOnly"] = True
    topts: dict[str, Any] = {}
    if "tmpfs-size" in kv:
        topts["SizeBytes"] = resources.flag_size("--mount tmpfs-size", kv["tmpfs-size"])
    if "tmpfs-mode" in kv:
        try:
            topts["Mode"] = int(kv["tmpfs-mode"], 8)
        except ValueError:
            raise InvalidInput(f"invalid value for tmpfs-mode: {kv['tmpfs-mode']}") from None
    for k in kv:
        if k not in ("type", "dst", "destination", "target", "ro", "readonly", "tmpfs-size", "tmpfs-mode"):
            raise InvalidInput(f"invalid field '{k}' must be a key=value pair")
    if topts:
        m["TmpfsOptions"] = topts
    mp = {
        "Source": "",
        "Destination": dest,
        "RW": not ro,
        "Name": "",
        "Driver": "",
        "Type": "tmpfs",
        "Spec": m,
        "SkipMountpointCreation": False,
    }
    return m, mp


def security_opts(opts: list[str]) -> list[str]:
    """The CLI's ``parseSecurityOpts``: ``seccomp=FILE`` becomes ``seccomp=<compact JSON>``."""
    out = []
    for o in opts:
        key, eq, val = o.partition("=")
        if not eq and ":" in o:
            key, _, val = o.partition(":")
        if key == "seccomp" and val != "unconfined":
            out.append("seccomp=" + seccomp.read_profile(val))
        else:
            out.append(o)
    return out


def host_fields(f: ConfineFlags) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(hostconfig fields, config.v2.json fields, MountPoints) for the flags, validated."""
    hc: dict[str, Any] = {
        "CapAdd": capabilities.normalize(f.cap_add) or None,
        "CapDrop": capabilities.normalize(f.cap_drop) or None,
        "Privileged": f.privileged,
        "SecurityOpt": security_opts(f.security_opt) or None,
        "Devices": [parse_device(d) for d in f.devices],
        "Ulimits": [resources.parse_ulimit(u) for u in f.ulimits],
    }
    if f.device_cgroup_rules:
        for r in f.device_cgroup_rules:
            confine._cgroup_rule(r)
        hc["DeviceCgroupRules"] = list(f.device_cgroup_rules)
    tmpfs: dict[str, str] = {}
    for t in f.tmpfs:
        dest, _, opts = t.partition(":")
        tmpfs[_tmpfs_dest(dest)] = opts
    if tmpfs:
        hc["Tmpfs"] = tmpfs
    mounts, mount_points = [], {}
    for spec in f.mounts:
        m, mp = parse_mount(spec)
        mounts.append(m)
        mount_points[m["Target"]] = mp
    if mounts:
        hc["Mounts"] = mounts
    if f.sysctls:
        sc = {}
        for s in f.sysctls:
            k, eq, v = s.partition("=")
            if not eq or not k:
                raise InvalidInput(
                    f"invalid argument {s!r} for --sysctl: sysctl must be in the format KEY=VALUE"
                )
            sc[k] = v
        hc["Sysctls"] = sc
    if f.shm_size is not None:
        hc["ShmSize"] = resources.flag_size("--shm-size", f.shm_size)
    if f.memory is not None:
        hc["Memory"] = resources.flag_size("-m, --memory", f.memory)
    if f.memory_swap is not None:
        hc["MemorySwap"] = resources.memory_swap(f.memory_swap)
    if f.memory_reservation is not None:
        hc["MemoryReservation"] = resources.flag_size("--memory-reservation", f.memory_reservation)
    if f.cpus is not None:
        hc["NanoCpus"] = resources.nano_cpus(f.cpus)
    if f.cpu_shares is not None:
        hc["CpuShares"] = f.cpu_shares
    if f.pids_limit is not None:
        hc["PidsLimit"] = f.pids_limit
    if f.oom_score_adj is not None:
        hc["OomScoreAdj"] = f.oom_score_adj
    if f.cgroup_parent is not None:
        hc["CgroupParent"] = f.cgroup_parent
    if f.init:
        hc["Init"] = True
    if f.privileged:
        hc["SecurityOpt"] = (hc["SecurityOpt"] or []) + ["label=disable"]
        hc["MaskedPaths"] = None
        hc["ReadonlyPaths"] = None
    resources.adapt(hc)
    profile, nnp = confine.parse_security_opts(hc)
    check = dict(hc)
    confine.check(check)
    if profile and profile != "unconfined":
        caps = capabilities.tweak(hc["CapAdd"], hc["CapDrop"], f.privileged)
        seccomp.convert(profile, caps)  # a bad profile is refused now, not at start
    record = {"SeccompProfile": profile, "NoNewPrivileges": nnp}
    return hc, record, mount_points
