"""Process verbs: exec (more to come here: top, stats, restart, rename, attach)."""

from __future__ import annotations

import sys
from typing import Any

import click

from dockyard.cli.main import Context, cli, pass_ctx


def _mgr(ctx: Context) -> Any:
    from dockyard.containers.lifecycle import Containers

    return Containers(ctx.store, exec_root=ctx.exec_root, runtime=ctx.runtime)


def _read_env_files(paths: tuple[str, ...]) -> list[str]:
    import os

    from dockyard.errors import InvalidInput

    env: list[str] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        env.append(line)
        except OSError as e:
            raise InvalidInput(f"open {path}: {e.strerror}") from None
    # a bare KEY takes its value from our environment, as the docker CLI does
    return [e if "=" in e else (f"{e}={os.environ[e]}" if e in os.environ else e) for e in env]


@cli.command("exec", context_settings={"allow_interspersed_args": False, "help_option_names": ["--help"]})
@click.option("-d", "--detach", is_flag=True, help="Detached mode: run command in the background.")
@click.option("-e", "--env", "env", multiple=True, help="Set environment variables.")
@click.option("--env-file", multiple=True, type=click.Path(), help="Read in a file of environment variables.")
@click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open even if not attached.")
@click.option("--privileged", is_flag=True, help="Give extended privileges to the command.")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY.")
@click.option("-u", "--user", default="", help="Username or UID (format: <name|uid>[:<group|gid>]).")
@click.option("-w", "--workdir", default="", help="Working directory inside the container.")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_ctx
def exec_cmd(
    ctx: Context,
    /,
    container: str,
    command: tuple[str, ...],
    detach: bool,
    env: tuple[str, ...],
    env_file: tuple[str, ...],
    interactive: bool,
    privileged: bool,
    tty: bool,
    user: str,
    workdir: str,
) -> None:
    """Run a command in a running container (exit status = the command's)."""
    from dockyard.containers.exec import ExecOptions, run_exec
    from dockyard.errors import InvalidInput

    if interactive and tty and not detach and not sys.stdin.isatty():
        raise InvalidInput("the input device is not a TTY")
    mgr = _mgr(ctx)
    mgr.reap()
    cid = mgr.resolve(container)
    opts = ExecOptions(
        cmd=list(command),
        interactive=interactive,
        tty=tty,
        detach=detach,
        user=user,
        workdir=workdir,
        env=_read_env_files(env_file) + list(env),
        privileged=privileged,
    )
    sys.stdout.flush()
    sys.exit(run_exec(mgr, cid, opts))
