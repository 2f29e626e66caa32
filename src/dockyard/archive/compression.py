"""Compressed layer streams: detection by magic bytes, fast decompressors, verifying readers.

gzip goes through ISA-L (``isal``), zstd through ``zstandard``; bzip2 and xz (which ``docker
load`` also accepts) through the standard library.
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
from typing import Any, Protocol, cast

from dockyard.errors import InvalidInput

GZIP = "gzip"
ZSTD = "zstd"
BZIP2 = "bzip2"
XZ = "xz"
NONE = "none"


def detect(head: bytes) -> str:
    if head[:3] == b"\x1f\x8b\x08":
        return GZIP
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return ZSTD
    if head[:3] == b"BZh":
        return BZIP2
    if head[:6] == b"\xfd7zXZ\x00":
        return XZ
    return NONE


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class VerifyingReader:
    """Reads a blob once, hashing and counting it, so its digest and size can be checked.

    ``peek`` looks at the first bytes (for compression detection) without losing them.
    """

    def __init__(
        self,
        f: Readable,
        expected_digest: str | None = None,
        expected_size: int | None = None,
        what: str = "blob",
    ) -> None:
        self._f = f
        self._h = hashlib.sha256()
        self.count = 0
        self.expected_digest = expected_digest
        self.expected_size = expected_size
        self.what = what
        self._peeked = b""
        self.eof = False

    def peek(self, n: int) -> bytes:
        while len(self._peeked) < n:
            data = self._f.read(n - len(self._peeked))
            if not data:
                break
            self._h.update(data)
            self.count += len(data)
            self._peeked += data
        return self._peeked[:n]

    def read(self, n: int = -1) -> bytes:
        if self._peeked:
            if n < 0 or n >= len(self._peeked):
                out = self._peeked
                self._peeked = b""
                if n < 0:
                    return out + self.read(-1)
                return out
            out, self._peeked = self._peeked[:n], self._peeked[n:]
            return out
        if n < 0:
            chunks: list[bytes] = []
            while True:
                c = self.read(1 << 20)
                if not c:
                    return b"".join(chunks)
                chunks.append(c)
        data = self._f.read(n)
        if data:
            self._h.update(data)
            self.count += len(data)
            if self.expected_size is not None and self.count > self.expected_size:
                raise InvalidInput(
                    f"{self.what}: size mismatch: more than the {self.expected_size} bytes its descriptor gives"
                )
        else:
            self.eof = True
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._h.hexdigest()

    def verify(self) -> str:
        """Read to the end and check size and digest; returns the digest."""
        self.drain()
        if self.expected_size is not None and self.count < self.expected_size:
            raise InvalidInput(
                f"{self.what}: size mismatch: the descriptor says {self.expected_size} bytes, the blob ended "
                f"after {self.count} (truncated, or the connection was lost)"
            )
        if self.expected_size is not None and self.count != self.expected_size:
            raise InvalidInput(
                f"{self.what}: size mismatch: descriptor says {self.expected_size} bytes, blob has {self.count}"
            )
        d = self.digest
        if self.expected_digest is not None and d != self.expected_digest:
            raise InvalidInput(f"{self.what}: digest mismatch: expected {self.expected_digest}, got {d}")
        return d


def decompressor(raw: VerifyingReader, kind: str | None = None) -> Readable:
    """A reader of the uncompressed stream (``kind`` None: detect from the first bytes)."""
    if kind is None:
        kind = detect(raw.peek(6))
    if kind == GZIP:
        from isal import igzip

        return cast(Readable, igzip.GzipFile(fileobj=raw, mode="rb"))  # type: ignore[no-untyped-call]
    if kind == ZSTD:
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(
            cast(Any, raw), read_size=1 << 20, read_across_frames=True, closefd=False
        )
        return cast(Readable, reader)
    if kind == BZIP2:
        return cast(Readable, bz2.BZ2File(cast(Any, raw)))
    if kind == XZ:
        return cast(Readable, lzma.LZMAFile(cast(Any, raw)))
    return raw


def kind_of_media_type(media_type: str | None) -> str | None:
    """Compression named by an OCI/Docker layer media type (None: unknown, detect)."""
    if not media_type:
        return None
    if media_type.endswith("+gzip") or media_type.endswith(".tar.gzip") or media_type.endswith("tar.gzip"):
        return GZIP
    if media_type.endswith("+zstd"):
        return ZSTD
    if media_type.endswith(".tar") or media_type.endswith("layer.v1.tar"):
        return NONE
    return None
