"""``update``: docker's flags and output (each container named, one per line)."""

from __future__ import annotations

from typing import Any

import click

from dockyard.cli.main import Context, cli, pass_ctx


@cli.command()
@click.option("-m", "--memory", help="Memory limit.")
@click.option(
    "--memory-swap",
    "memory_swap",
    help="Swap limit equal to memory plus swap: '-1' to enable unlimited swap.",
)
@click.option("--memory-reservation", "memory_reservation", help="Memory soft limit.")
@click.option("--cpus", help="Number of CPUs.")
@click.option("-c", "--cpu-shares", "cpu_shares", type=int, help="CPU shares (relative weight).")
@click.option(
    "--cpu-period", "cpu_period", type=int, help="Limit CPU CFS (Completely Fair Scheduler) period."
)
@click.option("--cpu-quota", "cpu_quota", type=int, help="Limit CPU CFS (Completely Fair Scheduler) quota.")
@click.option("--cpuset-cpus", "cpuset_cpus", help="CPUs in which to allow execution (0-3, 0,1).")
@click.option("--cpuset-mems", "cpuset_mems", help="MEMs in which to allow execution (0-3, 0,1).")
@click.option(
    "--pids-limit", "pids_limit", type=int, help="Tune container pids limit (set -1 for unlimited)."
)
@click.argument("containers", nargs=-1, required=True)
@pass_ctx
def update(ctx: Context, /, containers: tuple[str, ...], **kw: Any) -> None:
    """Update configuration of one or more containers."""
    from dockyard.containers import resources
    from dockyard.containers.lifecycle import Containers
    from dockyard.containers.update import update as update_container

    new: dict[str, Any] = {}
    if kw["memory"] is not None:
        new["Memory"] = resources.flag_size("-m, --memory", kw["memory"])
    if kw["memory_swap"] is not None:
        new["MemorySwap"] = resources.memory_swap(kw["memory_swap"])
    if kw["memory_reservation"] is not None:
        new["MemoryReservation"] = resources.flag_size("--memory-reservation", kw["memory_reservation"])
    if kw["cpus"] is not None:
        new["NanoCpus"] = resources.nano_cpus(kw["cpus"])
    for flag, field in (("cpu_shares", "CpuShares"), ("cpu_period", "CpuPeriod"), ("cpu_quota", "CpuQuota"),
                        ("cpuset_cpus", "CpusetCpus"), ("cpuset_mems", "CpusetMems"), ("pids_limit", "PidsLimit")):  # fmt: skip
        if kw[flag] is not None:
            new[field] = kw[flag]
    if not new:
        raise click.UsageError("you must provide one or more flags when using this command")
    mgr = Containers(ctx.store, exec_root=ctx.exec_root, runtime=ctx.runtime)
    failed = []
    for ref in containers:
        try:
            update_container(mgr, ref, new)
        except Exception as e:  # docker goes on with the others, then fails
            from dockyard.errors import DockyardError

            if not isinstance(e, DockyardError):
                raise
            failed.append(str(e))
            continue
        click.echo(ref)
    if failed:
        from dockyard.errors import DockyardError

        raise DockyardError("\n".join(failed))
