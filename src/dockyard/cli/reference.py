"""Write docs/commands.md from the click CLI itself, so the reference cannot drift.

Regenerate with::

    PYTHONPATH=src python -m dockyard.cli.reference > docs/commands.md
"""

from __future__ import annotations

import sys

import click

from dockyard.cli.main import cli

REGEN = "PYTHONPATH=src python -m dockyard.cli.reference > docs/commands.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _section(name: str, cmd: click.Command, parent: click.Context, depth: int) -> list[str]:
    ctx = click.Context(cmd, info_name=name, parent=parent)
    out = [f"{'#' * depth} `{ctx.command_path}`", ""]
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    out += ["```", f"{ctx.command_path} {usage}".rstrip(), "```", ""]
    if cmd.help:
        out += [click.unstyle(cmd.help).strip(), ""]
    rows = []
    for p in cmd.get_params(ctx):
        rec = p.get_help_record(ctx)
        if rec is None:
            continue
        flags, text = rec
        rows.append(f"| `{flags}` | {_cell(text)} |")
    if rows:
        out += ["| option | meaning |", "|---|---|", *rows, ""]
    if isinstance(cmd, click.Group):
        for sub in cmd.list_commands(ctx):
            sc = cmd.get_command(ctx, sub)
            if sc is not None and not sc.hidden:
                out += _section(sub, sc, ctx, min(depth + 1, 4))
    return out


def render() -> str:
    """The whole reference as Markdown."""
    root = click.Context(cli, info_name="dockyard")
    lines = [
        "# dockyard command reference",
        "",
        "<!-- Generated from the click CLI; do not edit by hand. Regenerate with:",
        f"     {REGEN} -->",
        "",
        "Global options come before the command (`dockyard --data-root DIR images`).",
        "",
    ]
    rows = []
    for p in cli.get_params(root):
        rec = p.get_help_record(root)
        if rec is not None:
            rows.append(f"| `{rec[0]}` | {_cell(rec[1])} |")
    lines += ["| option | meaning |", "|---|---|", *rows, ""]
    names = [n for n in cli.list_commands(root)]
    lines += ["Commands: " + ", ".join(f"`{n}`" for n in names) + ".", ""]
    for n in names:
        cmd = cli.get_command(root, n)
        if cmd is not None and not cmd.hidden:
            lines += _section(n, cmd, root, 2)
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
