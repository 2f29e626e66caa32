"""Integrity and housekeeping: fsck (check, repair), system df, prune."""

from __future__ import annotations

import json
import sys

import click

from dockyard.cli.main import Context, cli, pass_ctx


def _print_report(report: object, fmt: str, *, title: str = "") -> None:
    from dockyard.engine.health.fsck import ERROR, Report

    assert isinstance(report, Report)
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "data_root": report.root,
                    "clean": report.clean,
                    "images_checked": report.images_checked,
                    "layers_checked": report.layers_checked,
                    "findings": [f.as_json() for f in report.findings],
                    "damaged_images": report.damaged_images,
                },
                indent=2,
            )
        )
        return
    if title:
        click.echo(title)
    for f in report.findings:
        sev = "ERROR  " if f.severity == ERROR else ("info   " if f.severity == "info" else "warning")
        line = f"{sev} {f.path}: {f.message}"
        if f.repair:
            line += f" [repair: {f.repair}]"
        click.echo(line)
    errors = sum(1 for f in report.findings if f.severity == ERROR)
    warnings = len(report.findings) - errors
    repairable = sum(1 for f in report.findings if f.action is not None)
    if report.clean:
        click.echo(
            f"{report.root}: clean ({report.images_checked} images, {report.layers_checked} layers checked)"
        )
    else:
        click.echo(
            f"{report.root}: {errors} errors, {warnings} warnings; {repairable} repairable with --repair "
            f"({report.images_checked} images, {report.layers_checked} layers checked)"
        )
    for image_id, whys in sorted(report.damaged_images.items()):
        click.echo(f"damaged image {image_id}: {'; '.join(dict.fromkeys(whys))}")


@cli.command()
@click.option(
    "--deep", is_flag=True, help="Also rebuild every layer through tar-split and check it against its diffID."
)
@click.option("--repair", is_flag=True, help="Repair what can be rebuilt without loss.")
@click.option("--dry-run", is_flag=True, help="With --repair: print the plan, change nothing.")
@click.option("-y", "--yes", is_flag=True, help="With --repair: also delete orphans without asking.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_ctx
def fsck(ctx: Context, deep: bool, repair: bool, dry_run: bool, yes: bool, fmt: str) -> None:
    """Check the data-root (dockyard's or Docker's) for damage; exit 1 when problems are found."""
    from dockyard.cli.progress import LayerProgress
    from dockyard.engine.health.fsck import fsck as run_fsck
    from dockyard.engine.health.fsck import repair as run_repair
    from dockyard.errors import StoreBusy

    store = ctx.store
    if repair and not dry_run:
        owner = store.dockerd_owner()
        if owner:
            raise StoreBusy(f"refusing to repair {store.root}: {owner}; stop it first")
    with LayerProgress(
        enabled=deep and fmt != "json" and sys.stderr.isatty(), verb="checking layers"
    ) as prog:
        report = run_fsck(store, deep=deep, progress=prog.update)
    if not repair:
        _print_report(report, fmt)
        sys.exit(0 if report.clean else 1)
    plan = [f for f in report.findings if f.action is not None]
    if dry_run:
        for f in plan:
            extra = " (asks first; --yes)" if f.needs_confirmation else ""
            click.echo(f"would repair {f.path}: {f.repair}{extra}")
        _print_report(report, fmt, title="")
        sys.exit(0 if report.clean else 1)
    confirmed = yes
    if not yes and any(f.needs_confirmation for f in plan) and sys.stdin.isatty():
        confirmed = click.confirm(
            f"Delete {sum(f.needs_confirmation for f in plan)} orphaned item(s)?", default=False
        )
    done = run_repair(store, report, include_confirmed=confirmed)
    for f in done:
        click.echo(f"repaired {f.path}: {f.repair}")
    after = run_fsck(store, deep=deep)
    _print_report(after, fmt, title="after repair:" if fmt != "json" else "")
    sys.exit(0 if after.clean else 1)


def _confirm(message: str, force: bool) -> None:
    if force:
        return
    if not sys.stdin.isatty():
        raise click.ClickException(f"{message.splitlines()[0]} Use -f/--force to run without a prompt.")
    if not click.confirm(message + " Are you sure you want to continue?", default=False):
        raise click.Abort()


def _print_prune(result: object, *, what: str) -> None:
    from dockyard.cli.output import human_size
    from dockyard.engine.health.housekeeping import PruneResult

    assert isinstance(result, PruneResult)
    if result.containers:
        click.echo("Deleted Containers:")
        for c in result.containers:
            click.echo(c)
        click.echo("")
    if result.records:
        click.echo("Deleted Images:")
        for kind, value in result.records:
            click.echo(f"{kind.lower()}: {value}")
        click.echo("")
    if result.orphans:
        click.echo("Removed orphans (left behind by interrupted operations):")
        for o in result.orphans:
            click.echo(o)
        click.echo("")
    click.echo(f"Total reclaimed space: {human_size(result.reclaimed)}")


@cli.group()
def system() -> None:
    """Manage the data-root as a whole."""


@system.command("df")
@click.option("-v", "--verbose", is_flag=True, help="Show detailed information on space usage.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_ctx
def system_df(ctx: Context, verbose: bool, fmt: str) -> None:
    """Show disk usage (each layer counted once, however many images share it)."""
    from dockyard.cli.output import human_size, since, table
    from dockyard.engine.health.housekeeping import disk_usage

    du = disk_usage(ctx.store)
    active = sum(1 for i in du.images if i.containers)
    cont_size = sum(c.size for c in du.containers)
    cont_reclaim = sum(c.size for c in du.containers if not c.running)

    def pct(part: int, whole: int) -> str:
        return f"{human_size(part)} ({(100 * part // whole) if whole else 0}%)"

    rows = [
        {
            "Type": "Images",
            "TotalCount": str(len(du.images)),
            "Active": str(active),
            "Size": human_size(du.layers_size),
            "Reclaimable": pct(du.reclaimable_images, du.layers_size),
        },
        {
            "Type": "Containers",
            "TotalCount": str(len(du.containers)),
            "Active": str(sum(1 for c in du.containers if c.running)),
            "Size": human_size(cont_size),
            "Reclaimable": pct(cont_reclaim, cont_size),
        },
        {
            "Type": "Local Volumes",
            "TotalCount": str(du.volumes),
            "Active": "0",
            "Size": human_size(du.volumes_size),
            "Reclaimable": pct(du.volumes_size, du.volumes_size),
        },
        {"Type": "Build Cache", "TotalCount": "0", "Active": "0", "Size": "0B", "Reclaimable": "0B"},
    ]
    if du.partial_pulls:  # dockyard's extension: blobs of interrupted pulls (tmp/dockyard-pull/)
        rows.append(
            {
                "Type": "Partial Pulls",
                "TotalCount": str(du.partial_pulls),
                "Active": "0",
                "Size": human_size(du.partial_pulls_size),
                "Reclaimable": pct(du.partial_pulls_size, du.partial_pulls_size),
            }
        )
    if fmt == "json":
        from dockyard.cli.output import json_line

        for r in rows:
            json_line(r)
        return
    if not verbose:
        table(
            ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
            [[r["Type"], r["TotalCount"], r["Active"], r["Size"], r["Reclaimable"]] for r in rows],
        )
        return
    click.echo("Images space usage:\n")
    img_rows = []
    for i in du.images:
        tags = i.repo_tags or ["<none>:<none>"]
        for t in tags:
            repo, _, tag = t.rpartition(":")
            img_rows.append(
                [
                    repo,
                    tag,
                    i.image_id[7:19],
                    since(i.created_ns),
                    human_size(i.size),
                    human_size(i.shared),
                    human_size(i.unique),
                    str(i.containers),
                ]
            )
    table(
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS"],
        img_rows,
    )
    click.echo("\nContainers space usage:\n")
    table(
        ["CONTAINER ID", "IMAGE", "LOCAL VOLUMES", "SIZE", "STATUS", "NAMES"],
        [
            [c.id[:12], c.image, "0", human_size(c.size), "Up" if c.running else "Exited", c.name]
            for c in du.containers
        ],
    )
    click.echo(f"\nTotal layer bytes (shared counted once): {human_size(du.layers_size)}")


@system.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused images, not just dangling ones.")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@pass_ctx
def system_prune(ctx: Context, all_: bool, force: bool) -> None:
    """Remove stopped containers, dangling (or unused) images and orphaned data."""
    from dockyard.engine.health.housekeeping import prune_containers, prune_images

    what = "all images without at least one container associated to them" if all_ else "all dangling images"
    _confirm(
        f"WARNING! This will remove:\n  - all stopped containers\n  - {what}\n  - orphaned layers and directories\n",
        force,
    )
    c = prune_containers(ctx.store)
    r = prune_images(ctx.store, all=all_)
    r.containers = c.containers
    r.reclaimed += c.reclaimed
    _print_prune(r, what="system")


@cli.group()
def image() -> None:
    """Manage images."""


@image.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused images, not just dangling ones.")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@pass_ctx
def image_prune(ctx: Context, all_: bool, force: bool) -> None:
    """Remove unused images (and orphaned layers and directories)."""
    from dockyard.engine.health.housekeeping import prune_images

    msg = (
        "WARNING! This will remove all images without at least one container associated to them."
        if all_
        else "WARNING! This will remove all dangling images."
    )
    _confirm(msg, force)
    _print_prune(prune_images(ctx.store, all=all_), what="image")


@cli.group()
def container() -> None:
    """Manage containers."""


@container.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@pass_ctx
def container_prune(ctx: Context, force: bool) -> None:
    """Remove all stopped containers."""
    from dockyard.engine.health.housekeeping import prune_containers

    _confirm("WARNING! This will remove all stopped containers.", force)
    _print_prune(prune_containers(ctx.store), what="container")
