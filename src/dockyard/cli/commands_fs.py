"""``dockyard fs``: the merged view of an image or a container, read in user space (no mount,
no lock, nothing written): ls, cat, stat, find, tar."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from dockyard.cli.main import Context, cli, pass_ctx


@cli.group()
def fs() -> None:
    """Look inside an image or a container without mounting it."""


@contextmanager
def _view(ctx: Context, target: str) -> Iterator[Any]:
    from dockyard.view.targets import open_view, resolve_target

    t = resolve_target(ctx.store, target)
    with open_view(ctx.store, t) as v:
        yield v
        for p in dict.fromkeys(v.problems):
            click.echo(f"Error: {p}", err=True)
        if v.problems:
            sys.exit(1)


def _path(p: str) -> bytes:
    return os.fsencode(p)


@fs.command("ls")
@click.option("-l", "long", is_flag=True, help="Long listing (mode, links, owner, size, mtime).")
@click.option("-R", "recursive", is_flag=True, help="List subdirectories recursively.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry (exact bytes, see docs).")
@click.argument("target")
@click.argument("path", default="/")
@pass_ctx
def fs_ls(ctx: Context, long: bool, recursive: bool, as_json: bool, target: str, path: str) -> None:
    """List a directory of the view."""
    from dockyard.view.listing import ls_line, record
    from dockyard.view.merged import escape

    with _view(ctx, target) as v:
        node = v.lookup(_path(path))
        out = sys.stdout
        if not node.is_dir:
            out.write((json.dumps(record(v, node)) if as_json else ls_line(v, node, long, node.path)) + "\n")
            return
        if recursive:
            for n, entering in v.walk(node):
                if not entering or n is node:
                    continue
                if as_json:
                    out.write(json.dumps(record(v, n)) + "\n")
                else:
                    out.write(
                        ("/" + escape(n.path) if not long else ls_line(v, n, True, b"/" + n.path)) + "\n"
                    )
            return
        for child in v.children(node):
            out.write((json.dumps(record(v, child)) if as_json else ls_line(v, child, long)) + "\n")
            v.release(child)


@fs.command("cat")
@click.argument("target")
@click.argument("path")
@pass_ctx
def fs_cat(ctx: Context, target: str, path: str) -> None:
    """Print a file of the view (symlinks resolved inside the view)."""
    with _view(ctx, target) as v:
        node = v.lookup(_path(path))
        fd = v.open_file(node)
        try:
            w = sys.stdout.buffer
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                w.write(chunk)
            w.flush()
        finally:
            os.close(fd)


@fs.command("stat")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option("-L", "follow", is_flag=True, help="Follow a final symlink (inside the view).")
@click.argument("target")
@click.argument("path")
@pass_ctx
def fs_stat(ctx: Context, as_json: bool, follow: bool, target: str, path: str) -> None:
    """Show one entry of the view and the layer it comes from."""
    from dockyard.view.listing import record

    with _view(ctx, target) as v:
        node = v.lookup(_path(path), follow=follow)
        rec = record(v, node)
        rec["xattrs"] = {k: val.hex() for k, val in v.xattrs(node).items()}
        if as_json:
            click.echo(json.dumps(rec))
            return
        from dockyard.view.merged import escape

        for k, val in rec.items():
            if k.endswith("_b64"):
                continue
            shown = escape(val.encode("utf-8", "surrogateescape")) if isinstance(val, str) else val
            click.echo(f"{k}: {shown}")


@fs.command("find")
@click.option("--name", "name_glob", metavar="GLOB", help="Base name matches this shell pattern.")
@click.option("--newer-than", metavar="TIME", help="Modified after TIME (RFC 3339, Unix time, or 2h/3d ago).")
@click.option("--type", "type_", type=click.Choice(["f", "d", "l", "c", "b", "p", "s"]), help="Entry type.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry.")
@click.argument("target")
@click.argument("path", default="/")
@pass_ctx
def fs_find(
    ctx: Context,
    name_glob: str | None,
    newer_than: str | None,
    type_: str | None,
    as_json: bool,
    target: str,
    path: str,
) -> None:
    """Find entries of the view."""
    from dockyard.errors import InvalidInput
    from dockyard.view.listing import matches, parse_time, record
    from dockyard.view.merged import escape

    try:
        since = parse_time(newer_than) if newer_than else None
    except ValueError as e:
        raise InvalidInput(str(e)) from None
    with _view(ctx, target) as v:
        top = v.lookup(_path(path))
        for n, entering in v.walk(top):
            if not entering or not matches(n, name_glob=name_glob, newer_than=since, type_=type_):
                continue
            sys.stdout.write((json.dumps(record(v, n)) if as_json else "/" + escape(n.path)) + "\n")


@fs.command("tar")
@click.option("-o", "--output", metavar="FILE", help="Write to a file instead of STDOUT.")
@click.argument("target")
@click.argument("path", default="/")
@pass_ctx
def fs_tar(ctx: Context, output: str | None, target: str, path: str) -> None:
    """The view (or a directory of it) as a tar: for a container, what docker export writes."""
    import tempfile

    from dockyard.errors import InvalidInput
    from dockyard.view.tar import write_view_tar

    with _view(ctx, target) as v:
        top = v.lookup(_path(path))
        if output is None or output == "-":
            if sys.stdout.isatty():
                raise InvalidInput(
                    "cowardly refusing to write a tar to a terminal. Use the -o flag or redirect"
                )
            write_view_tar(v, sys.stdout.buffer.write, top)
            sys.stdout.buffer.flush()
            return
        d = os.path.dirname(os.path.abspath(output))
        fd, tmp = tempfile.mkstemp(prefix=".dockyard-fs-tar-", dir=d)
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20) as f:
                write_view_tar(v, f.write, top)
            os.chmod(tmp, 0o644)
            os.rename(tmp, output)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
