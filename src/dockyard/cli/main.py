"""The ``dockyard`` command: docker's verbs and flags over the library.

Commands import what they need when they run, so a short command starts fast. Every
:class:`~dockyard.errors.DockyardError` ends as one ``Error: ...`` line and exit status 1.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from dockyard import __version__


def default_root() -> str:
    env = os.environ.get("DOCKYARD_DATA_ROOT")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/dockyard"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "dockyard")


class Context:
    def __init__(
        self, root: str, debug: bool, exec_root: str | None = None, runtime: str | None = None
    ) -> None:
        self.root = root
        self.debug = debug
        self.exec_root = exec_root
        self.runtime = runtime
        self._store: Any = None

    @property
    def store(self) -> Any:
        if self._store is None:
            from dockyard.store import Store

            self._store = Store(self.root)
        return self._store


pass_ctx = click.make_pass_decorator(Context)


class DockyardGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=DockyardGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-root",
    "data_root",
    metavar="DIR",
    default=None,
    help="Docker-layout data-root to use [env DOCKYARD_DATA_ROOT; default /var/lib/dockyard as root].",
)
@click.option(
    "--exec-root",
    "exec_root",
    metavar="DIR",
    default=None,
    envvar="DOCKYARD_EXEC_ROOT",
    help="Runtime state of running containers [default /run/dockyard/<hash of data-root>].",
)
@click.option("--runtime", default=None, envvar="DOCKYARD_RUNTIME", help="OCI runtime binary (runc or crun).")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.version_option(__version__, prog_name="dockyard")
@click.pass_context
def cli(
    ctx: click.Context, data_root: str | None, exec_root: str | None, runtime: str | None, debug: bool
) -> None:
    """dockyard: Docker's image and container store, without a daemon."""
    os.umask(0o022)  # as dockerd does, so modes come out as Docker's
    if debug:
        os.environ["DOCKYARD_DEBUG"] = "1"
    ctx.obj = Context(
        os.path.abspath(data_root or default_root()),
        debug,
        os.path.abspath(exec_root) if exec_root else None,
        runtime,
    )


def main() -> None:
    from dockyard.cli import (  # noqa: F401  (registers commands)
        commands_containers,
        commands_demo,
        commands_images,
        commands_registry,
        commands_system,
    )

    debug = "--debug" in sys.argv
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        msg = e.format_message()
        if isinstance(e, click.UsageError) and e.ctx is not None:
            msg += f"\nSee '{e.ctx.command_path} --help'."
        click.echo(f"Error: {msg}", err=True)
        sys.exit(2 if isinstance(e, click.UsageError) else 1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(141)
    except Exception as e:
        from dockyard.errors import DockyardError

        if isinstance(e, DockyardError):
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)
        if debug:
            raise
        if isinstance(e, OSError):
            where = f": {e.filename}" if e.filename else ""
            click.echo(f"Error: {e.strerror or e}{where}", err=True)
            sys.exit(1)
        click.echo(f"Error: internal error: {type(e).__name__}: {e} (run with --debug for details)", err=True)
        sys.exit(1)
