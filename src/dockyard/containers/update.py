"""``update``: change a container's limits, as dockerd's ``ContainerUpdate`` does.

The new values are merged into hostconfig.json with dockerd's rules (``UpdateContainer``: a field
given as 0 is left as it was; a memory limit above the recorded swap limit needs a new swap
limit) and written atomically under the store's write lock; a running container gets them at once
through ``runc update --resources -`` in its cgroup.
"""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING, Any

from dockyard.containers import model, resources
from dockyard.errors import Conflict, DockyardError, InvalidInput
from dockyard.store.atomic import atomic_write

if TYPE_CHECKING:
    from dockyard.containers.lifecycle import Containers

UPDATABLE = ("CpuShares", "NanoCpus", "CpuPeriod", "CpuQuota", "CpusetCpus", "CpusetMems", "Memory", "MemorySwap",
             "MemoryReservation", "PidsLimit")  # fmt: skip


def merge(hc: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(hc)
    if new.get("NanoCpus") and int(out.get("CpuQuota") or 0) > 0:
        raise Conflict("Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set")
    if new.get("CpuQuota") and int(out.get("NanoCpus") or 0) > 0:
        raise Conflict("Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set")
    mem = int(new.get("Memory") or 0)
    if mem:
        cur_swap = int(out.get("MemorySwap") or 0)
        if cur_swap > 0 and mem > cur_swap and not new.get("MemorySwap"):
            raise Conflict(
                "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time"
            )
    for k in UPDATABLE:
        v = new.get(k)
        if k == "PidsLimit":
            if v is not None:
                out[k] = int(v) if int(v) > 0 else None
            continue
        if v:
            out[k] = v
    resources.verify(out, update=True)
    return out


def update(mgr: Containers, ref: str, new: dict[str, Any]) -> None:
    cid = mgr.resolve(ref)
    with mgr.store.write_lock():
        hc = mgr.hostconfig(cid)
        if not hc:
            raise DockyardError(f"container {cid[:12]}: no hostconfig.json")
        try:
            merged = merge(hc, new)
        except (InvalidInput, Conflict) as e:
            raise type(e)(f"Cannot update container {cid}: {e}") from None
        cfg = mgr.load(cid)
        if mgr.is_running(cfg):
            res = resources.spec_resources(merged)
            if merged.get("PidsLimit") is None and hc.get("PidsLimit") is not None:
                res["pids"] = {"limit": -1}
            p = subprocess.run(
                mgr.runtime.cmd("update", "--resources", "-", cid),
                input=json.dumps(res).encode(),
                capture_output=True,
            )
            if p.returncode != 0:
                msg = (p.stderr.decode("utf-8", "replace").strip().splitlines() or ["runc update failed"])[-1]
                raise DockyardError(f"Cannot update container {cid}: {msg}")
        atomic_write(model.hostconfig_path(mgr.dir(cid)), model.encode(merged), 0o644)
