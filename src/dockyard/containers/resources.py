"""Resource limits: docker's flag syntax, dockerd's checks, and ``linux.resources`` of the spec.

The limits are recorded in hostconfig.json with Docker's field names (``Memory``, ``MemorySwap``,
``NanoCpus``, ``CpuShares``, ``PidsLimit``...) and applied by the OCI runtime in the container's
cgroup (``<parent>/<id>``): on this host's hybrid cgroup v1 layout runc writes
``memory.limit_in_bytes``, ``memory.memsw.limit_in_bytes``, ``cpu.shares``,
``cpu.cfs_{period,quota}_us`` and ``pids.max``; on a cgroup v2 host it writes ``memory.max``,
``memory.swap.max``, ``cpu.weight``, ``cpu.max`` and ``pids.max``. The mapping from hostconfig to
the spec is dockerd's (``getMemoryResources``, ``getCPUResources``, ``getPidsLimit``).
"""

from __future__ import annotations

import os
import re
from fractions import Fraction
from typing import Any

from dockyard.errors import InvalidInput

LINUX_MIN_MEMORY = 6291456  # 6 MiB, dockerd's linuxMinMemory
DEFAULT_SHM_SIZE = 64 << 20
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")


def ram_in_bytes(s: str) -> int:
    """go-units ``RAMInBytes``: ``64m`` = 64 MiB (binary multipliers, as docker reads them)."""
    m = _SIZE_RE.match(s)
    if not m:
        raise InvalidInput(f"invalid size: '{s}'")
    num = float(m.group(1)) if m.group(1).count(".") <= 1 else None
    if num is None:
        raise InvalidInput(f"invalid size: '{s}'")
    return int(num * _UNITS[(m.group(2) or "").lower()])


def flag_size(flag: str, value: str) -> int:
    try:
        return ram_in_bytes(value)
    except InvalidInput as e:
        raise InvalidInput(f'invalid argument "{value}" for "{flag}" flag: {e}') from None


def memory_swap(value: str) -> int:
    """``--memory-swap``: ``-1`` for unlimited, else a size."""
    if value == "-1":
        return -1
    return flag_size("--memory-swap", value)


def nano_cpus(value: str) -> int:
    """``--cpus 1.5`` -> 1500000000 (docker's NanoCPUs, exact rational arithmetic)."""
    try:
        r = Fraction(value) * 10**9
    except (ValueError, ZeroDivisionError):
        raise InvalidInput(
            f'invalid argument "{value}" for "--cpus" flag: failed to parse {value} as a rational number'
        ) from None
    if r.denominator != 1:
        raise InvalidInput(f'invalid argument "{value}" for "--cpus" flag: value is too precise')
    return int(r)


ULIMIT_NAMES = (
    "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
    "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack",
)  # fmt: skip


def parse_ulimit(value: str) -> dict[str, Any]:
    """``--ulimit name=soft[:hard]`` as go-units ``ParseUlimit``."""
    name, eq, limits = value.partition("=")
    if not eq:
        raise InvalidInput(
            f'invalid argument "{value}" for "--ulimit" flag: invalid ulimit argument: {value}'
        )
    if name not in ULIMIT_NAMES:
        raise InvalidInput(f'invalid argument "{value}" for "--ulimit" flag: invalid ulimit type: {name}')
    soft_s, colon, hard_s = limits.partition(":")
    try:
        soft = int(soft_s)
        hard = int(hard_s) if colon else soft
    except ValueError:
        raise InvalidInput(
            f'invalid argument "{value}" for "--ulimit" flag: invalid ulimit argument: {value}'
        ) from None
    if soft > hard:
        raise InvalidInput(
            f'invalid argument "{value}" for "--ulimit" flag: '
            f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
        )
    return {"Name": name, "Hard": hard, "Soft": soft}


def rlimits(ulimits: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """``WithRlimits`` (the daemon adds no default ulimits here)."""
    out = []
    for u in ulimits or []:
        name = str(u.get("Name") or "")
        if name not in ULIMIT_NAMES:
            raise InvalidInput(f"hostconfig Ulimits: invalid ulimit type: {name}")
        out.append({"type": "RLIMIT_" + name.upper(), "hard": int(u["Hard"]), "soft": int(u["Soft"])})
    return out


def verify(hc: dict[str, Any], *, update: bool = False) -> None:
    """dockerd's ``verifyPlatformContainerResources`` errors for the limits dockyard applies."""
    mem = int(hc.get("Memory") or 0)
    swap = int(hc.get("MemorySwap") or 0)
    if mem != 0 and mem < LINUX_MIN_MEMORY:
        raise InvalidInput("Minimum memory limit allowed is 6MB")
    if mem > 0 and swap > 0 and swap < mem:
        raise InvalidInput("Minimum memoryswap limit should be larger than memory limit, see usage")
    if mem == 0 and swap > 0 and not update:
        raise InvalidInput("You should always set the Memory limit when using Memoryswap limit, see usage")
    res = int(hc.get("MemoryReservation") or 0)
    if res > 0 and res < LINUX_MIN_MEMORY:
        raise InvalidInput("Minimum memory reservation allowed is 6MB")
    if mem > 0 and res > 0 and mem < res:
        raise InvalidInput("Minimum memory limit can not be less than memory reservation limit, see usage")
    sw = hc.get("MemorySwappiness")
    if sw is not None and int(sw) != -1 and not 0 <= int(sw) <= 100:
        raise InvalidInput(f"Invalid value: {sw}, valid memory swappiness range is 0-100")
    nano = int(hc.get("NanoCpus") or 0)
    period = int(hc.get("CpuPeriod") or 0)
    quota = int(hc.get("CpuQuota") or 0)
    if nano > 0 and period > 0:
        raise InvalidInput("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if nano > 0 and quota > 0:
        raise InvalidInput("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    ncpu = os.cpu_count() or 1
    if nano < 0 or nano > ncpu * 10**9:
        raise InvalidInput(
            f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
        )
    if period != 0 and not 1000 <= period <= 1000000:
        raise InvalidInput(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"
        )
    if 0 < quota < 1000:
        raise InvalidInput("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    if int(hc.get("CpuShares") or 0) < 0:
        raise InvalidInput("shares: invalid argument")
    if int(hc.get("ShmSize") or 0) < 0:
        raise InvalidInput("SHM size can not be less than 0")
    oom = int(hc.get("OomScoreAdj") or 0)
    if not -1000 <= oom <= 1000:
        raise InvalidInput(f"Invalid value {oom}, range for oom score adj is [-1000, 1000]")


def adapt(hc: dict[str, Any]) -> None:
    """dockerd's ``adaptContainerSettings`` for the limits: CpuShares clamped to [2, 262144],
    ``MemorySwap`` twice ``Memory`` when unset, the default shm size, PidsLimit <= 0 is none."""
    shares = int(hc.get("CpuShares") or 0)
    if shares > 0:
        hc["CpuShares"] = min(max(shares, 2), 262144)
    if int(hc.get("Memory") or 0) > 0 and int(hc.get("MemorySwap") or 0) == 0:
        hc["MemorySwap"] = int(hc["Memory"]) * 2
    if not hc.get("ShmSize"):
        hc["ShmSize"] = DEFAULT_SHM_SIZE
    pl = hc.get("PidsLimit")
    if pl is not None and int(pl) <= 0:
        hc["PidsLimit"] = None


def spec_resources(hc: dict[str, Any]) -> dict[str, Any]:
    """``WithResources``: memory, cpu, blockIO weight and pids, as dockerd puts them in the spec."""
    memory: dict[str, Any] = {}
    if int(hc.get("Memory") or 0) > 0:
        memory["limit"] = int(hc["Memory"])
    if int(hc.get("MemoryReservation") or 0) > 0:
        memory["reservation"] = int(hc["MemoryReservation"])
    if int(hc.get("MemorySwap") or 0) > 0:
        memory["swap"] = int(hc["MemorySwap"])
    if int(hc.get("KernelMemory") or 0) != 0:
        memory["kernel"] = int(hc["KernelMemory"])
    if int(hc.get("KernelMemoryTCP") or 0) != 0:
        memory["kernelTCP"] = int(hc["KernelMemoryTCP"])
    sw = hc.get("MemorySwappiness")
    if sw is not None and int(sw) != -1:
        memory["swappiness"] = int(sw)
    oom = hc.get("OomKillDisable")
    if oom is not None:
        memory["disableOOMKiller"] = bool(oom)
    cpu: dict[str, Any] = {"shares": int(hc.get("CpuShares") or 0)}
    nano = int(hc.get("NanoCpus") or 0)
    if nano > 0:
        cpu["quota"] = nano * 100000 // 10**9
        cpu["period"] = 100000
    if int(hc.get("CpuPeriod") or 0):
        cpu["period"] = int(hc["CpuPeriod"])
    if int(hc.get("CpuQuota") or 0):
        cpu["quota"] = int(hc["CpuQuota"])
    if int(hc.get("CpuRealtimePeriod") or 0):
        cpu["realtimePeriod"] = int(hc["CpuRealtimePeriod"])
    if int(hc.get("CpuRealtimeRuntime") or 0):
        cpu["realtimeRuntime"] = int(hc["CpuRealtimeRuntime"])
    if hc.get("CpusetCpus"):
        cpu["cpus"] = str(hc["CpusetCpus"])
    if hc.get("CpusetMems"):
        cpu["mems"] = str(hc["CpusetMems"])
    # runtime-spec field order: shares, quota, period, realtimeRuntime, realtimePeriod, cpus, mems
    order = ("shares", "quota", "period", "realtimeRuntime", "realtimePeriod", "cpus", "mems")
    cpu = {k: cpu[k] for k in order if k in cpu}
    morder = ("limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness", "disableOOMKiller")
    memory = {k: memory[k] for k in morder if k in memory}
    out: dict[str, Any] = {"memory": memory, "cpu": cpu}
    pl = hc.get("PidsLimit")
    if pl is not None:
        out["pids"] = {"limit": int(pl) if int(pl) > 0 else -1}
    out["blockIO"] = {"weight": int(hc.get("BlkioWeight") or 0)}
    return out
