"""``dockyard demo``: the offline main job -- import a small rootfs, list it, explain it."""

from __future__ import annotations

import io

import click

from dockyard.cli.main import Context, cli, pass_ctx


@cli.command()
@click.option("--name", default="dockyard-demo:latest", show_default=True, help="Tag for the demo image.")
@pass_ctx
def demo(ctx: Context, name: str) -> None:
    """Import a tiny built-in rootfs as an image, then list and explain it."""
    from dockyard.cli import commands_images
    from dockyard.engine.demo import demo_rootfs
    from dockyard.engine.transfer import import_image

    image_id = import_image(
        ctx.store,
        "demo-rootfs.tar",
        name,
        changes=['CMD ["/bin/sh"]'],
        message="dockyard demo rootfs",
        stream=io.BytesIO(demo_rootfs()),
    )
    click.echo(f"Imported {name} as {image_id}\n")
    click.echo(f"$ dockyard --data-root {ctx.root} images")
    click.get_current_context().invoke(commands_images.images)
    click.echo(f"\n$ dockyard --data-root {ctx.root} explain {name}")
    click.get_current_context().invoke(commands_images.explain, name=name, fmt="table")
