"""layerdb: read-only layers keyed by chainID (``image/overlay2/layerdb/sha256/<chain>/``).

A layer is born in three steps, each leaving the store valid if the process dies right after:

1. :meth:`LayerStore.begin`: a staging dir ``layerdb/tmp/write-set-*`` gets the ``cache-id`` first,
   then the overlay2 dir is created (so a crash leaves a staging dir that names its driver dir);
2. the caller fills ``diff/`` and writes ``tar-split.json.gz`` into the staging dir;
3. :meth:`LayerStore.publish`: ``diff``, ``size``, ``parent`` are written and fsync'd, and the
   staging dir is renamed to ``layerdb/sha256/<chain>`` -- the atomic commit.

Deletion renames the dir to ``<chain>-<random>-removing`` before the driver data goes, as
Docker does. :meth:`LayerStore.recover` finishes or undoes whatever a dead process left.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from dockyard.archive.fsutil import remove_tree
from dockyard.digest import hex_of, is_digest, is_hex64, random_id, random_suffix_id
from dockyard.errors import NotFound, StoreCorrupt
from dockyard.faults import boundary
from dockyard.store.atomic import fsync_dir, makedirs, read_text, write_synced
from dockyard.store.driver import LayerDriver
from dockyard.store.layout import Layout

TAR_SPLIT = "tar-split.json.gz"


@dataclass(frozen=True)
class Layer:
    chain_id: str
    diff_id: str
    parent: str | None
    size: int
    cache_id: str


@dataclass
class PendingLayer:
    staging: str
    cache_id: str
    parent_cache_id: str | None

    @property
    def tar_split_path(self) -> str:
        return os.path.join(self.staging, TAR_SPLIT)


class LayerStore:
    def __init__(self, layout: Layout, driver: LayerDriver) -> None:
        self.layout = layout
        self.driver = driver

    # ------------------------------------------------------------------ reading
    def exists(self, chain_id: str) -> bool:
        d = self.layout.layer_dir(chain_id)
        return os.path.isfile(os.path.join(d, "diff")) and os.path.isfile(os.path.join(d, "cache-id"))

    def get(self, chain_id: str) -> Layer:
        d = self.layout.layer_dir(chain_id)
        if not os.path.isdir(d):
            raise NotFound(f"layer {chain_id} does not exist")
        try:
            diff_id = read_text(os.path.join(d, "diff")).strip()
            size_s = read_text(os.path.join(d, "size"))
            cache_id = read_text(os.path.join(d, "cache-id")).strip()
            try:
                parent: str | None = read_text(os.path.join(d, "parent")).strip()
            except FileNotFoundError:
                parent = None
        except (OSError, UnicodeDecodeError) as e:
            raise StoreCorrupt(f"layer {chain_id} is damaged: {e}") from None
        if not is_digest(diff_id) or not is_hex64(cache_id) or (parent is not None and not is_digest(parent)):
            raise StoreCorrupt(f"layer {chain_id} is damaged: invalid diff, cache-id or parent file")
        try:
            size = int(size_s)
        except ValueError:
            raise StoreCorrupt(f"layer {chain_id} is damaged: invalid size file {size_s!r}") from None
        return Layer(chain_id, diff_id, parent, size, cache_id)

    def chain(self, top: str) -> list[Layer]:
        """Layers from the bottom to ``top``."""
        out = []
        cur: str | None = top
        while cur is not None:
            layer = self.get(cur)
            out.append(layer)
            cur = layer.parent
            if len(out) > 1000:
                raise StoreCorrupt(f"layer {top} has a parent loop")
        out.reverse()
        return out

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.layout.layerdb_sha256)
        except FileNotFoundError:
            return []
        return ["sha256:" + n for n in sorted(names) if is_hex64(n)]

    def tar_split_path(self, chain_id: str) -> str:
        return os.path.join(self.layout.layer_dir(chain_id), TAR_SPLIT)

    # ------------------------------------------------------------------ writing
    def ensure_dirs(self) -> None:
        makedirs(self.layout.image_root, 0o700)
        makedirs(self.layout.layerdb, 0o700)
        for d in (self.layout.layerdb_sha256, self.layout.layerdb_tmp, self.layout.layerdb_mounts):
            makedirs(d, 0o755)
        self.driver.ensure_home()

    def begin(self, parent_cache_id: str | None) -> PendingLayer:
        self.ensure_dirs()
        staging = tempfile.mkdtemp(prefix="write-set-", dir=self.layout.layerdb_tmp)
        boundary("layer:staging-dir")
        cache_id = random_id()
        write_synced(os.path.join(staging, "cache-id"), cache_id.encode(), 0o644)
        pending = PendingLayer(staging, cache_id, parent_cache_id)
        try:
            self.driver.create(cache_id, parent_cache_id)
        except BaseException:
            self.discard(pending)
            raise
        boundary("layer:driver-dir")
        return pending

    def publish(self, pending: PendingLayer, diff_id: str, size: int, parent_chain: str | None) -> Layer:
        """Commit a filled pending layer under its chainID (returns the existing one if present)."""
        from dockyard.digest import chain_id as make_chain

        chain = make_chain(parent_chain, diff_id)
        if self.exists(chain):
            self.discard(pending)
            return self.get(chain)
        s = pending.staging
        write_synced(os.path.join(s, "diff"), diff_id.encode(), 0o644)
        write_synced(os.path.join(s, "size"), str(size).encode(), 0o644)
        if parent_chain is not None:
            write_synced(os.path.join(s, "parent"), parent_chain.encode(), 0o644)
        fsync_dir(s)
        boundary("layer:before-publish")
        os.rename(s, self.layout.layer_dir(chain))
        fsync_dir(self.layout.layerdb_sha256)
        boundary("layer:published")
        return Layer(chain, diff_id, parent_chain, size, pending.cache_id)

    def discard(self, pending: PendingLayer) -> None:
        self.driver.remove(pending.cache_id)
        remove_tree(pending.staging)

    def delete(self, chain_id: str) -> None:
        """Remove one layer (the caller checked nothing uses it)."""
        layer = self.get(chain_id)
        d = self.layout.layer_dir(chain_id)
        removing = f"{d}-{random_suffix_id()}-removing"
        os.rename(d, removing)
        fsync_dir(self.layout.layerdb_sha256)
        boundary("layer:renamed-removing")
        self.driver.remove(layer.cache_id)
        boundary("layer:driver-removed")
        remove_tree(removing)

    def recover(self) -> list[str]:
        """Finish interrupted deletions and drop staging leftovers. Call under the store lock."""
        done = []
        tmp = self.layout.layerdb_tmp
        for name in _listdir(tmp):
            if name.startswith("write-set-"):
                self._drop_staged(os.path.join(tmp, name))
                done.append(os.path.join(tmp, name))
            elif name.startswith("mount-"):
                # a container's mount record that was never published: its layers go with it
                p = os.path.join(tmp, name)
                for key in ("mount-id", "init-id"):
                    try:
                        v = read_text(os.path.join(p, key)).strip()
                    except (OSError, UnicodeDecodeError):
                        continue
                    if is_hex64(v[:64]) and len(v) in (64, 69):
                        self.driver.remove(v)
                remove_tree(p)
                done.append(p)
        for name in _listdir(self.layout.layerdb_sha256):
            if name.endswith("-removing"):
                self._drop_staged(os.path.join(self.layout.layerdb_sha256, name))
                done.append(name)
        return done

    def _drop_staged(self, path: str) -> None:
        try:
            cache_id = read_text(os.path.join(path, "cache-id")).strip()
        except (OSError, UnicodeDecodeError):
            cache_id = ""
        if is_hex64(cache_id) and not self._cache_id_published(cache_id, path):
            self.driver.remove(cache_id)
        remove_tree(path)

    def _cache_id_published(self, cache_id: str, besides: str) -> bool:
        # A -removing dir's cache-id is never shared; a staging dir's never published. Being careful
        # costs one read per layer and only runs when something was left behind.
        for chain in self.ids():
            try:
                if read_text(os.path.join(self.layout.layer_dir(chain), "cache-id")).strip() == cache_id:
                    return True
            except OSError:
                continue
        return False

    def parent_of(self, chain_id: str) -> str | None:
        return self.get(chain_id).parent


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


__all__ = ["TAR_SPLIT", "Layer", "LayerStore", "PendingLayer", "hex_of"]
