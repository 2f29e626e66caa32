"""run/create flags for confinement and limits (docker's names and syntax).

``confine_options`` adds them to a click command; ``pop_confine_flags`` takes their values out
of the command's keyword arguments as a ``ConfineFlags`` for ``containers.hostflags``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # keep `create` fast
    from dockyard.containers.hostflags import ConfineFlags


_OPTIONS = [
    click.option("--privileged", is_flag=True, help="Give extended privileges to this container."),
    click.option("--cap-add", "cap_add", help="Add Linux capabilities.", multiple=True),
    click.option("--cap-drop", "cap_drop", help="Drop Linux capabilities.", multiple=True),
    click.option("--security-opt", "security_opt", help="Security Options.", multiple=True),
    click.option("--device", "devices", help="Add a host device to the container.", multiple=True),
    click.option("--device-cgroup-rule", "device_cgroup_rules", help="Add a rule to the cgroup allowed devices list.", multiple=True),
    click.option("--tmpfs", "tmpfs", help="Mount a tmpfs directory.", multiple=True),
    click.option("--mount", "mounts", help="Attach a filesystem mount to the container (type=tmpfs).", multiple=True),
    click.option("--shm-size", "shm_size", help="Size of /dev/shm."),
    click.option("--ulimit", "ulimits", help="Ulimit options.", multiple=True),
    click.option("--sysctl", "sysctls", help="Sysctl options.", multiple=True),
    click.option("--init", "init", is_flag=True, help="Run an init inside the container that forwards signals and reaps processes."),
    click.option("-m", "--memory", "memory", help="Memory limit."),
    click.option("--memory-swap", "memory_swap", help="Swap limit equal to memory plus swap: '-1' to enable unlimited swap."),
    click.option("--memory-reservation", "memory_reservation", help="Memory soft limit."),
    click.option("--cpus", "cpus", help="Number of CPUs."),
    click.option("-c", "--cpu-shares", "cpu_shares", type=int, help="CPU shares (relative weight)."),
    click.option("--pids-limit", "pids_limit", type=int, help="Tune container pids limit (set -1 for unlimited)."),
    click.option("--oom-score-adj", "oom_score_adj", type=int, help="Tune host's OOM preferences (-1000 to 1000)."),
    click.option("--cgroup-parent", "cgroup_parent", help="Optional parent cgroup for the container."),
]  # fmt: skip
_NAMES = [
    "privileged", "cap_add", "cap_drop", "security_opt", "devices", "device_cgroup_rules", "tmpfs", "mounts",
    "shm_size", "ulimits", "sysctls", "init", "memory", "memory_swap", "memory_reservation", "cpus", "cpu_shares",
    "pids_limit", "oom_score_adj", "cgroup_parent",
]  # fmt: skip


def confine_options(f: Any) -> Any:
    for o in reversed(_OPTIONS):
        f = o(f)
    return f


def pop_confine_flags(kw: dict[str, Any]) -> ConfineFlags:
    from dockyard.containers.hostflags import ConfineFlags

    vals = {n: kw.pop(n) for n in _NAMES if n in kw}
    for n, v in list(vals.items()):
        if isinstance(v, tuple):
            vals[n] = list(v)
    return ConfineFlags(**vals)
