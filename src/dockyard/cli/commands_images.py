"""Image commands: load, save, images, inspect, history, tag, rmi, import, explain."""

from __future__ import annotations

import sys

import click

from dockyard.cli.main import Context, cli, pass_ctx
from dockyard.cli.output import go_time_string, human_size, indented_json, since


def _progress_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


@cli.command()
@click.option(
    "-i",
    "--input",
    "input_path",
    metavar="PATH",
    help="Read from a tar archive (docker save, OCI layout tar, optionally compressed) or an OCI layout dir, instead of STDIN.",
)
@click.option("-q", "--quiet", is_flag=True, help="Suppress the load output.")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Platform to load from a multi-platform index.")
@pass_ctx
def load(ctx: Context, input_path: str | None, quiet: bool, platform: str | None) -> None:
    """Load images from a docker-save archive or an OCI image layout."""
    from dockyard.cli.progress import LayerProgress
    from dockyard.destinations.store import load_images
    from dockyard.image.platform import parse_platform
    from dockyard.sources import open_input
    from dockyard.store.atomic import makedirs

    store = ctx.store
    plat = parse_platform(platform) if platform else None
    with store.write_lock():
        makedirs(store.layout.tmp, 0o700)
        with (
            open_input(input_path, spool_dir=store.layout.tmp, platform=plat) as images,
            LayerProgress(enabled=_progress_enabled(quiet), verb="Loading layer") as prog,
        ):
            loaded = load_images(store, images, on_layer_progress=prog.update)
    if quiet:
        return
    for li in loaded:
        for ref, old in li.renamed:
            click.echo(
                f"The image {ref.familiar_string()} already exists, renaming the old one with ID {old} to empty string"
            )
        if li.names:
            for ref in li.names:
                click.echo(f"Loaded image: {ref.familiar_string()}")
        else:
            click.echo(f"Loaded image ID: {li.image_id}")


@cli.command()
@click.argument("repository", required=False)
@click.option(
    "-a", "--all", "all_", is_flag=True, help="Show all images (default hides intermediate images)."
)
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("--digests", is_flag=True, help="Show digests.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("--format", "fmt", metavar="FORMAT", help="Go template, 'table ...' or 'json'.")
@pass_ctx
def images(
    ctx: Context,
    repository: str | None,
    all_: bool,
    quiet: bool,
    digests: bool,
    no_trunc: bool,
    fmt: str | None,
) -> None:
    """List images."""
    from dockyard.engine.images import list_images
    from dockyard.image.reference import parse_reference

    rows: list[dict[str, str]] = []
    want_repo = None
    want_tag = None
    if repository:
        wanted = parse_reference(repository)
        want_repo, want_tag = wanted.familiar_name, wanted.tag
    seen_ids: list[str] = []
    for s in list_images(ctx.store, all=all_):
        image_id = s.id if no_trunc else s.id[7:19]
        entries: list[tuple[str, str, str]] = []
        by_repo_digest: dict[str, str] = {}
        for d in s.repo_digests:
            name, _, dg = d.partition("@")
            by_repo_digest.setdefault(name, dg)
        if s.repo_tags:
            for t in s.repo_tags:
                name, _, tag = t.rpartition(":")
                entries.append((name, tag, by_repo_digest.get(name, "<none>")))
        elif s.repo_digests:
            for d in s.repo_digests:
                name, _, dg = d.partition("@")
                entries.append((name, "<none>", dg))
        else:
            entries.append(("<none>", "<none>", "<none>"))
        for repo, tag, dg in entries:
            if want_repo is not None and (repo != want_repo or (want_tag and tag != want_tag)):
                continue
            rows.append(
                {
                    "Containers": "N/A",
                    "CreatedAt": go_time_string(s.created_ns),
                    "CreatedSince": since(s.created_ns),
                    "Digest": dg,
                    "ID": image_id,
                    "Repository": repo,
                    "SharedSize": "N/A",
                    "Size": human_size(s.size),
                    "Tag": tag,
                    "UniqueSize": "N/A",
                    "VirtualSize": human_size(s.size, 4),  # docker/cli: HumanSize (4 digits)
                }
            )
            seen_ids.append(image_id)  # docker prints one ID per row, repeats included
    if quiet:
        for i in seen_ids:
            click.echo(i)
        return
    from dockyard.cli.formatter import row as go_row
    from dockyard.cli.formatter import write_rows

    if not fmt or fmt == "table":
        fmt = "table {{.Repository}}\t{{.Tag}}\t" + ("{{.Digest}}\t" if digests else "")
        fmt += "{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    write_rows(fmt, [go_row("*formatter.imageContext", r) for r in rows], IMAGE_HEADER)


IMAGE_HEADER = {
    "ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
    "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE", "Containers": "CONTAINERS",
    "VirtualSize": "VIRTUAL SIZE", "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE",
}
HISTORY_HEADER = {
    "ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY",
    "Size": "SIZE", "Comment": "COMMENT",
}


@cli.command("inspect")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", help="Format output using a custom template (Go text/template).")
@click.option("--type", "type_", type=click.Choice(["container", "image"]), help="Only this kind of object.")
@pass_ctx
def inspect_cmd(ctx: Context, names: tuple[str, ...], fmt: str | None, type_: str | None) -> None:
    """Display detailed information on containers or images (containers first, as docker)."""
    from dockyard.containers.lifecycle import Containers
    from dockyard.engine.containers import inspect_container
    from dockyard.engine.images import inspect_image
    from dockyard.errors import NotFound

    out = []
    missing = []
    mgr = Containers(ctx.store, exec_root=ctx.exec_root, runtime=ctx.runtime)
    for n in names:
        if type_ in (None, "container"):
            try:
                out.append(inspect_container(mgr, mgr.resolve(n)))
                continue
            except NotFound:
                if type_ == "container":
                    missing.append(n)
                    continue
        try:
            out.append(inspect_image(ctx.store, ctx.store.resolve_image(n)))
        except NotFound:
            missing.append(n)
    if fmt:
        from dockyard.cli.formatter import inspect_format

        inspect_format(fmt, out)
    else:
        indented_json(out)
    if missing:
        for n in missing[:-1]:
            click.echo(f"Error: No such object: {n}", err=True)
        raise NotFound(f"No such object: {missing[-1]}")


@cli.command()
@click.argument("name")
@click.option(
    "-H", "--human/--no-human", default=True, help="Print sizes and dates in human readable format."
)
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("--format", "fmt", help="Go template, 'table ...' or 'json'.")
@pass_ctx
def history(ctx: Context, name: str, human: bool, no_trunc: bool, quiet: bool, fmt: str | None) -> None:
    """Show the history of an image."""
    from dockyard import gojson
    from dockyard.engine.images import history as image_history

    items = image_history(ctx.store, ctx.store.resolve_image(name))
    rows = []
    for it in items:
        iid = it.id if (no_trunc or it.id == "<missing>") else it.id[7:19]
        created_by = it.created_by
        if not no_trunc:
            created_by = _ellipsis(created_by.replace("\t", " "), 45)
        ns = it.created * 1_000_000_000
        created_at = gojson.format_rfc3339nano(ns)  # docker/cli: RFC3339 (whole seconds)
        rows.append(
            {
                "Comment": it.comment,
                "CreatedAt": created_at,
                "CreatedBy": created_by,
                "CreatedSince": since(ns) if human else created_at,
                "ID": iid,
                "Size": human_size(it.size) if human else str(it.size),
            }
        )
    if quiet:
        for r in rows:
            click.echo(r["ID"])
        return
    from dockyard.cli.formatter import row as go_row
    from dockyard.cli.formatter import write_rows

    if not fmt or fmt == "table":
        fmt = "table {{.ID}}\t" + ("{{.CreatedSince}}" if human else "{{.CreatedAt}}")
        fmt += "\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    write_rows(fmt, [go_row("*image.historyContext", r) for r in rows], HISTORY_HEADER)


def _ellipsis(s: str, n: int) -> str:
    """docker's stringutils.Ellipsis (on runes)."""
    if len(s) <= n:
        return s
    return s[: n - 1] + "…"


@cli.command()
@click.argument("source")
@click.argument("target")
@pass_ctx
def tag(ctx: Context, source: str, target: str) -> None:
    """Create a tag TARGET that refers to SOURCE."""
    from dockyard.engine.images import tag_image

    tag_image(ctx.store, source, target)


@cli.command()
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Force removal of the image.")
@click.option("--no-prune", is_flag=True, help="Do not delete untagged parents.")
@pass_ctx
def rmi(ctx: Context, names: tuple[str, ...], force: bool, no_prune: bool) -> None:
    """Remove one or more images."""
    from dockyard.engine.images import remove_images
    from dockyard.errors import DockyardError

    records, errors = remove_images(ctx.store, list(names), force=force, prune=not no_prune)
    for kind, value in records:
        click.echo(f"{kind}: {value}")
    if errors:
        for e in errors[:-1]:
            click.echo(f"Error: {e}", err=True)
        raise DockyardError(errors[-1])


@cli.command()
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_ctx
def explain(ctx: Context, name: str, fmt: str) -> None:
    """Show how an image's IDs relate (blob digest -> diffID -> chainID -> cache-id -> files), or a
    container's layers, mount options, files and mounts."""
    import json

    from dockyard.cli.explain import print_explain
    from dockyard.engine.images import explain as explain_image
    from dockyard.view.targets import find_container

    cid = find_container(ctx.store, name)
    if cid is not None:
        from dockyard.view.explain import explain_container, render

        cinfo = explain_container(ctx.store, cid)
        click.echo(json.dumps(cinfo, indent=2) if fmt == "json" else "\n".join(render(cinfo)))
        return
    info = explain_image(ctx.store, ctx.store.resolve_image(name))
    if fmt == "json":
        click.echo(json.dumps(info, indent=2))
        return
    print_explain(info, ctx.root)


@cli.command()
@click.argument("names", nargs=-1)
@click.option("-o", "--output", metavar="FILE", help="Write to a file, instead of STDOUT.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["docker", "oci"]),
    default="docker",
    show_default=True,
    help="docker: docker-save tar (Docker 20.10 layout); oci: OCI image layout tar.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option(
    "--all-intact",
    is_flag=True,
    help="Save every image whose layers verify (salvage a damaged data-root); damaged ones are skipped.",
)
@pass_ctx
def save(
    ctx: Context, names: tuple[str, ...], output: str | None, fmt: str, quiet: bool, all_intact: bool
) -> None:
    """Save one or more images to a tar archive (streamed to STDOUT by default)."""
    from dockyard.cli.progress import LayerProgress
    from dockyard.engine.transfer import save as save_images

    if not names and not all_intact:
        raise click.UsageError("requires at least 1 image name (or --all-intact)")
    with LayerProgress(
        enabled=_progress_enabled(quiet) and output not in (None, "-"), verb="Saving layer"
    ) as prog:
        save_images(
            ctx.store,
            list(names),
            output,
            fmt=fmt,
            progress=prog.update,
            all_intact=all_intact,
            warn=lambda m: click.echo(f"warning: {m}", err=True),
        )


@cli.command("import")
@click.argument("source")
@click.argument("repository", required=False)
@click.option(
    "-c", "--change", "changes", multiple=True, help="Apply a Dockerfile instruction to the created image."
)
@click.option("-m", "--message", default="", help="Set commit message for imported image.")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Set platform of the imported image.")
@pass_ctx
def import_cmd(
    ctx: Context,
    source: str,
    repository: str | None,
    changes: tuple[str, ...],
    message: str,
    platform: str | None,
) -> None:
    """Import the contents from a tarball (or - for STDIN) to create a filesystem image."""
    from dockyard.engine.transfer import import_image

    image_id = import_image(
        ctx.store, source, repository, changes=list(changes), message=message, platform=platform
    )
    click.echo(image_id)
