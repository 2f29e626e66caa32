"""containers/: what images and layers the containers of a data-root use (read side)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from dockyard.digest import is_hex64
from dockyard.procs import pid_alive
from dockyard.store.layout import Layout


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    name: str
    image_id: str
    running: bool
    config: dict[str, Any]


class ContainerStore:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def ids(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.layout.containers) if is_hex64(n))
        except FileNotFoundError:
            return []

    def get(self, container_id: str) -> ContainerRecord | None:
        path = os.path.join(self.layout.container_dir(container_id), "config.v2.json")
        try:
            with open(path, "rb") as f:
                cfg = json.load(f)
        except (OSError, ValueError):
            return None
        if not isinstance(cfg, dict):
            return None
        state = cfg.get("State") or {}
        running = bool(state.get("Running")) and pid_alive(int(state.get("Pid") or 0))
        return ContainerRecord(
            id=container_id,
            name=str(cfg.get("Name") or ""),
            image_id=str(cfg.get("Image") or ""),
            running=running,
            config=cfg,
        )

    def all(self) -> list[ContainerRecord]:
        out = []
        for cid in self.ids():
            c = self.get(cid)
            if c is not None:
                out.append(c)
        return out


@dataclass(frozen=True)
class MountRecord:
    """``layerdb/mounts/<id>/``: the container's RW layer, its ``-init`` layer and image top layer."""

    mount_id: str
    init_id: str
    parent: str | None


def read_mount_record(layout: Layout, container_id: str) -> MountRecord:
    d = layout.mount_dir(container_id)
    vals: dict[str, str] = {}
    for key in ("mount-id", "init-id", "parent"):
        try:
            with open(os.path.join(d, key), "rb") as f:
                vals[key] = f.read().decode("utf-8", "replace").strip()
        except FileNotFoundError:
            vals[key] = ""
    if not is_hex64(vals["mount-id"]):
        raise ValueError(f"{d}/mount-id is missing or invalid")
    return MountRecord(vals["mount-id"], vals["init-id"], vals["parent"] or None)
