"""The store: Docker's data-root behind a small API.

:class:`Store` groups the parts -- :class:`~dockyard.store.images.ImageStore` (imagedb),
:class:`~dockyard.store.layers.LayerStore` (layerdb), :class:`~dockyard.store.references.
ReferenceStore` (repositories.json), the overlay2 driver -- and owns the write lock. Paths come
from :class:`~dockyard.store.layout.Layout` only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from dockyard.digest import is_digest
from dockyard.errors import DockyardError, NotFound
from dockyard.image.config import ImageConfig
from dockyard.image.reference import InvalidReference, Reference, parse_reference
from dockyard.store.containers import ContainerStore
from dockyard.store.driver import ContainerRecovery, DriverFactory, LayerDriver
from dockyard.store.images import ImageStore
from dockyard.store.layers import Layer, LayerStore
from dockyard.store.layout import Layout
from dockyard.store.lock import StoreLock, dockerd_running
from dockyard.store.references import ReferenceStore

_HEX_PREFIX = re.compile(r"^[a-f0-9]{1,64}$")

DEFAULT_ROOT = "/var/lib/dockyard"


class AmbiguousImage(DockyardError):
    pass


class Store:
    def __init__(
        self, root: str, driver: DriverFactory, *, recover_container: ContainerRecovery | None = None
    ) -> None:
        """``driver`` makes the graph driver; ``recover_container`` releases the layers of a
        container a dead process left half made or half removed (without it, such leftovers stay
        until a store opened with one takes the write lock)."""
        self.layout = Layout(root)
        self.driver: LayerDriver = driver(self.layout)
        self._recover_container = recover_container
        self.layers = LayerStore(self.layout, self.driver)
        self.images = ImageStore(self.layout)
        self.refs = ReferenceStore(self.layout)
        self.containers = ContainerStore(self.layout)
        self._lock = StoreLock(self.layout)

    @property
    def root(self) -> str:
        return self.layout.root

    @contextmanager
    def write_lock(self) -> Iterator[Store]:
        """Exclusive write access; leftovers of dead writers are cleaned up on entry."""
        with self._lock:
            if self._lock.depth == 1:
                os.makedirs(self.layout.root, mode=0o711, exist_ok=True)
                self.layers.recover()
                self._recover_containers()
                self.refs.ensure()
            yield self

    def _recover_containers(self) -> None:
        """Finish what a dead process left: a container dir staged but not published
        (``.tmp-<id>``) or half removed (``<id>-removing``) goes, with its layers."""
        if self._recover_container is None:
            return
        try:
            names = os.listdir(self.layout.containers)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(".tmp-") or name.endswith("-removing"):
                cid = name[5:] if name.startswith(".tmp-") else name[: -len("-removing")]
                from dockyard.archive.fsutil import remove_tree

                if len(cid) == 64 and not os.path.isdir(self.layout.container_dir(cid)):
                    self._recover_container(self, cid)
                remove_tree(os.path.join(self.layout.containers, name))

    def dockerd_owner(self) -> str | None:
        return dockerd_running(self.layout)

    # ------------------------------------------------------------------ lookups
    def resolve_image(self, ref_or_id: str) -> str:
        """Docker's GetImage: a reference, a full or short image ID, or ``sha256:<id>``."""
        s = ref_or_id
        if s.startswith("sha256:"):
            if is_digest(s) and self.images.exists(s):
                return s
            found = self._search_prefix(s[len("sha256:") :], s)
            if found:
                return found
            raise NotFound(f"No such image: {ref_or_id}")
        if re.match(r"^[a-f0-9]{64}$", s):
            if self.images.exists("sha256:" + s):
                return "sha256:" + s
            raise NotFound(f"No such image: {ref_or_id}")
        ref: Reference | None
        try:
            ref = parse_reference(s)
        except InvalidReference:
            ref = None
        if ref is not None:
            image_id = self.refs.get(ref)
            if image_id and self.images.exists(image_id):
                return image_id
        found = self._search_prefix(s, s)
        if found:
            return found
        if ref is None:
            raise NotFound(f"No such image: {ref_or_id}")
        raise NotFound(f"No such image: {ref.tagged_or_latest().familiar_string()}")

    def _search_prefix(self, prefix: str, shown: str) -> str | None:
        if not _HEX_PREFIX.match(prefix):
            return None
        hits = [i for i in self.images.ids() if i[7:].startswith(prefix)]
        if len(hits) > 1:
            raise AmbiguousImage(f"multiple IDs found with provided prefix: {shown}")
        return hits[0] if hits else None

    def image(self, image_id: str) -> ImageConfig:
        return self.images.get(image_id)

    def image_layers(self, image_id: str) -> list[Layer]:
        top = self.images.get(image_id).top_chain
        return self.layers.chain(top) if top else []

    # ------------------------------------------------------------------ usage
    def release_layers(self, top: str) -> list[str]:
        """Delete ``top`` and its parents while nothing else uses them (the layer store's
        reference counting, as dockerd's ``ReleaseLayer``); returns the deleted chainIDs."""
        deleted = []
        users = self.layer_users()
        cur: str | None = top
        while cur is not None and users.get(cur, 0) == 0 and self.layers.exists(cur):
            parent = self.layers.get(cur).parent
            self.layers.delete(cur)
            deleted.append(cur)
            if parent:
                users[parent] = users.get(parent, 0) - 1
            cur = parent
        return deleted

    def layer_users(self) -> dict[str, int]:
        """Reference counts of layers as dockerd rebuilds them at startup.

        Each image holds its top layer, each child layer its parent, each container mount its
        parent layer.
        """
        counts: dict[str, int] = {}
        for image_id in self.images.ids():
            try:
                top = self.images.get(image_id).top_chain
            except DockyardError:
                continue
            if top:
                counts[top] = counts.get(top, 0) + 1
        for chain in self.layers.ids():
            try:
                parent = self.layers.get(chain).parent
            except DockyardError:
                continue
            if parent:
                counts[parent] = counts.get(parent, 0) + 1
        for parent in self.mount_parents():
            counts[parent] = counts.get(parent, 0) + 1
        return counts

    def mount_parents(self) -> list[str]:
        out: list[str] = []
        try:
            names = os.listdir(self.layout.layerdb_mounts)
        except FileNotFoundError:
            return out
        for n in names:
            try:
                with open(os.path.join(self.layout.layerdb_mounts, n, "parent")) as f:
                    p = f.read().strip()
            except OSError:
                continue
            if is_digest(p):
                out.append(p)
        return out


__all__ = ["DEFAULT_ROOT", "AmbiguousImage", "Store"]
