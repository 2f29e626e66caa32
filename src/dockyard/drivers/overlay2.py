"""The overlay2 graph driver: layer directories, short links, and (only here) mounts.

A layer directory ``overlay2/<id>/`` holds ``diff/`` (its files), ``link`` (its 26-char short
name, with ``l/<link> -> ../<id>/diff``), and, when it has a parent, ``lower`` (the short links
of all layers below, nearest first: ``l/A:l/B``) and ``work/``. Creating a child touches
``committed`` in the parent, which makes Docker mount the parent read-only.
"""

from __future__ import annotations

import errno
import os

from dockyard.archive.fsutil import remove_tree
from dockyard.digest import random_link
from dockyard.faults import boundary
from dockyard.store.atomic import makedirs, write_plain
from dockyard.store.layout import Layout

MAX_LOWERS = 128


class DriverError(Exception):
    pass


class Overlay2Driver:
    name = "overlay2"

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def ensure_home(self) -> None:
        makedirs(self.layout.overlay2, 0o710)
        makedirs(self.layout.overlay2_links, 0o700)

    def exists(self, cache_id: str) -> bool:
        return os.path.isdir(self.layout.driver_dir(cache_id))

    def dir(self, cache_id: str) -> str:
        return self.layout.driver_dir(cache_id)

    def diff_path(self, cache_id: str) -> str:
        return self.layout.driver_diff(cache_id)

    def link_of(self, cache_id: str) -> str:
        with open(os.path.join(self.dir(cache_id), "link"), "rb") as f:
            return f.read().decode().strip()

    def lower_of(self, cache_id: str) -> str | None:
        try:
            with open(os.path.join(self.dir(cache_id), "lower"), "rb") as f:
                return f.read().decode()
        except FileNotFoundError:
            return None

    def lower_for_child(self, parent: str) -> str:
        """The ``lower`` content of a new layer on top of ``parent``."""
        lower = "l/" + self.link_of(parent)
        plower = self.lower_of(parent)
        if plower:
            lower += ":" + plower
        if lower.count(":") + 1 > MAX_LOWERS:
            raise DriverError(f"cannot create layer: more than {MAX_LOWERS} lower layers")
        return lower

    def create(self, cache_id: str, parent: str | None) -> None:
        """Docker's ``create``: dir 0710, diff/ 0755, link + l/ symlink; lower + work/ with a parent."""
        self.ensure_home()
        lower = self.lower_for_child(parent) if parent else None
        d = self.dir(cache_id)
        os.mkdir(d, 0o710)
        os.chmod(d, 0o710)
        os.mkdir(os.path.join(d, "diff"), 0o755)
        os.chmod(os.path.join(d, "diff"), 0o755)
        for _ in range(8):
            link = random_link()
            try:
                os.symlink(os.path.join("..", cache_id, "diff"), self.layout.link_path(link))
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 2^130 space
            raise DriverError("could not allocate a unique overlay2 short link")
        boundary("driver:link")
        write_plain(os.path.join(d, "link"), link.encode(), 0o644)
        if parent is None:
            return
        os.mkdir(os.path.join(d, "work"), 0o700)
        os.chmod(os.path.join(d, "work"), 0o700)
        write_plain(os.path.join(self.dir(parent), "committed"), b"", 0o600)
        assert lower is not None
        write_plain(os.path.join(d, "lower"), lower.encode(), 0o644)

    def remove(self, cache_id: str) -> None:
        """Docker's ``Remove``: drop the ``l/`` link, then the directory (unmounting first)."""
        d = self.dir(cache_id)
        try:
            link = self.link_of(cache_id)
        except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
            link = ""
        if link and "/" not in link and link not in (".", ".."):
            try:
                os.unlink(self.layout.link_path(link))
            except FileNotFoundError:
                pass
            boundary("driver:link-removed")
        merged = os.path.join(d, "merged")
        if os.path.ismount(merged):
            self._unmount(merged)
        try:
            remove_tree(d)
        except FileNotFoundError:
            pass

    def _unmount(self, path: str) -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        MNT_DETACH = 2
        if libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOENT):
                raise OSError(err, os.strerror(err), path)
