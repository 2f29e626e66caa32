"""`dockyard explain CONTAINER`: the overlay options it shows are the ones /proc/mounts shows for the running
container's rootfs."""
from __future__ import annotations

import json
import os

from conftest import FIXTURES, run_dy, umount_below
from containerlib import wait_for


def _proc_mount_options(merged: str) -> str | None:
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 3 and parts[1] == merged and parts[2] == "overlay":
                opts = parts[3].split(",")
                keep = [o for o in opts if o.startswith(("lowerdir=", "upperdir=", "workdir="))]
                return ",".join(keep)
    return None


def test_explain_lowerdir_equals_proc_mounts(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    name = "view-explain-%d" % os.getpid()
    try:
        run_dy("load", "-i", FIXTURES / "docker-save" / "fx-edge.docker.tar", root=root)
        run_dy("run", "-d", "--name", name, "fx-edge:1", "sleep", "300", root=root)
        info = json.loads(run_dy("explain", "--format", "json", name, root=root).stdout)
        merged = os.path.join(info["rw_layer"]["dir"], "merged")
        assert wait_for(lambda: _proc_mount_options(merged) is not None, timeout=60), "rootfs never mounted"
        assert info["running"] is True
        assert info["mount_options"] == _proc_mount_options(merged)
        assert [lw["index"] for lw in info["lowers"] if "index" in lw] == list(range(10, -1, -1))
    finally:
        run_dy("rm", "-f", name, root=root, check=False)
        umount_below(root)
