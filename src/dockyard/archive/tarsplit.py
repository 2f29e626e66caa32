"""tar-split: the metadata that lets a layer tar be rebuilt byte for byte from its files.

Format (vbatts/tar-split ``tar/storage``), gzip of JSON lines, one object per line:

- ``{"type":2,"payload":"<base64 raw bytes>","position":N}`` -- a *segment*: header blocks,
  PAX/GNU data, padding, the end-of-archive blocks, trailing bytes;
- ``{"type":1,"name":"<tar name>","size":S,"payload":"<base64 crc64>","position":N}`` -- a *file*
  entry for every tar header; ``name_raw`` (base64) replaces ``name`` when it is not UTF-8,
  ``size`` is left out when 0 and ``payload`` is ``null`` then.

``position`` counts every line. Names that clean (``filepath.Clean``) to the same path twice are
refused, as tar-split's packer refuses them ("duplicates of file paths not supported").

:class:`TarSplitWriter` writes the lines exactly as Go's ``json.Encoder`` writes them (so the
uncompressed bytes equal Docker's for the same stream). :func:`assemble` rebuilds the tar.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from typing import IO, Any

from dockyard.archive.crc64 import crc64_bytes, crc64_update
from dockyard.archive.fsutil import RootDir, clean_relative, go_clean
from dockyard.errors import LayerError
from dockyard.gojson import go_string

_b64 = base64.b64encode
_BATCH = 256


class DuplicatePath(LayerError):
    pass


def _utf8_valid(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


class TarSplitWriter:
    """Packs entries into tar-split JSON lines, written through ``write`` in batches."""

    def __init__(self, write: Callable[[bytes], Any]) -> None:
        self._write = write
        self._pos = 0
        self._seen: set[bytes] = set()
        self._lines: list[str] = []

    @property
    def entries(self) -> int:
        return self._pos

    def segment(self, payload: bytes | bytearray | memoryview) -> None:
        self._lines.append(
            '{"type":2,"payload":"%s","position":%d}\n' % (_b64(payload).decode("ascii"), self._pos)
        )
        self._pos += 1
        if len(self._lines) >= _BATCH:
            self.flush()

    def claim(self, name: bytes) -> None:
        """Refuse a name that cleans to one already seen (call before the entry is applied)."""
        cname = go_clean(name)
        if cname in self._seen:
            raise DuplicatePath(
                f"entry {name.decode('utf-8', 'backslashreplace')!r}: the layer names this path twice "
                "(duplicates of file paths not supported)"
            )
        self._seen.add(cname)

    def file(self, name: bytes, size: int, crc: bytes | None) -> None:
        """The file line for an entry whose name was :meth:`claim`-ed."""
        try:
            nm = name.decode("utf-8")
            namepart = ',"name":' + go_string(nm) if nm else ""
        except UnicodeDecodeError:
            namepart = ',"name_raw":"%s"' % _b64(name).decode("ascii")
        sizepart = ',"size":%d' % size if size else ""
        payload = '"%s"' % _b64(crc).decode("ascii") if crc is not None else "null"
        self._lines.append(
            '{"type":1%s%s,"payload":%s,"position":%d}\n' % (namepart, sizepart, payload, self._pos)
        )
        self._pos += 1
        if len(self._lines) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            self._write("".join(self._lines).encode("utf-8"))
            self._lines.clear()


class Entry:
    __slots__ = ("name", "payload", "position", "size", "type")

    def __init__(self, type_: int, name: bytes, size: int, payload: bytes | None, position: int) -> None:
        self.type = type_
        self.name = name
        self.size = size
        self.payload = payload
        self.position = position


SEGMENT = 2
FILE = 1


def read_entries(stream: IO[bytes]) -> Iterator[Entry]:
    """Entries of an uncompressed tar-split JSON stream (with the unpacker's duplicate check)."""
    seen: set[bytes] = set()
    for lineno, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            t = int(obj["type"])
            if obj.get("name_raw"):
                name = base64.b64decode(obj["name_raw"])
            else:
                name = str(obj.get("name", "")).encode("utf-8", "surrogateescape")
            p = obj.get("payload")
            payload = base64.b64decode(p) if p is not None else None
            size = int(obj.get("size", 0))
            pos = int(obj.get("position", 0))
        except (ValueError, KeyError, TypeError) as e:
            raise LayerError(f"tar-split data is corrupt at line {lineno}: {e}") from None
        if t == FILE:
            c = go_clean(name)
            if c in seen:
                raise DuplicatePath(f"tar-split data names {name!r} twice")
            seen.add(c)
        yield Entry(t, name, size, payload, pos)


class AssemblyError(LayerError):
    pass


def assemble(
    tarsplit: IO[bytes],
    root: str | bytes,
    write: Callable[[bytes | memoryview], Any],
    *,
    chunk: int = 1 << 20,
) -> int:
    """Rebuild the layer tar from uncompressed tar-split ``tarsplit`` and the files under ``root``.

    File contents are read without following symlinks and checked against the stored CRC.
    Returns the number of bytes written.
    """
    total = 0
    with RootDir(root) as rd:
        for e in read_entries(tarsplit):
            if e.type == SEGMENT:
                if e.payload:
                    write(e.payload)
                    total += len(e.payload)
                continue
            if e.type != FILE or e.size <= 0:
                continue
            rel = clean_relative(e.name)
            try:
                fd = rd.open_file(rel)
            except (OSError, Exception) as ex:
                raise AssemblyError(
                    f"cannot reassemble layer: {e.name.decode('utf-8', 'backslashreplace')!r}: {ex}"
                ) from None
            try:
                crc = 0
                left = e.size
                while left > 0:
                    data = os.read(fd, min(chunk, left))
                    if not data:
                        break
                    crc = crc64_update(data, crc)
                    write(data)
                    left -= len(data)
                    total += len(data)
            finally:
                os.close(fd)
            name = e.name.decode("utf-8", "backslashreplace")
            if left:
                raise AssemblyError(
                    f"cannot reassemble layer: {name!r} is shorter than recorded ({e.size} bytes)"
                )
            if e.payload is not None and crc64_bytes(crc) != e.payload:
                raise AssemblyError(f"cannot reassemble layer: file integrity checksum failed for {name!r}")
    return total
