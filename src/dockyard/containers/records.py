"""Container records: config.v2.json and hostconfig.json as dockerd keeps them, lookups by
name or ID prefix, and the runtime that runs them (the base of
:class:`~dockyard.containers.lifecycle.Containers`)."""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

from dockyard import gojson
from dockyard.containers import model
from dockyard.containers.runtime import Runtime, default_exec_root
from dockyard.digest import is_hex64
from dockyard.errors import DockyardError, NotFound
from dockyard.procs import pid_alive
from dockyard.store import Store
from dockyard.store.atomic import atomic_write, read_text

NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


def now() -> str:
    return gojson.format_rfc3339nano(time.time_ns())


class ContainerRecords:
    """The records of the containers of one store: config.v2.json, hostconfig.json, names."""

    def __init__(self, store: Store, *, exec_root: str | None = None, runtime: str | None = None) -> None:
        self.store = store
        self.exec_root = exec_root or default_exec_root(store.root)
        self.runtime = Runtime(
            runtime or os.environ.get("DOCKYARD_RUNTIME", "runc"), os.path.join(self.exec_root, "runtime")
        )

    # ------------------------------------------------------------------ records
    def dir(self, cid: str) -> str:
        return self.store.layout.container_dir(cid)

    def load(self, cid: str) -> dict[str, Any]:
        try:
            return model.load_json(model.config_path(self.dir(cid)))
        except FileNotFoundError:
            raise NotFound(f"No such container: {cid}") from None
        except ValueError as e:
            raise DockyardError(f"container {cid[:12]}: {e}") from None

    def hostconfig(self, cid: str) -> dict[str, Any]:
        try:
            return model.load_json(model.hostconfig_path(self.dir(cid)))
        except (FileNotFoundError, ValueError):
            return {}

    def save(self, cid: str, cfg: dict[str, Any]) -> None:
        atomic_write(model.config_path(self.dir(cid)), model.encode(cfg), 0o600)

    def update_state(self, cid: str, **state: Any) -> dict[str, Any]:
        cfg = self.load(cid)
        cfg["State"].update(state)
        self.save(cid, cfg)
        return cfg

    def ids(self) -> list[str]:
        return self.store.containers.ids()

    def all(self) -> list[dict[str, Any]]:
        out = []
        for cid in self.ids():
            try:
                out.append(self.load(cid))
            except DockyardError:
                continue
        return out

    def resolve(self, ref: str) -> str:
        """docker's lookup: full ID, exact name, then unique ID prefix."""
        if is_hex64(ref) and os.path.isdir(self.dir(ref)):
            return ref
        name = "/" + ref.lstrip("/")
        cfgs = self.all()
        for c in cfgs:
            if c.get("Name") == name:
                return str(c["ID"])
        hits = (
            [str(c["ID"]) for c in cfgs if str(c["ID"]).startswith(ref)]
            if re.match(r"^[a-f0-9]+$", ref)
            else []
        )
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise DockyardError(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def mount_id(self, cid: str) -> str:
        v = read_text(os.path.join(self.store.layout.mount_dir(cid), "mount-id")).strip()
        if not is_hex64(v):
            raise DockyardError(f"container {cid[:12]}: invalid mount-id")
        return v

    def is_running(self, cfg: dict[str, Any]) -> bool:
        st = cfg.get("State") or {}
        pid = int(st.get("Pid") or 0)
        return bool(st.get("Running")) and pid > 0 and pid_alive(pid)
