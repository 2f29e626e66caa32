"""Base parts of the image sources: file trees (a tar read in place by member offset, or a
directory read without following symlinks) and the directory opener. The image model they
fill (:class:`SourceImage`, :class:`LayerBlob`) lives in :mod:`dockyard.image.source`."""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from typing import Protocol

from dockyard.archive.fsutil import RootDir, clean_relative
from dockyard.errors import InvalidInput
from dockyard.image.source import (
    BlobReader,
    FileRangeOpener,
    LayerBlob,
    Opener,
    RangeReader,
    SourceImage,
)

__all__ = [
    "ArchiveTree",
    "BlobReader",
    "DirFileOpener",
    "DirTree",
    "FileRangeOpener",
    "LayerBlob",
    "Opener",
    "RangeReader",
    "SourceImage",
    "Tree",
    "clean_member",
    "safe_relpath",
]


@dataclass(frozen=True)
class DirFileOpener:
    """A file below a directory, opened without following symlinks."""

    root: str
    rel: bytes

    def open(self) -> BlobReader:
        with RootDir(self.root) as rd:
            fd = rd.open_file(self.rel)
        st = os.fstat(fd)
        r = RangeReader.__new__(RangeReader)
        r._fd, r._pos, r._end = fd, 0, st.st_size
        return r


# --------------------------------------------------------------------------- file trees
class Tree(Protocol):
    """Files of an input (a tar archive or a directory), addressed by relative path."""

    label: str

    def exists(self, path: str) -> bool: ...

    def read(self, path: str, limit: int) -> bytes: ...

    def opener(self, path: str) -> tuple[Opener, int]: ...


MAX_SYMLINK_HOPS = 16


def clean_member(name: str) -> str:
    return clean_relative(name.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")


def safe_relpath(path: object, what: str, label: str = "") -> str:
    """A relative path from a manifest: refuse absolute paths and ``..`` escapes."""
    where = f"{label}: " if label else ""
    if not isinstance(path, str) or not path:
        raise InvalidInput(f"{where}invalid {what} path {path!r}")
    from dockyard.archive.fsutil import go_clean

    c = go_clean(path.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")
    if c.startswith("/") or c == ".." or c.startswith("../") or c == ".":
        raise InvalidInput(f"{where}invalid {what} path {path!r}: it points outside the archive")
    return c


class ArchiveTree:
    """Members of an uncompressed tar file, read in place by offset."""

    def __init__(self, path: str, label: str) -> None:
        self.path = path
        self.label = label
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            with tarfile.open(path, "r:") as tf:
                for m in tf:
                    self.members[clean_member(m.name)] = m
        except tarfile.ReadError as e:
            raise InvalidInput(f"{label}: not a valid tar archive ({e})") from None
        except EOFError:
            raise InvalidInput(f"{label}: unexpected end of archive (truncated file)") from None
        except OSError as e:
            raise InvalidInput(f"{label}: {e}") from None
        size = os.path.getsize(path)
        for name, m in self.members.items():
            if m.isreg() and m.offset_data + m.size > size:
                raise InvalidInput(f"{label}: unexpected end of archive: {name!r} is truncated")

    def _resolve(self, path: str) -> tarfile.TarInfo:
        seen = 0
        cur = path
        while True:
            m = self.members.get(cur)
            if m is None:
                raise InvalidInput(f"{self.label}: {path!r} is not in the archive")
            if m.issym() or m.islnk():
                seen += 1
                if seen > MAX_SYMLINK_HOPS:
                    raise InvalidInput(f"{self.label}: too many symlinks resolving {path!r}")
                target = m.linkname
                base = os.path.dirname(cur) if m.issym() else ""
                joined = target if target.startswith("/") else (base + "/" + target if base else target)
                from dockyard.archive.fsutil import go_clean

                c = go_clean(joined.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")
                if c.startswith("/") or c == ".." or c.startswith("../"):
                    raise InvalidInput(
                        f"{self.label}: {path!r} is a link to {target!r}, which is outside the archive"
                    )
                cur = c
                continue
            if not m.isreg():
                raise InvalidInput(f"{self.label}: {path!r} is not a regular file")
            return m

    def exists(self, path: str) -> bool:
        return path in self.members

    def read(self, path: str, limit: int) -> bytes:
        m = self._resolve(path)
        if m.size > limit:
            raise InvalidInput(f"{self.label}: {path!r} is too large ({m.size} bytes)")
        r = RangeReader(self.path, m.offset_data, m.size)
        try:
            return r.read(m.size)
        finally:
            r.close()

    def opener(self, path: str) -> tuple[Opener, int]:
        m = self._resolve(path)
        return FileRangeOpener(self.path, m.offset_data, m.size), m.size


class DirTree:
    """Files below a directory (an OCI layout); symlinks are never followed."""

    def __init__(self, root: str, label: str) -> None:
        self.root = os.path.abspath(root)
        self.label = label

    def _rel(self, path: str) -> bytes:
        return safe_relpath(path, "file").encode("utf-8", "surrogateescape")

    def exists(self, path: str) -> bool:
        try:
            with RootDir(self.root) as rd:
                fd = rd.open_file(self._rel(path))
                os.close(fd)
            return True
        except (OSError, Exception):
            return False

    def read(self, path: str, limit: int) -> bytes:
        opener, size = self.opener(path)
        if size > limit:
            raise InvalidInput(f"{self.label}: {path!r} is too large ({size} bytes)")
        r = opener.open()
        try:
            return r.read(size)
        finally:
            r.close()

    def opener(self, path: str) -> tuple[Opener, int]:
        rel = self._rel(path)
        try:
            with RootDir(self.root) as rd:
                fd = rd.open_file(rel)
        except FileNotFoundError:
            raise InvalidInput(f"{self.label}: {path} does not exist") from None
        except Exception as e:
            raise InvalidInput(f"{self.label}: cannot open {path}: {e}") from None
        try:
            import stat as _stat

            st = os.fstat(fd)
            if not _stat.S_ISREG(st.st_mode):
                raise InvalidInput(f"{self.label}: {path} is not a regular file")
        finally:
            os.close(fd)
        return DirFileOpener(self.root, rel), st.st_size
