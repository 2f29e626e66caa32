"""What a source hands to a destination: images as configs plus layer blobs to open.

An image source (a docker-save tar, an OCI layout, a registry, the store) yields
:class:`SourceImage` views. Their layers are :class:`LayerBlob` records whose ``opener`` is a
small picklable object, so a worker process can open and stream the blob on its own. This is
the contract between :mod:`dockyard.sources` and :mod:`dockyard.destinations`, so it lives
below both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol

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
