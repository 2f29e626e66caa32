"""``dockyard demo``: the seed's walkthrough on real data (engine.demo), rendered with rich."""

from __future__ import annotations

import click

from dockyard.cli.main import Context, cli, pass_ctx


@cli.command()
@click.option("--keep", is_flag=True, help="Leave the container running (and everything else) for exploring.")
@pass_ctx
def demo(ctx: Context, keep: bool) -> None:
    """Build and load a small multi-layer image, then run, diff and commit a container from it,
    showing each file and ID on disk (paths are relative to the data-root)."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    from dockyard.engine.demo import Section, run_demo

    console = Console(soft_wrap=False, width=max(Console().width, 120))
    console.print(f"[bold]dockyard demo[/bold] on data-root {ctx.root}\n")

    def emit(sec: Section) -> None:
        console.rule(f"[bold]{sec.title}")
        if sec.skipped:
            console.print(Panel(f"skipped: {sec.skipped}", style="yellow"))
            return
        for line in sec.lines:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        for header, rows in sec.tables:
            t = Table(show_lines=False)
            for h in header:
                t.add_column(h, overflow="fold")
            for r in rows:
                t.add_row(*r)
            console.print(t)
        console.print()

    run_demo(ctx.store, emit, keep=keep, exec_root=ctx.exec_root, runtime=ctx.runtime)
