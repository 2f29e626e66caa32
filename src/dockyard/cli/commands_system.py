"""Integrity and housekeeping: fsck (check, repair), system df, prune."""

from __future__ import annotations

import json
import sys

import click

from dockyard.cli.main import Context, cli, pass_ctx


def _print_report(report: object, fmt: str, *, title: str = "") -> None:
    from dockyard.ops.fsck import ERROR, Report

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
        sev = "ERROR  " if f.severity == ERROR else "warning"
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
    from dockyard.errors import StoreBusy
    from dockyard.ops.fsck import fsck as run_fsck
    from dockyard.ops.fsck import repair as run_repair

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
