"""CRC-64/GO-ISO, the checksum tar-split stores for every file's content.

Go's ``hash/crc64`` with the ISO table: reflected polynomial 0xD800000000000000, init and xorout
all ones. ``fastcrc`` computes it at several GB/s; the table version is the reference.
"""

from __future__ import annotations

from collections.abc import Callable

_POLY = 0xD800000000000000
_MASK = 0xFFFFFFFFFFFFFFFF


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return table


def crc64_reference(data: bytes | memoryview, crc: int = 0) -> int:
    """Slow pure-Python CRC-64/GO-ISO; ``crc`` is the value for the bytes before ``data``."""
    t = _TABLE
    c = crc ^ _MASK
    for x in bytes(data):
        c = t[(c ^ x) & 0xFF] ^ (c >> 8)
    return c ^ _MASK


_TABLE = _make_table()

crc64_update: Callable[..., int]
try:
    from fastcrc import crc64 as _fast

    def _fast_update(data: bytes | memoryview, crc: int = 0) -> int:
        return int(_fast.go_iso(data, crc)) if crc else int(_fast.go_iso(data))

    crc64_update = _fast_update
except ImportError:  # pragma: no cover - fastcrc is a declared dependency
    crc64_update = crc64_reference


def crc64_bytes(crc: int) -> bytes:
    """The 8-byte big-endian form tar-split stores (Go's Hash.Sum)."""
    return crc.to_bytes(8, "big")
