"""Container commands: create, run, start, stop, kill, wait, rm, ps, logs, diff, commit, export, cp,
mount, umount. Container inspect is served by ``dockyard inspect`` (containers first, as docker)."""

from __future__ import annotations

import sys
from typing import Any

import click

from dockyard.cli.flags_confine import confine_options, pop_confine_flags
from dockyard.cli.main import Context, cli, pass_ctx


def _mgr(ctx: Context) -> Any:
    from dockyard.containers.lifecycle import Containers

    return Containers(ctx.store, exec_root=ctx.exec_root, runtime=ctx.runtime)


def _run_options(f: Any) -> Any:
    opts = [
        click.option("--name", help="Assign a name to the container."),
        click.option("-e", "--env", "env", multiple=True, help="Set environment variables."),
        click.option(
            "--env-file", multiple=True, type=click.Path(), help="Read in a file of environment variables."
        ),
        click.option("-w", "--workdir", help="Working directory inside the container."),
        click.option("-u", "--user", help="Username or UID (format: <name|uid>[:<group|gid>])."),
        click.option("--entrypoint", help="Overwrite the default ENTRYPOINT of the image."),
        click.option("-h", "--hostname", help="Container host name."),
        click.option(
            "-v", "--volume", "volumes", multiple=True, help="Bind mount a volume (HOST:CONTAINER[:ro])."
        ),
        click.option("--network", "--net", default="none", show_default=True, help="none or host."),
        click.option("--read-only", is_flag=True, help="Mount the container's root filesystem as read only."),
        click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY."),
        click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open even if not attached."),
        click.option("-l", "--label", "labels", multiple=True, help="Set meta data on a container."),
        click.option(
            "--rm", "auto_remove", is_flag=True, help="Automatically remove the container when it exits."
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _create_options(image: str, command: tuple[str, ...], kw: dict[str, Any]) -> Any:
    from dockyard.containers.lifecycle import CreateOptions
    from dockyard.errors import InvalidInput

    env: list[str] = []
    for path in kw["env_file"]:
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        env.append(line)
        except OSError as e:
            raise InvalidInput(f"open {path}: {e.strerror}") from None
    env += list(kw["env"])  # docker reads the env files first; -e wins
    import os

    env = [e if "=" in e else (f"{e}={os.environ[e]}" if e in os.environ else e) for e in env]
    labels = {}
    for lab in kw["labels"]:
        k, _, v = lab.partition("=")
        labels[k] = v
    ep = kw["entrypoint"]
    return CreateOptions(
        name=kw["name"],
        cmd=list(command) or None,
        entrypoint=None if ep is None else ([ep] if ep else [""]),
        env=env,
        workdir=kw["workdir"],
        user=kw["user"],
        hostname=kw["hostname"],
        binds=list(kw["volumes"]),
        network=kw["network"],
        tty=kw["tty"],
        interactive=kw["interactive"],
        auto_remove=kw["auto_remove"],
        read_only=kw["read_only"],
        labels=labels,
        image_name=image,
        confine=pop_confine_flags(kw),
    )


@cli.command(context_settings={"allow_interspersed_args": False, "help_option_names": ["--help"]})
@_run_options
@confine_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def create(ctx: Context, /, image: str, command: tuple[str, ...], **kw: Any) -> None:
    """Create a new container."""
    mgr = _mgr(ctx)
    cid = mgr.create(image, _create_options(image, command, kw))
    click.echo(cid)


@cli.command(context_settings={"allow_interspersed_args": False, "help_option_names": ["--help"]})
@_run_options
@confine_options
@click.option("-d", "--detach", is_flag=True, help="Run container in background and print container ID.")
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def run(ctx: Context, /, image: str, command: tuple[str, ...], detach: bool, **kw: Any) -> None:
    """Run a command in a new container (exit status = the container's)."""
    from dockyard.engine.containers import run as run_container

    mgr = _mgr(ctx)
    opts = _create_options(image, command, kw)
    cid, code = run_container(mgr, image, opts, detach=detach)
    if detach:
        click.echo(cid)
        return
    sys.exit(code or 0)


@cli.command()
@click.argument("containers", nargs=-1, required=True)
@click.option("-a", "--attach", is_flag=True, help="Attach STDOUT/STDERR and forward signals.")
@click.option("-i", "--interactive", is_flag=True, help="Attach container's STDIN.")
@pass_ctx
def start(ctx: Context, containers: tuple[str, ...], attach: bool, interactive: bool) -> None:
    """Start one or more stopped containers."""
    from dockyard.engine.containers import start as start_container

    mgr = _mgr(ctx)
    code = 0
    for ref in containers:
        cid = mgr.resolve(ref)
        rc = start_container(mgr, cid, attach=attach, interactive=interactive)
        if attach:
            code = rc or 0
        else:
            click.echo(ref)
    if attach:
        sys.exit(code)


@cli.command()
@click.argument("containers", nargs=-1, required=True)
@click.option(
    "-t", "--time", "timeout", type=int, default=None, help="Seconds to wait for stop before killing it."
)
@pass_ctx
def stop(ctx: Context, containers: tuple[str, ...], timeout: int | None) -> None:
    """Stop one or more running containers."""
    mgr = _mgr(ctx)
    mgr.reap()
    for ref in containers:
        mgr.stop(mgr.resolve(ref), timeout)
        click.echo(ref)


@cli.command()
@click.argument("containers", nargs=-1, required=True)
@click.option("-s", "--signal", "sig", default="KILL", help="Signal to send to the container.")
@pass_ctx
def kill(ctx: Context, containers: tuple[str, ...], sig: str) -> None:
    """Kill one or more running containers."""
    from dockyard.containers.lifecycle import _signal_number

    mgr = _mgr(ctx)
    mgr.reap()
    for ref in containers:
        mgr.kill(mgr.resolve(ref), _signal_number(sig))
        click.echo(ref)


@cli.command("wait")
@click.argument("containers", nargs=-1, required=True)
@pass_ctx
def wait_cmd(ctx: Context, containers: tuple[str, ...]) -> None:
    """Block until one or more containers stop, then print their exit codes."""
    from dockyard.engine.containers import wait as wait_container

    mgr = _mgr(ctx)
    for ref in containers:
        click.echo(wait_container(mgr, mgr.resolve(ref)))


@cli.command()
@click.argument("containers", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Force the removal of a running container (uses SIGKILL).")
@click.option(
    "-v", "--volumes", is_flag=True, help="Remove anonymous volumes (none are created by dockyard)."
)
@pass_ctx
def rm(ctx: Context, containers: tuple[str, ...], force: bool, volumes: bool) -> None:
    """Remove one or more containers."""
    from dockyard.engine.containers import remove
    from dockyard.errors import DockyardError

    mgr = _mgr(ctx)
    errors = []
    for ref in containers:
        try:
            remove(mgr, mgr.resolve(ref), force=force)
            click.echo(ref)
        except DockyardError as err:
            errors.append(str(err))
    if errors:
        for msg in errors[:-1]:
            click.echo(f"Error: {msg}", err=True)
        raise DockyardError(errors[-1])


@cli.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers (default shows just running).")
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("--format", "fmt", help="Go template, 'table ...' or 'json'.")
@pass_ctx
def ps(ctx: Context, all_: bool, quiet: bool, no_trunc: bool, fmt: str | None) -> None:
    """List containers."""
    from dockyard import gojson
    from dockyard.cli.output import go_time_string, since
    from dockyard.engine.containers import status_of

    mgr = _mgr(ctx)
    mgr.reap()
    rows = []
    all_labels: list[dict[str, Any]] = []
    cfgs = sorted(mgr.all(), key=lambda c: str(c.get("Created", "")), reverse=True)
    for cfg in cfgs:
        running = mgr.is_running(cfg)
        if not all_ and not running:
            continue
        state, status = status_of(cfg, running)
        cid = str(cfg["ID"])
        # dockerd: Path + args, args with a space in single quotes; the CLI truncates, then Go-quotes
        args = [str(a) for a in cfg.get("Args") or []]
        command = str(cfg.get("Path", ""))
        if args:
            command += " " + " ".join(f"'{a}'" if " " in a else a for a in args)
        command_out = _go_quote(command if no_trunc else _ellipsis(command, 20))
        labels = cfg["Config"].get("Labels") or {}
        all_labels.append(labels)
        try:
            created_ns = gojson.parse_rfc3339(str(cfg.get("Created", "")))
        except ValueError:
            created_ns = 0
        nets = ",".join(sorted((cfg.get("NetworkSettings") or {}).get("Networks") or {}))
        rows.append(
            {
                "Command": command_out,
                "CreatedAt": go_time_string(created_ns),
                "ID": cid if no_trunc else cid[:12],
                "Image": str(cfg["Config"].get("Image") or cfg.get("Image", "")),
                "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
                "LocalVolumes": str(
                    sum(1 for m in (cfg.get("MountPoints") or {}).values() if m.get("Type") == "volume")
                ),
                "Mounts": ",".join(
                    sorted(
                        str(m.get("Name") or m.get("Source", ""))
                        for m in (cfg.get("MountPoints") or {}).values()
                    )
                ),
                "Names": str(cfg.get("Name", "")).lstrip("/"),
                "Networks": nets,
                "Ports": "",
                "RunningFor": since(created_ns),
                "Size": "",
                "State": state,
                "Status": status,
            }
        )
    if quiet:
        for r in rows:
            click.echo(r["ID"])
        return
    from dockyard.cli.formatter import row as go_row
    from dockyard.cli.formatter import write_rows

    if not fmt or fmt == "table":
        fmt = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
    objs = []
    for r, labels in zip(rows, all_labels, strict=True):
        objs.append(go_row("*formatter.ContainerContext", r,
                           {"Label": lambda name, lb=labels: str(lb.get(name, ""))}))
    write_rows(fmt, objs, PS_HEADER)


PS_HEADER = {
    "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Size": "SIZE",
    "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS", "LocalVolumes": "LOCAL VOLUMES",
    "Networks": "NETWORKS",
}


def _go_quote(s: str) -> str:
    """Go's strconv.Quote: printable runes kept, the rest escaped."""
    named = {
        '"': '\\"',
        "\\": "\\\\",
        "\n": "\\n",
        "\t": "\\t",
        "\r": "\\r",
        "\a": "\\a",
        "\b": "\\b",
        "\f": "\\f",
        "\v": "\\v",
    }
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in named:
            out.append(named[ch])
        elif o < 0x20 or o == 0x7F:
            out.append("\\x%02x" % o)
        elif 0xD800 <= o <= 0xDFFF:
            out.append("\\ufffd")
        elif o >= 0x80 and not ch.isprintable():
            out.append("\\u%04x" % o if o <= 0xFFFF else "\\U%08x" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _ellipsis(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


@cli.command()
@click.argument("container")
@click.option("-f", "--follow", is_flag=True, help="Follow log output.")
@click.option("-n", "--tail", default="all", help="Number of lines to show from the end of the logs.")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@pass_ctx
def logs(ctx: Context, container: str, follow: bool, tail: str, timestamps: bool) -> None:
    """Fetch the logs of a container."""
    from dockyard.engine.containers import logs as container_logs
    from dockyard.errors import InvalidInput

    mgr = _mgr(ctx)
    n: int | None = None
    if tail != "all":
        try:
            n = int(tail)
        except ValueError:
            raise InvalidInput(f"invalid value for --tail: {tail!r}") from None

    def out(stream: str, text: str) -> None:
        f = sys.stdout if stream == "stdout" else sys.stderr
        f.write(text)
        f.flush()

    container_logs(mgr, mgr.resolve(container), follow=follow, tail=n, timestamps=timestamps, out=out)


@cli.command()
@click.argument("container")
@pass_ctx
def diff(ctx: Context, container: str) -> None:
    """Inspect changes to files or directories on a container's filesystem (A/C/D)."""
    from dockyard.engine.containers import diff as container_diff

    mgr = _mgr(ctx)
    for ch in container_diff(mgr, mgr.resolve(container)):
        click.echo(f"{ch.kind} {ch.path}")


@cli.command()
@click.argument("container")
@click.argument("repository", required=False)
@click.option("-m", "--message", default="", help="Commit message.")
@click.option(
    "-a", "--author", default="", help='Author (e.g., "John Hannibal Smith <hannibal@a-team.com>").'
)
@click.option(
    "-c", "--change", "changes", multiple=True, help="Apply Dockerfile instruction to the created image."
)
@click.option("-p", "--pause/--no-pause", default=True, help="Pause container during commit.")
@pass_ctx
def commit(
    ctx: Context,
    container: str,
    repository: str | None,
    message: str,
    author: str,
    changes: tuple[str, ...],
    pause: bool,
) -> None:
    """Create a new image from a container's changes."""
    from dockyard.engine.containers import commit as commit_container

    mgr = _mgr(ctx)
    click.echo(
        commit_container(
            mgr,
            mgr.resolve(container),
            repository,
            message=message,
            author=author,
            changes=list(changes),
            pause=pause,
        )
    )


@cli.command()
@click.argument("container")
@click.option("-o", "--output", metavar="FILE", help="Write to a file, instead of STDOUT.")
@pass_ctx
def export(ctx: Context, container: str, output: str | None) -> None:
    """Export a container's filesystem as a tar archive."""
    import os
    import tempfile

    from dockyard.engine.containers import export as export_container
    from dockyard.errors import InvalidInput

    mgr = _mgr(ctx)
    cid = mgr.resolve(container)
    if output is None or output == "-":
        if sys.stdout.isatty():
            raise InvalidInput("cowardly refusing to save to a terminal. Use the -o flag or redirect")
        export_container(mgr, cid, sys.stdout.buffer.write)
        sys.stdout.buffer.flush()
        return
    d = os.path.dirname(os.path.abspath(output))
    fd, tmp = tempfile.mkstemp(prefix=".dockyard-export-", dir=d)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            export_container(mgr, cid, f.write)
        os.chmod(tmp, 0o644)
        os.rename(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@cli.command()
@click.argument("src")
@click.argument("dest")
@click.option("-a", "--archive", is_flag=True, help="Archive mode (copy all uid/gid information).")
@pass_ctx
def cp(ctx: Context, src: str, dest: str, archive: bool) -> None:
    """Copy files between a container and the local filesystem (CONTAINER:PATH HOSTPATH|-, or the reverse)."""
    import os

    from dockyard.engine.containers import copy_from, copy_to
    from dockyard.errors import InvalidInput, NotFound

    mgr = _mgr(ctx)
    if ":" in src and not os.path.exists(src):
        cref, _, path = src.partition(":")
        cid = mgr.resolve(cref)
        from dockyard.archive.fsutil import PathEscape

        try:
            if dest == "-":
                copy_from(mgr, cid, path, sys.stdout.buffer.write)
                sys.stdout.buffer.flush()
                return
            _extract_to_host(mgr, cid, path, dest, keep_owner=archive)
        except PathEscape as e:
            raise InvalidInput(f"cannot copy {path}: {e.reason.split(';')[0]} in the path") from None
        except FileNotFoundError:
            raise NotFound(f"Could not find the file {path} in container {cref}") from None
        return
    if ":" in dest:
        from dockyard.archive.fsutil import PathEscape

        cref, _, path = dest.partition(":")
        try:
            copy_to(mgr, mgr.resolve(cref), src, path)
        except PathEscape as e:
            raise InvalidInput(f"cannot copy to {path}: {e.reason.split(';')[0]} in the path") from None
        return
    raise InvalidInput("must specify at least one container source (CONTAINER:PATH)")


def _extract_to_host(mgr: Any, cid: str, path: str, dest: str, *, keep_owner: bool = False) -> None:
    """Unpack what the container holds at ``path`` to ``dest``: extracted into a private staging
    dir, made safe (:func:`dockyard.archive.hostwrite.sanitize`) and moved into place without
    following anything in the destination (:func:`dockyard.archive.hostwrite.place`)."""
    import os
    import shutil
    import tempfile

    from dockyard.archive.apply import apply_layer
    from dockyard.archive.hostwrite import place, sanitize
    from dockyard.engine.containers import copy_from
    from dockyard.errors import InvalidInput

    if os.path.isdir(dest):
        parent, name = dest, os.path.basename(os.path.normpath("/" + path)) or "root"
    else:
        if dest.endswith("/"):
            raise InvalidInput(f"destination directory {dest} does not exist")
        parent, name = os.path.dirname(os.path.abspath(dest)) or ".", os.path.basename(dest)
    if not os.path.isdir(parent):
        raise InvalidInput(f"destination directory {parent} does not exist")
    tmp = tempfile.mkdtemp(prefix=".dockyard-cp-", dir=parent)
    try:
        with tempfile.TemporaryFile(dir=tmp) as spool:
            copy_from(mgr, cid, path, spool.write)
            spool.seek(0)
            apply_layer(spool.read, tmp, None)
        tfd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            entries = sorted(os.listdir(tfd))
            if len(entries) != 1:
                raise InvalidInput(f"{path}: nothing to copy")
            sanitize(tfd, keep_owner=keep_owner)
            pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                place(
                    tfd,
                    os.fsencode(entries[0]),
                    pfd,
                    os.fsencode(name),
                    dst_path=os.path.join(parent, name),
                    extract_dir=parent,
                )
            finally:
                os.close(pfd)
        finally:
            os.close(tfd)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@cli.command()
@click.argument("container")
@pass_ctx
def mount(ctx: Context, container: str) -> None:
    """Mount a container's filesystem (overlay) and print where (for inspection)."""
    mgr = _mgr(ctx)
    cid = mgr.resolve(container)
    with ctx.store.write_lock():
        click.echo(ctx.store.driver.get(mgr.mount_id(cid)))


@cli.command()
@click.argument("container")
@pass_ctx
def umount(ctx: Context, container: str) -> None:
    """Unmount a container's filesystem mounted with ``mount`` (not while it runs)."""
    from dockyard.errors import Conflict

    mgr = _mgr(ctx)
    cid = mgr.resolve(container)
    if mgr.is_running(mgr.load(cid)):
        raise Conflict(f"container {cid[:12]} is running; its filesystem stays mounted")
    with ctx.store.write_lock():
        ctx.store.driver.put(mgr.mount_id(cid))
