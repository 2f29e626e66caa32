"""A small streaming tar writer for the archives dockyard produces (saves, exports).

Headers come from :mod:`tarfile` (PAX where a name or number needs it); content is streamed by
the caller, so a layer never sits in memory. Output ends with two zero blocks, no record padding
(as Go's writer).
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterable
from typing import Any

BLOCK = 512


class TarWriter:
    def __init__(
        self, write: Callable[[bytes | memoryview], Any], *, uname: str = "", gname: str = ""
    ) -> None:
        self._write = write
        self.uname = uname
        self.gname = gname
        self.offset = 0

    def _emit(self, data: bytes | memoryview) -> None:
        self._write(data)
        self.offset += len(data)

    def _header(self, info: tarfile.TarInfo, type_bits: int | None = None) -> None:
        """Emit ``info``'s header. Go's archive/tar writes the file-type bits into the mode field
        (``040755``, ``0100644``): pass them as ``type_bits`` to get Docker's exact headers."""
        info.uname = info.uname or self.uname
        info.gname = info.gname or self.gname
        buf = info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")
        if type_bits:
            blk = bytearray(buf[-BLOCK:])
            blk[100:108] = b"%07o\x00" % ((info.mode & 0o7777) | type_bits)
            blk[148:156] = b" " * 8
            blk[148:155] = b"%06o\x00" % sum(blk)
            buf = buf[:-BLOCK] + bytes(blk)
        self._emit(buf)

    def add_dir(self, name: str, *, mode: int = 0o755, mtime: int = 0, uid: int = 0, gid: int = 0) -> None:
        ti = tarfile.TarInfo(name.rstrip("/") + "/")
        ti.type = tarfile.DIRTYPE
        ti.mode = mode
        ti.mtime = mtime
        ti.uid, ti.gid = uid, gid
        self._header(ti, 0o040000)

    def add_symlink(self, name: str, target: str, *, mtime: int = 0) -> None:
        ti = tarfile.TarInfo(name)
        ti.type = tarfile.SYMTYPE
        ti.linkname = target
        ti.mode = 0o777
        ti.mtime = mtime
        self._header(ti, 0o120000)

    def add_bytes(self, name: str, data: bytes, *, mode: int = 0o644, mtime: int = 0) -> None:
        self.add_stream(name, len(data), [data], mode=mode, mtime=mtime)

    def add_stream(
        self, name: str, size: int, chunks: Iterable[bytes | memoryview], *, mode: int = 0o644, mtime: int = 0
    ) -> None:
        ti = tarfile.TarInfo(name)
        ti.size = size
        ti.mode = mode
        ti.mtime = mtime
        self._header(ti, 0o100000)
        n = 0
        for c in chunks:
            n += len(c)
            if n > size:
                raise ValueError(f"{name}: more data than the {size} bytes announced")
            self._emit(c)
        if n != size:
            raise ValueError(f"{name}: {n} bytes written, {size} announced")
        self.pad()

    def begin_file(self, name: str, size: int, *, mode: int = 0o644, mtime: int = 0) -> None:
        ti = tarfile.TarInfo(name)
        ti.size = size
        ti.mode = mode
        ti.mtime = mtime
        self._header(ti, 0o100000)

    def write_data(self, data: bytes | memoryview) -> None:
        self._emit(data)

    def pad(self) -> None:
        rem = self.offset % BLOCK
        if rem:
            self._emit(bytes(BLOCK - rem))

    def close(self) -> None:
        self._emit(bytes(2 * BLOCK))
