"""The OCI runtime (runc, or crun) and where its state lives.

dockyard keeps per-container runtime state outside the data-root, in an *exec-root* (like
dockerd's ``/var/run/docker``): ``<exec-root>/<id>/config.json`` (the bundle),
``<exec-root>/<id>/monitor`` (pid and start time of the process watching the container), and
runc's own state under ``<exec-root>/runtime``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass

from dockyard.errors import DockyardError


class RuntimeError_(DockyardError):
    pass


def default_exec_root(data_root: str) -> str:
    env = os.environ.get("DOCKYARD_EXEC_ROOT")
    if env:
        return env
    h = hashlib.sha256(os.path.abspath(data_root).encode()).hexdigest()[:12]
    return os.path.join("/run/dockyard", h)


@dataclass
class Runtime:
    name: str
    state_root: str

    @property
    def binary(self) -> str:
        path = shutil.which(self.name)
        if path is None:
            raise RuntimeError_(f"OCI runtime {self.name!r} not found in PATH (install runc or crun)")
        return path

    def cmd(self, *args: str) -> list[str]:
        return [self.binary, "--root", self.state_root, *args]

    def state(self, cid: str) -> dict[str, object] | None:
        p = subprocess.run(self.cmd("state", cid), capture_output=True)
        if p.returncode != 0:
            return None
        try:
            obj = json.loads(p.stdout)
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None

    def kill(self, cid: str, sig: str = "KILL", *, all_: bool = False) -> bool:
        args = ["kill"] + (["--all"] if all_ else []) + [cid, sig]
        return subprocess.run(self.cmd(*args), capture_output=True).returncode == 0

    def delete(self, cid: str, *, force: bool = True) -> None:
        args = ["delete"] + (["--force"] if force else []) + [cid]
        subprocess.run(self.cmd(*args), capture_output=True)
