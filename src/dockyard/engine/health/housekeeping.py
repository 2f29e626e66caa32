"""Disk accounting and cleanup: system df, image/container/system prune, container removal."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dockyard.containers.removal import remove_container
from dockyard.digest import is_hex64
from dockyard.engine.health.fsck import Checker, diff_dir_size
from dockyard.engine.health.storechecks import partial_pull_blobs
from dockyard.engine.images import _Deleter, list_images, references_by_image
from dockyard.errors import DockyardError
from dockyard.store import Store
from dockyard.store.atomic import read_text


# ----------------------------------------------------------------------------- df
@dataclass
class ImageUsage:
    image_id: str
    repo_tags: list[str]
    created_ns: int
    size: int
    shared: int
    unique: int
    containers: int


@dataclass
class ContainerUsage:
    id: str
    name: str
    image: str
    size: int
    running: bool


@dataclass
class DiskUsage:
    images: list[ImageUsage] = field(default_factory=list)
    containers: list[ContainerUsage] = field(default_factory=list)
    layers_size: int = 0
    reclaimable_images: int = 0
    volumes: int = 0
    volumes_size: int = 0
    partial_pulls: int = 0
    partial_pulls_size: int = 0


def disk_usage(store: Store) -> DiskUsage:
    """Every layer's bytes counted once, however many images share it."""
    du = DiskUsage()
    users: dict[str, set[str]] = {}  # chain -> images using it
    chains_of: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    containers = store.containers.all()
    in_use = {c.image_id for c in containers}
    summaries = list_images(store, all=True)
    for s in summaries:
        try:
            layers = store.image_layers(s.id)
        except DockyardError:
            continue
        chains_of[s.id] = [x.chain_id for x in layers]
        for x in layers:
            users.setdefault(x.chain_id, set()).add(s.id)
            sizes[x.chain_id] = x.size
    du.layers_size = sum(sizes.values())
    active_chains = {c for i in in_use for c in chains_of.get(i, [])}
    du.reclaimable_images = sum(sz for c, sz in sizes.items() if c not in active_chains)
    for s in summaries:
        chains = chains_of.get(s.id, [])
        shared = sum(sizes[c] for c in chains if len(users[c]) > 1)
        unique = sum(sizes[c] for c in chains if len(users[c]) == 1)
        du.images.append(
            ImageUsage(
                s.id,
                s.repo_tags,
                s.created_ns,
                shared + unique,
                shared,
                unique,
                sum(1 for c in containers if c.image_id == s.id),
            )
        )
    for c in containers:
        size = 0
        try:
            mount_id = read_text(os.path.join(store.layout.mount_dir(c.id), "mount-id")).strip()
            if is_hex64(mount_id):
                size = diff_dir_size(store.driver.diff_path(mount_id))
        except OSError:
            pass
        du.containers.append(
            ContainerUsage(
                c.id, c.name.lstrip("/"), str(c.config.get("Config", {}).get("Image", "")), size, c.running
            )
        )
    vol_root = os.path.join(store.root, "volumes")
    try:
        vols = [v for v in os.listdir(vol_root) if os.path.isdir(os.path.join(vol_root, v))]
    except FileNotFoundError:
        vols = []
    du.volumes = len(vols)
    for v in vols:
        data = os.path.join(vol_root, v, "_data")
        if os.path.isdir(data):
            du.volumes_size += diff_dir_size(data)
    partials = partial_pull_blobs(store)
    du.partial_pulls = len(partials)
    du.partial_pulls_size = sum(sz for _p, sz in partials)
    return du


# ----------------------------------------------------------------------------- prune
@dataclass
class PruneResult:
    records: list[tuple[str, str]] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    reclaimed: int = 0
    orphans: list[str] = field(default_factory=list)


def _remove_orphans(store: Store, result: PruneResult) -> None:
    """What fsck finds that nothing uses: staging leftovers, orphan dirs, unused layers, stray links."""
    report = Checker(store).run()
    for f in report.findings:
        if f.action is None or f.code not in (
            "staging-leftover",
            "removal-leftover",
            "orphan-driver-dir",
            "short-link-dangling",
            "short-link-unused",
            "unused-layer",
            "tmp-leftover",
            "partial-pull-blob",
            "metadata-orphan",
            "mount-without-container",
        ):
            continue
        path = os.path.join(store.root, f.path)
        size = _size_of(path)
        try:
            f.action()
        except FileNotFoundError:
            continue
        result.orphans.append(f.path)
        result.reclaimed += size


def _size_of(path: str) -> int:
    if os.path.isdir(path) and not os.path.islink(path):
        try:
            return diff_dir_size(path)
        except OSError:
            return 0
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def prune_images(store: Store, *, all: bool = False) -> PruneResult:
    """docker image prune: dangling images (with -a: every image no container uses)."""
    result = PruneResult()
    with store.write_lock():
        before = _layers_bytes(store)
        used_by_containers = {c.image_id for c in store.containers.all()}
        refs = references_by_image(store)
        parents = set(store.images.all_parents().values())
        for s in list_images(store, all=True):
            if s.id in used_by_containers:
                continue
            dangling = not refs.get(s.id) and s.id not in parents
            if not all and not dangling:
                continue
            d = _Deleter(store)
            try:
                if all:
                    d.untag_all(refs.get(s.id, []))
                d.helper(s.id, force=False, prune=True, quiet=not dangling and not all)
            except DockyardError:
                continue
            result.records.extend(d.records)
        result.reclaimed += max(0, before - _layers_bytes(store))
        _remove_orphans(store, result)
    return result


def prune_containers(store: Store) -> PruneResult:
    result = PruneResult()
    with store.write_lock():
        for c in store.containers.all():
            if c.running:
                continue
            mdir = store.layout.mount_dir(c.id)
            size = 0
            try:
                mid = read_text(os.path.join(mdir, "mount-id")).strip()
                size = diff_dir_size(store.driver.diff_path(mid))
            except OSError:
                pass
            remove_container(store, c.id)
            result.containers.append(c.id)
            result.reclaimed += size
    return result


def _layers_bytes(store: Store) -> int:
    total = 0
    for chain in store.layers.ids():
        try:
            total += store.layers.get(chain).size
        except DockyardError:
            continue
    return total
