"""What a TARGET names, as a layer stack: an image (name, ID or prefix) or a container (name,
ID or prefix; RW layer + ``-init`` layer + image layers). Paths come from the store's API."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dockyard.errors import DockyardError, NotFound
from dockyard.store import Store
from dockyard.store.containers import read_mount_record
from dockyard.view.merged import LayerRoot, MergedView


@dataclass
class StackLayer:
    """A layer of a target, top first in :attr:`Target.layers`."""

    kind: str  # "rw", "init" or "image"
    cache_id: str
    chain_id: str = ""
    diff_id: str = ""
    index: int = -1  # index in the image's rootfs (0 = bottom), -1 for container layers


@dataclass
class Target:
    kind: str  # "image" or "container"
    id: str
    image_id: str
    layers: list[StackLayer] = field(default_factory=list)  # top first


def resolve_target(store: Store, ref: str) -> Target:
    """docker's order for ``export``/``inspect``-like lookups: a container first, then an image."""
    cid = find_container(store, ref)
    if cid is not None:
        return container_target(store, cid)
    image_id = store.resolve_image(ref)
    return image_target(store, image_id)


def find_container(store: Store, ref: str) -> str | None:
    ids = store.containers.ids()
    if ref in ids:
        return ref
    name = "/" + ref.lstrip("/")
    recs = store.containers.all()
    for c in recs:
        if c.name == name:
            return c.id
    if re.fullmatch(r"[a-f0-9]{1,64}", ref):
        hits = [i for i in ids if i.startswith(ref)]
        if len(hits) > 1:
            raise DockyardError(f"multiple IDs found with provided prefix: {ref}")
        if hits:
            return hits[0]
    return None


def image_target(store: Store, image_id: str) -> Target:
    t = Target("image", image_id, image_id)
    layers = store.image_layers(image_id)
    for i, layer in enumerate(layers):
        t.layers.append(StackLayer("image", layer.cache_id, layer.chain_id, layer.diff_id, i))
    t.layers.reverse()
    return t


def container_target(store: Store, cid: str) -> Target:
    rec = store.containers.get(cid)
    if rec is None:
        raise NotFound(f"No such container: {cid}")
    try:
        mount = read_mount_record(store.layout, cid)
    except ValueError as e:
        raise DockyardError(f"container {cid[:12]}: {e}") from None
    t = Target("container", cid, rec.image_id)
    t.layers.append(StackLayer("rw", mount.mount_id))
    if mount.init_id:
        t.layers.append(StackLayer("init", mount.init_id))
    if mount.parent:
        chain = store.layers.chain(mount.parent)
        for i in range(len(chain) - 1, -1, -1):
            layer = chain[i]
            t.layers.append(StackLayer("image", layer.cache_id, layer.chain_id, layer.diff_id, i))
    return t


def open_view(store: Store, target: Target) -> MergedView:
    roots = []
    for sl in target.layers:
        label = sl.kind if sl.kind != "image" else f"{sl.index} ({sl.diff_id[:19]})"
        roots.append(LayerRoot(label, store.layout.driver_diff(sl.cache_id)))
    return MergedView(roots)
