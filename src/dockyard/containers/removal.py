"""Container removal: the record first (renamed away), then the container's layers and its
mount record, then the image layers that nothing uses any more."""

from __future__ import annotations

import os

from dockyard.archive.fsutil import remove_tree
from dockyard.digest import is_hex64
from dockyard.errors import Conflict, NotFound
from dockyard.faults import boundary
from dockyard.store import Store
from dockyard.store.atomic import read_text


def remove_container(store: Store, container_id: str, *, force: bool = False) -> None:
    """Delete a container: its record first (renamed away), then its layers and mount record."""
    c = store.containers.get(container_id)
    if c is None:
        raise NotFound(f"No such container: {container_id}")
    if c.running and not force:
        raise Conflict(
            f"You cannot remove a running container {container_id}. Stop the container before attempting removal or force remove"
        )
    cdir = store.layout.container_dir(container_id)
    removing = f"{cdir}-removing"
    os.rename(cdir, removing)
    boundary("container:renamed-removing")
    release_container_layers(store, container_id)
    remove_tree(removing)


def release_container_layers(store: Store, container_id: str) -> list[str]:
    md = store.layout.mount_dir(container_id)
    parent = None
    for key in ("mount-id", "init-id"):
        try:
            v = read_text(os.path.join(md, key)).strip()
        except OSError:
            continue
        if len(v) in (64, 69) and is_hex64(v[:64]):
            store.driver.remove(v)
            boundary(f"container:{key}-removed")
    try:
        parent = read_text(os.path.join(md, "parent")).strip() or None
    except OSError:
        parent = None
    if os.path.isdir(md):
        remove_tree(md)
    deleted: list[str] = []
    if parent and store.layers.exists(parent):
        deleted = store.release_layers(parent)
    return deleted
