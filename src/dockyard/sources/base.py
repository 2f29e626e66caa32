"""What a source hands to a destination: images as configs plus layer blobs to open.

An image source (a docker-save tar, an OCI layout, a registry, the store) yields
:class:`SourceImage` views. Their layers are :class:`LayerBlob` records whose ``opener`` is a
small picklable object, so a worker process can open and stream the blob on its own.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field
from typing import Protocol

from dockyard.archive.fsutil import RootDir, clean_relative
from dockyard.errors import InvalidInput
from dockyard.image.config import ImageConfig
from dockyard.image.reference import Reference


class BlobReader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class Opener(Protocol):
    def open(self) -> BlobReader: ...


class RangeReader:
    """Reads ``length`` bytes of a file from ``offset`` with pread (no shared file position)."""

    def __init__(self, path: str, offset: int, length: int) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._pos = offset
        self._end = offset + length

    def read(self, n: int = -1) -> bytes:
        left = self._end - self._pos
        if n < 0 or n > left:
            n = left
        if n <= 0:
            return b""
        data = os.pread(self._fd, n, self._pos)
        if not data:
            raise InvalidInput("input ended early (file truncated while reading?)")
        self._pos += len(data)
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass(frozen=True)
class FileRangeOpener:
    path: str
    offset: int
    length: int

    def open(self) -> BlobReader:
        return RangeReader(self.path, self.offset, self.length)


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


@dataclass(frozen=True)
class LayerBlob:
    opener: Opener
    diff_id: str
    """The diffID the config promises for this layer."""
    digest: str | None = None
    """Digest of the blob as stored (verified while streaming), when the source knows it."""
    size: int | None = None
    media_type: str | None = None
    compression: str | None = None
    """gzip/zstd/none when the media type says so; None: detect from the bytes."""
    description: str = ""

    def has_partial(self) -> bool:
        """True when an earlier, interrupted download left bytes that this one resumes from."""
        path = getattr(self.opener, "partial_path", None)
        return path is not None and os.path.exists(path)

    def forget_partial(self) -> None:
        """Drop a resumable download's saved bytes (after success, or when they failed to verify)."""
        forget = getattr(self.opener, "forget_partial", None)
        if forget is not None:
            forget()


@dataclass
class SourceImage:
    config: ImageConfig
    layers: list[LayerBlob]
    names: list[Reference] = field(default_factory=list)
    parent: str | None = None
    manifest_digest: str | None = None
    description: str = ""

    @property
    def id(self) -> str:
        return self.config.id


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
