"""imagedb: image configs by ID, plus the ``parent`` and ``lastUpdated`` metadata."""

from __future__ import annotations

import hashlib
import os

from dockyard.archive.fsutil import remove_tree
from dockyard.digest import hex_of, is_digest, is_hex64
from dockyard.errors import NotFound, StoreCorrupt
from dockyard.faults import boundary
from dockyard.image.config import ImageConfig
from dockyard.store.atomic import atomic_write, makedirs, read_text
from dockyard.store.layout import Layout


class ImageStore:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def ensure_dirs(self) -> None:
        makedirs(self.layout.image_root, 0o700)
        for d in (self.layout.imagedb_content, self.layout.imagedb_metadata):
            makedirs(d, 0o700)

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.layout.imagedb_content)
        except FileNotFoundError:
            return []
        return ["sha256:" + n for n in sorted(names) if is_hex64(n)]

    def exists(self, image_id: str) -> bool:
        return os.path.isfile(self.layout.image_config(image_id))

    def get(self, image_id: str) -> ImageConfig:
        """The config, re-hashed on read as Docker does."""
        try:
            with open(self.layout.image_config(image_id), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise NotFound(f"No such image: {image_id}") from None
        if "sha256:" + hashlib.sha256(raw).hexdigest() != "sha256:" + hex_of(image_id):
            raise StoreCorrupt(f"image {image_id}: config does not match its ID (file damaged)")
        return ImageConfig(raw)

    def create(self, config: ImageConfig) -> str:
        self.ensure_dirs()
        path = self.layout.image_config(config.id)
        if not os.path.exists(path):
            atomic_write(path, config.raw, 0o600)
        return config.id

    # metadata
    def _meta(self, image_id: str, key: str) -> str:
        return os.path.join(self.layout.image_metadata_dir(image_id), key)

    def get_parent(self, image_id: str) -> str | None:
        try:
            p = read_text(self._meta(image_id, "parent")).strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return p if is_digest(p) else None

    def set_parent(self, image_id: str, parent: str) -> None:
        d = self.layout.image_metadata_dir(image_id)
        makedirs(d, 0o700)
        atomic_write(self._meta(image_id, "parent"), parent.encode(), 0o600)

    def get_last_updated(self, image_id: str) -> str | None:
        try:
            return read_text(self._meta(image_id, "lastUpdated")).strip() or None
        except (FileNotFoundError, NotADirectoryError):
            return None

    def set_last_updated(self, image_id: str, when: str) -> None:
        d = self.layout.image_metadata_dir(image_id)
        makedirs(d, 0o700)
        atomic_write(self._meta(image_id, "lastUpdated"), when.encode(), 0o600)

    def metadata_files(self, image_id: str) -> list[str]:
        try:
            return sorted(os.listdir(self.layout.image_metadata_dir(image_id)))
        except FileNotFoundError:
            return []

    def children(self, image_id: str) -> list[str]:
        """Images whose ``parent`` metadata names ``image_id``."""
        out: list[str] = []
        try:
            names = os.listdir(self.layout.imagedb_metadata)
        except FileNotFoundError:
            return out
        for n in names:
            if is_hex64(n) and self.get_parent("sha256:" + n) == image_id:
                out.append("sha256:" + n)
        return out

    def delete(self, image_id: str) -> None:
        """Docker's order: unlink children's parent, metadata dir, then the content file."""
        for child in self.children(image_id):
            try:
                os.unlink(self._meta(child, "parent"))
            except FileNotFoundError:
                pass
        md = self.layout.image_metadata_dir(image_id)
        if os.path.isdir(md):
            remove_tree(md)
        boundary("image:metadata-removed")
        try:
            os.unlink(self.layout.image_config(image_id))
        except FileNotFoundError:
            pass

    def all_parents(self) -> dict[str, str]:
        out: dict[str, str] = {}
        try:
            names = os.listdir(self.layout.imagedb_metadata)
        except FileNotFoundError:
            return out
        for n in names:
            if is_hex64(n):
                p = self.get_parent("sha256:" + n)
                if p:
                    out["sha256:" + n] = p
        return out
