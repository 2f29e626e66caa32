"""Registry commands: pull, push, login, logout (docker's output)."""

from __future__ import annotations

import sys

import click

from dockyard.cli.main import Context, cli, pass_ctx


def _insecure(values: tuple[str, ...]) -> tuple[str, ...]:
    import os

    env = os.environ.get("DOCKYARD_INSECURE_REGISTRIES", "")
    return tuple(values) + tuple(x for x in env.split(",") if x)


@cli.command()
@click.argument("name")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Platform to pull from a multi-platform image.")
@click.option("-a", "--all-tags", is_flag=True, help="Download all tagged images in the repository.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress verbose output.")
@click.option("--max-concurrent-downloads", type=int, default=3, show_default=True)
@click.option("--insecure-registry", "insecure", multiple=True, help="Allow plain HTTP to this registry.")
@pass_ctx
def pull(
    ctx: Context,
    name: str,
    platform: str | None,
    all_tags: bool,
    quiet: bool,
    max_concurrent_downloads: int,
    insecure: tuple[str, ...],
) -> None:
    """Download an image from a registry."""
    from dockyard.cli.progress import LayerProgress
    from dockyard.engine.distribution import pull as pull_image
    from dockyard.image.platform import parse_platform
    from dockyard.image.reference import parse_reference

    ref = parse_reference(name)
    names = [name]
    if all_tags:
        from dockyard.sources.registry import client_for

        c = client_for(ref.domain, _insecure(insecure))
        try:
            tags = c.list_tags(ref.path) if hasattr(c, "list_tags") else []
        finally:
            c.close()
        names = [f"{ref.name}:{t}" for t in tags] or [name]
    plat = parse_platform(platform) if platform else None
    tty = sys.stdout.isatty() and not quiet
    for n in names:
        r = parse_reference(n)
        if not quiet:
            head = r.familiar_string() if r.digest else (r.tag or "latest")
            click.echo(f"{head}: Pulling from {r.path}")

        def event(layer: str, msg: str) -> None:
            if not quiet and not tty:
                click.echo(f"{layer}: {msg}")

        with LayerProgress(enabled=tty, verb="Downloading") as prog:
            res = pull_image(
                ctx.store,
                n,
                platform=plat,
                insecure=_insecure(insecure),
                max_concurrent=max_concurrent_downloads,
                event=event,
                progress=prog.update,
            )
        if quiet:
            click.echo(str(res.ref))
            continue
        click.echo(f"Digest: {res.digest}")
        shown = res.ref.familiar_string()
        if res.new:
            click.echo(f"Status: Downloaded newer image for {shown}")
        else:
            click.echo(f"Status: Image is up to date for {shown}")
        click.echo(str(res.ref))


@cli.command()
@click.argument("name")
@click.option(
    "--compression",
    type=click.Choice(["gzip", "zstd"]),
    default="gzip",
    show_default=True,
    help="gzip: Docker schema2 manifest; zstd: OCI manifest with zstd layers.",
)
@click.option("-q", "--quiet", is_flag=True, help="Suppress verbose output.")
@click.option("--insecure-registry", "insecure", multiple=True, help="Allow plain HTTP to this registry.")
@pass_ctx
def push(ctx: Context, name: str, compression: str, quiet: bool, insecure: tuple[str, ...]) -> None:
    """Upload an image to a registry."""
    from dockyard.cli.progress import LayerProgress
    from dockyard.engine.distribution import push as push_image
    from dockyard.image.reference import parse_reference

    ref = parse_reference(name).tagged_or_latest()
    tty = sys.stdout.isatty() and not quiet
    if not quiet:
        click.echo(
            f"The push refers to repository [{ref.name if ref.domain != 'docker.io' else 'docker.io/' + ref.path}]"
        )
    seen: set[tuple[str, str]] = set()

    def event(layer: str, msg: str) -> None:
        if quiet or tty:
            return
        if msg in ("Preparing", "Pushing") and (layer, msg) in seen:
            return
        seen.add((layer, msg))
        click.echo(f"{layer}: {msg}")

    with LayerProgress(enabled=tty, verb="Pushing") as prog:
        res = push_image(
            ctx.store,
            name,
            compression=compression,
            insecure=_insecure(insecure),
            event=event,
            progress=prog.update,
        )
    if quiet:
        click.echo(str(ref))
        return
    click.echo(f"{ref.tag}: digest: {res.digest} size: {res.size}")


@cli.command()
@click.argument("server", required=False, default="docker.io")
@click.option("-u", "--username", help="Username.")
@click.option("-p", "--password", help="Password.")
@click.option("--password-stdin", is_flag=True, help="Take the password from stdin.")
@click.option("--insecure-registry", "insecure", multiple=True, help="Allow plain HTTP to this registry.")
def login(
    server: str, username: str | None, password: str | None, password_stdin: bool, insecure: tuple[str, ...]
) -> None:
    """Log in to a registry (stored in ~/.docker/config.json like docker login)."""
    from dockyard.errors import InvalidInput
    from dockyard.registry import login as do_login

    if password_stdin:
        if password:
            raise InvalidInput("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.read().rstrip("\n").rstrip("\r")
    if not username:
        if not sys.stdin.isatty():
            raise InvalidInput("username is required (-u) when stdin is not a terminal")
        username = click.prompt("Username")
    if password is None:
        if not sys.stdin.isatty():
            raise InvalidInput("password is required (-p or --password-stdin) when stdin is not a terminal")
        password = click.prompt("Password", hide_input=True)
    elif not password_stdin:
        click.echo("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", err=True)
    do_login(server, username, password, insecure_registries=_insecure(insecure))
    click.echo("Login Succeeded")


@cli.command()
@click.argument("server", required=False, default="docker.io")
def logout(server: str) -> None:
    """Log out from a registry."""
    from dockyard.registry import logout as do_logout

    if do_logout(server):
        click.echo(f"Removing login credentials for {server}")
    else:
        click.echo(f"Not logged in to {server}")
