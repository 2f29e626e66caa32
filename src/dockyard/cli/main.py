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
            from dockyard.engine.stores import open_store

            self._store = open_store(self.root)
        return self._store


pass_ctx = click.make_pass_decorator(Context)


# Which module defines each top-level command. Only the module of the command being run is
# imported, so a short command such as ``create`` does not pay for the registry client, the
# archive code or the table printer. tests/test_cli_basics.py checks this table against the modules.
COMMAND_MODULES: dict[str, str] = {
    **dict.fromkeys(
        ["load", "images", "inspect", "history", "tag", "rmi", "explain", "save", "import"], "commands_images"
    ),
    **dict.fromkeys(
        [
            "create",
            "run",
            "start",
            "stop",
            "kill",
            "wait",
            "rm",
            "ps",
            "logs",
            "diff",
            "commit",
            "export",
            "cp",
            "mount",
            "umount",
        ],
        "commands_containers",
    ),
    **dict.fromkeys(["pull", "push", "login", "logout"], "commands_registry"),
    **dict.fromkeys(["fsck", "system", "image", "container"], "commands_system"),
    "demo": "commands_demo",
    "fs": "commands_fs",
    **dict.fromkeys(["exec"], "commands_exec"),
    "update": "commands_confine",
}


class DockyardGroup(click.Group):
    """The top-level group; imports a command's module the first time the command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if cmd_name not in self.commands and module is not None:
            import importlib

            importlib.import_module(f"dockyard.cli.{module}")  # registers its commands on ``cli``
        return self.commands.get(cmd_name)


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
