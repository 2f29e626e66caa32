"""A streaming tar reader that behaves exactly like Go's ``archive/tar`` as Docker uses it.

Docker registers a layer by running the stream through two Go tar readers at once: tar-split's
fork (which keeps every raw byte that is not file content, so the stream can be rebuilt) and
the standard library's (which extracts). Their behaviour decides which streams are valid, what
each entry's name, size and metadata are, and which bytes tar-split records. This module
re-implements that behaviour from the format itself:

- headers: V7, USTAR, PAX (``x`` records and ``g`` global headers), GNU (long names ``L``/``K``,
  old sparse ``S``), STAR; octal and base-256 numbers; checksum signed or unsigned;
- the end: two zero blocks, one zero block then EOF, or EOF at a header boundary;
- raw accounting: :attr:`TarReader.raw` collects the bytes of the current entry that are not
  file content (padding of the previous entry, header blocks, PAX/GNU data), which tar-split
  stores as a segment.

It never allocates from a header's claimed size: content is handed out in buffer-sized pieces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from dockyard.errors import LayerError

BLOCK = 512
CHUNK = 1 << 20
MAX_SPECIAL_FILE = 1 << 20  # Go's maxSpecialFileSize

# type flags (bytes values)
TYPE_REG = 0x30  # '0'
TYPE_REGA = 0x00  # '\x00'
TYPE_LINK = 0x31  # '1'
TYPE_SYMLINK = 0x32  # '2'
TYPE_CHAR = 0x33  # '3'
TYPE_BLOCK = 0x34  # '4'
TYPE_DIR = 0x35  # '5'
TYPE_FIFO = 0x36  # '6'
TYPE_CONT = 0x37  # '7'
TYPE_XHEADER = 0x78  # 'x'
TYPE_XGLOBAL = 0x67  # 'g'
TYPE_GNU_SPARSE = 0x53  # 'S'
TYPE_GNU_LONGNAME = 0x4C  # 'L'
TYPE_GNU_LONGLINK = 0x4B  # 'K'

_HEADER_ONLY = frozenset((TYPE_LINK, TYPE_SYMLINK, TYPE_CHAR, TYPE_BLOCK, TYPE_DIR, TYPE_FIFO))
_ZERO_BLOCK = bytes(BLOCK)

# format bits (Go's Format)
F_V7 = 1
F_USTAR = 2
F_PAX = 4
F_GNU = 8
F_STAR = 16

_PAX_SCHILY_XATTR = "SCHILY.xattr."


class TarFormatError(LayerError):
    """The stream is not a valid tar archive (Go's ErrHeader and friends)."""


class UnexpectedEOF(TarFormatError):
    pass


class Header:
    """One tar entry as Go's reader returns it. Names are bytes (tar names need not be UTF-8)."""

    __slots__ = (
        "atime_ns",
        "devmajor",
        "devminor",
        "gid",
        "gname",
        "linkname",
        "mode",
        "mtime_ns",
        "name",
        "pax",
        "size",
        "sparse",
        "typeflag",
        "uid",
        "uname",
        "xattrs",
    )

    def __init__(self) -> None:
        self.typeflag = TYPE_REG
        self.name = b""
        self.linkname = b""
        self.size = 0
        self.mode = 0
        self.uid = 0
        self.gid = 0
        self.uname = b""
        self.gname = b""
        self.mtime_ns = 0
        # None is Go's zero time (year 1): "before" every real time.
        self.atime_ns: int | None = None
        self.devmajor = 0
        self.devminor = 0
        self.xattrs: dict[str, bytes] | None = None
        self.pax: dict[str, bytes] | None = None
        # For sparse files: list of (offset, length) data fragments of the logical file.
        self.sparse: list[tuple[int, int]] | None = None

    def __repr__(self) -> str:
        return f"<Header {chr(self.typeflag)!r} {self.name!r} size={self.size}>"


_OCTAL_DIGITS = b"01234567"
_HIGH_BYTES = bytes(range(0x80, 0x100))


def _parse_octal(b: bytes) -> int:
    b = b.strip(b" \x00")
    if not b:
        return 0
    i = b.find(b"\x00")
    if i >= 0:
        b = b[:i]
    # Go's ParseUint(base 8) accepts only the digits 0-7 (no sign, underscore or space).
    if not b or b.translate(None, _OCTAL_DIGITS):
        raise TarFormatError("invalid tar header: bad octal number")
    v = int(b, 8)
    if v >= 1 << 64:
        raise TarFormatError("invalid tar header: number out of range")
    return v if v < 1 << 63 else v - (1 << 64)  # int64(uint64) conversion


def _parse_numeric(b: bytes) -> int:
    if b and b[0] & 0x80:
        inv = 0xFF if b[0] & 0x40 else 0
        x = 0
        for i, c in enumerate(b):
            c ^= inv
            if i == 0:
                c &= 0x7F
            if x >> 56:
                raise TarFormatError("invalid tar header: base-256 number overflows")
            x = (x << 8) | c
        if x >> 63:
            raise TarFormatError("invalid tar header: base-256 number overflows")
        return ~x if inv else x
    return _parse_octal(b)


def _cstr(b: bytes) -> bytes:
    i = b.find(b"\x00")
    return b if i < 0 else b[:i]


def _block_format(blk: bytes) -> int:
    """Go's block.GetFormat: 0 (unknown) when the checksum does not verify."""
    try:
        value = _parse_octal(blk[148:156])
    except TarFormatError:
        return 0
    unsigned = sum(blk) - sum(blk[148:156]) + 8 * 0x20
    if value != unsigned:
        # Some old writers summed signed bytes; Go accepts either.
        outside = blk[:148] + blk[156:]
        high = len(outside) - len(outside.translate(None, _HIGH_BYTES))
        if value != unsigned - 256 * high:
            return 0
    magic = blk[257:263]
    if magic == b"ustar\x00":
        if blk[508:512] == b"tar\x00":
            return F_STAR
        return F_USTAR | F_PAX
    if magic == b"ustar " and blk[263:265] == b" \x00":
        return F_GNU
    return F_V7


def _parse_pax_time(v: bytes) -> int:
    s = v.decode("latin-1")
    secs_s, _, frac = s.partition(".")
    try:
        if not secs_s or not (secs_s.lstrip("+-").isdigit()) or secs_s.count("-") + secs_s.count("+") > 1:
            raise ValueError
        secs = int(secs_s)
    except ValueError:
        raise TarFormatError(f"invalid tar header: bad PAX time {s!r}") from None
    if not (-(1 << 63) <= secs < (1 << 63)):
        raise TarFormatError(f"invalid tar header: bad PAX time {s!r}")
    if "." not in s or frac == "":
        return secs * 1_000_000_000
    if frac.strip("0123456789") != "":
        raise TarFormatError(f"invalid tar header: bad PAX time {s!r}")
    ns = int((frac + "000000000")[:9])
    if secs_s.startswith("-"):
        return secs * 1_000_000_000 - ns
    return secs * 1_000_000_000 + ns


def _parse_int64(v: bytes, what: str) -> int:
    s = v.decode("latin-1")
    body = s[1:] if s[:1] in ("+", "-") else s
    if not body.isdigit() or not body.isascii():
        raise TarFormatError(f"invalid tar header: bad PAX {what} {s!r}")
    n = int(s)
    if not (-(1 << 63) <= n < (1 << 63)):
        raise TarFormatError(f"invalid tar header: PAX {what} out of range")
    return n


def _parse_pax_records(buf: bytes) -> dict[str, bytes]:
    """Go's parsePAX: records ``"<len> key=value\\n"``; GNU sparse 0.0 offsets folded into a map."""
    recs: dict[str, bytes] = {}
    sparse_map: list[bytes] = []
    while buf:
        sp = buf.find(b" ")
        if sp < 0:
            raise TarFormatError("invalid tar header: bad PAX record")
        try:
            lenb = buf[:sp]
            if not lenb or not lenb.lstrip(b"+-").isdigit():
                raise ValueError
            n = int(lenb)
        except ValueError:
            raise TarFormatError("invalid tar header: bad PAX record length") from None
        if n < 5 or len(buf) < n:
            raise TarFormatError("invalid tar header: bad PAX record length")
        rec, nl, buf = buf[sp + 1 : n - 1], buf[n - 1 : n], buf[n:]
        if nl != b"\n":
            raise TarFormatError("invalid tar header: PAX record not newline-terminated")
        eq = rec.find(b"=")
        if eq < 0:
            raise TarFormatError("invalid tar header: PAX record without '='")
        kb, v = rec[:eq], rec[eq + 1 :]
        if not kb:
            raise TarFormatError("invalid tar header: empty PAX key")
        k = kb.decode("utf-8", "surrogateescape")
        if k in ("path", "linkpath", "uname", "gname"):
            if b"\x00" in v:
                raise TarFormatError(f"invalid tar header: NUL in PAX {k}")
        elif b"\x00" in kb:
            raise TarFormatError("invalid tar header: NUL in PAX key")
        if k in ("GNU.sparse.offset", "GNU.sparse.numbytes"):
            want = "GNU.sparse.offset" if len(sparse_map) % 2 == 0 else "GNU.sparse.numbytes"
            if k != want or b"," in v:
                raise TarFormatError("invalid tar header: bad GNU sparse PAX record")
            sparse_map.append(v)
        else:
            recs[k] = v
    if sparse_map:
        recs["GNU.sparse.map"] = b",".join(sparse_map)
    return recs


class TarReader:
    """Reads entries from an uncompressed tar stream.

    ``read(n)`` returns up to ``n`` bytes of the stream (``b""`` at its end). Every byte the reader
    consumes goes through ``read`` exactly once, so a caller can hash the stream there.
    """

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._buf = b""
        self._pos = 0
        self._eof = False
        self.pad = 0
        self.remaining = 0  # physical bytes of the current entry's data not yet consumed
        self.raw = bytearray()  # raw bytes (non-content) consumed since the last next()
        self._sparse: _SparseState | None = None
        self.done = False

    # ------------------------------------------------------------------ buffer primitives
    def _fill(self) -> bool:
        """Read another chunk; False at end of stream."""
        if self._eof:
            return False
        data = self._read(CHUNK)
        if not data:
            self._eof = True
            return False
        if self._pos < len(self._buf):
            self._buf = self._buf[self._pos :] + data
        else:
            self._buf = data
        self._pos = 0
        return True

    def _take(self, n: int) -> bytes:
        """Up to n bytes (fewer only at end of stream)."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos >= n:
            self._pos = pos + n
            return buf[pos : pos + n]
        parts = [buf[pos:]]
        got = len(buf) - pos
        self._buf, self._pos = b"", 0
        while got < n:
            if not self._fill():
                break
            need = n - got
            piece = self._buf[:need]
            self._pos = len(piece)
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    def _take_exact(self, n: int) -> bytes:
        b = self._take(n)
        if len(b) != n:
            raise UnexpectedEOF("unexpected end of tar stream (truncated archive)")
        return b

    def _skip_raw(self, n: int) -> None:
        """Consume n bytes into the raw buffer (Go's discard with raw accounting)."""
        while n > 0:
            piece = self._take(min(n, CHUNK))
            if not piece:
                raise UnexpectedEOF("unexpected end of tar stream (truncated entry data)")
            self.raw += piece
            n -= len(piece)

    def take_raw(self) -> bytearray:
        """The raw bytes collected so far (Go's RawBytes: reading them resets the buffer)."""
        raw = self.raw
        if raw:
            self.raw = bytearray()
        return raw

    # ------------------------------------------------------------------ content
    def data(self) -> Iterator[memoryview]:
        """Yield the current entry's logical content in pieces (memoryviews valid until the next)."""
        if self._sparse is not None:
            yield from self._sparse_data()
            return
        n = self.remaining
        while n > 0:
            buf, pos = self._buf, self._pos
            avail = len(buf) - pos
            if avail <= 0:
                if not self._fill():
                    raise UnexpectedEOF("unexpected end of tar stream (truncated file data)")
                continue
            k = n if n < avail else avail
            self._pos = pos + k
            n -= k
            self.remaining = n
            yield memoryview(buf)[pos : pos + k]

    def _physical(self, n: int) -> Iterator[memoryview]:
        while n > 0:
            buf, pos = self._buf, self._pos
            avail = len(buf) - pos
            if avail <= 0:
                if not self._fill():
                    raise UnexpectedEOF("unexpected end of tar stream (truncated sparse data)")
                continue
            k = n if n < avail else avail
            self._pos = pos + k
            n -= k
            self.remaining -= k
            yield memoryview(buf)[pos : pos + k]

    def _sparse_data(self) -> Iterator[memoryview]:
        """Logical content of a sparse entry: data fragments from the stream, holes as zeros.

        Yields (memoryview) pieces; holes are yielded as views of a zero buffer. Consumers that
        can seek should use :meth:`sparse_fragments` instead.
        """
        st = self._sparse
        assert st is not None
        zeros = memoryview(bytes(min(CHUNK, max(1, st.size))))
        pos = 0
        for off, length in st.fragments:
            hole = off - pos
            while hole > 0:
                k = min(hole, len(zeros))
                yield zeros[:k]
                hole -= k
            yield from self._physical(length)
            pos = off + length
        tail = st.size - pos
        while tail > 0:
            k = min(tail, len(zeros))
            yield zeros[:k]
            tail -= k
        if self.remaining:
            raise TarFormatError("invalid tar header: sparse file has unreferenced data")
        self._sparse = None

    def sparse_fragments(self) -> Iterator[tuple[int, memoryview]]:
        """For a sparse entry: (offset, piece) for the data only, holes skipped."""
        st = self._sparse
        assert st is not None
        for off, length in st.fragments:
            p = off
            for piece in self._physical(length):
                yield p, piece
                p += len(piece)
        if self.remaining:
            raise TarFormatError("invalid tar header: sparse file has unreferenced data")
        self._sparse = None

    @property
    def is_sparse(self) -> bool:
        return self._sparse is not None

    # ------------------------------------------------------------------ headers
    def _read_header(self) -> tuple[Header, bytes, int] | None:
        """Go's readHeader. None at a clean end of archive."""
        blk = self._take(BLOCK)
        if len(blk) < BLOCK:
            if not blk:
                return None  # EOF exactly at a header boundary
            raise UnexpectedEOF("unexpected end of tar stream (truncated header)")
        self.raw += blk
        if blk == _ZERO_BLOCK:
            blk2 = self._take(BLOCK)
            if len(blk2) < BLOCK:
                if not blk2:
                    return None  # exactly one zero block, then EOF
                raise UnexpectedEOF("unexpected end of tar stream (truncated end-of-archive marker)")
            self.raw += blk2
            if blk2 == _ZERO_BLOCK:
                return None
            raise TarFormatError("invalid tar header: a zero block followed by data")
        fmt = _block_format(blk)
        if fmt == 0:
            raise TarFormatError("invalid tar header (bad checksum or not a tar archive)")
        h = Header()
        h.typeflag = blk[156]
        h.name = _cstr(blk[0:100])
        h.linkname = _cstr(blk[157:257])
        h.size = _parse_numeric(blk[124:136])
        h.mode = _parse_numeric(blk[100:108])
        h.uid = _parse_numeric(blk[108:116])
        h.gid = _parse_numeric(blk[116:124])
        h.mtime_ns = _parse_numeric(blk[136:148]) * 1_000_000_000
        if fmt > F_V7:
            h.uname = _cstr(blk[265:297])
            h.gname = _cstr(blk[297:329])
            h.devmajor = _parse_numeric(blk[329:337])
            h.devminor = _parse_numeric(blk[337:345])
            prefix = b""
            if fmt & (F_USTAR | F_PAX):
                prefix = _cstr(blk[345:500])
            elif fmt & F_STAR:
                prefix = _cstr(blk[345:476])
                h.atime_ns = _parse_numeric(blk[476:488]) * 1_000_000_000
                _parse_numeric(blk[488:500])  # ctime: Go parses (and rejects) it too
            elif fmt & F_GNU:
                try:
                    a = blk[345:357]
                    c = blk[357:369]
                    if a[0] != 0:
                        h.atime_ns = _parse_numeric(a) * 1_000_000_000
                    if c[0] != 0:
                        _parse_numeric(c)
                except TarFormatError:
                    # pre-Go1.8 writers put a USTAR prefix here; Go falls back to reading it.
                    h.atime_ns = None
                    s = _cstr(blk[345:500])
                    if all(0 < ch < 0x80 for ch in s):
                        prefix = s
            if prefix:
                h.name = prefix + b"/" + h.name
        return h, blk, fmt

    def _read_special(self) -> bytes:
        """Content of a PAX/GNU meta entry (Go's readSpecialFile, limited to 1 MiB)."""
        n = self.remaining
        if n > MAX_SPECIAL_FILE:
            raise TarFormatError("invalid tar header: PAX or GNU long-name data larger than 1 MiB")
        data = self._take(n)
        if len(data) != n:
            raise UnexpectedEOF("unexpected end of tar stream (truncated extended header)")
        self.remaining = 0
        self.raw += data
        return data

    def _set_data(self, h: Header) -> None:
        """Go's handleRegularFile."""
        nb = 0 if h.typeflag in _HEADER_ONLY else h.size
        if nb < 0:
            raise TarFormatError("invalid tar header: negative size")
        self.pad = -nb & (BLOCK - 1)
        self.remaining = nb

    def next(self) -> Header | None:
        """Advance to the next entry; None at the end of the archive.

        Unread content of the previous entry is consumed (into :attr:`raw`, as Go does).
        """
        if self.done:
            return None
        self.raw = bytearray()
        self._sparse = None
        pax: dict[str, bytes] | None = None
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            if self.remaining:
                self._skip_raw(self.remaining)
                self.remaining = 0
            if self.pad:
                p = self._take(self.pad)
                if len(p) != self.pad:
                    # Go's tryReadFull: the stream ended inside the padding -> treated as the end.
                    self.pad = 0
                    self.done = True
                    return None
                self.raw += p
                self.pad = 0
            got = self._read_header()
            if got is None:
                self.done = True
                return None
            h, blk, fmt = got
            self._set_data(h)
            tf = h.typeflag
            if tf in (TYPE_XHEADER, TYPE_XGLOBAL):
                pax = _parse_pax_records(self._read_special())
                if tf == TYPE_XGLOBAL:
                    _merge_pax(h, pax)
                    g = Header()
                    g.typeflag = TYPE_XGLOBAL
                    g.name = h.name
                    g.xattrs = h.xattrs
                    g.pax = pax
                    g.size = 0
                    g.mtime_ns = 0
                    return g
                continue
            if tf in (TYPE_GNU_LONGNAME, TYPE_GNU_LONGLINK):
                data = _cstr(self._read_special())
                if tf == TYPE_GNU_LONGNAME:
                    long_name = data
                else:
                    long_link = data
                continue
            if pax:
                _merge_pax(h, pax)
            if long_name:
                h.name = long_name
            if long_link:
                h.linkname = long_link
            if tf == TYPE_REGA:
                h.typeflag = TYPE_DIR if h.name.endswith(b"/") else TYPE_REG
            self._set_data(h)
            self._handle_sparse(h, blk, fmt)
            return h

    # ------------------------------------------------------------------ sparse
    def _handle_sparse(self, h: Header, blk: bytes, fmt: int) -> None:
        frags: list[tuple[int, int]] | None = None
        if h.typeflag == TYPE_GNU_SPARSE:
            if fmt != F_GNU:
                raise TarFormatError("invalid tar header: old GNU sparse entry in a non-GNU header")
            h.size = _parse_numeric(blk[483:495])
            frags = []
            sblk = blk[386:483]
            nent, isext_at = 4, 96
            while True:
                for i in range(nent):
                    e = sblk[i * 24 : i * 24 + 24]
                    if e[0] == 0:
                        break
                    frags.append((_parse_numeric(e[:12]), _parse_numeric(e[12:24])))
                if sblk[isext_at] > 0:
                    ext = self._take_exact(BLOCK)
                    self.raw += ext
                    sblk, nent, isext_at = ext, 21, 504
                    continue
                break
        else:
            frags = self._pax_sparse(h)
        if frags is None:
            return
        if h.typeflag in _HEADER_ONLY or not _valid_sparse(frags, h.size):
            raise TarFormatError("invalid tar header: bad sparse map")
        self._sparse = _SparseState(frags, h.size)
        h.sparse = frags

    def _pax_sparse(self, h: Header) -> list[tuple[int, int]] | None:
        recs = h.pax or {}
        major = recs.get("GNU.sparse.major", b"")
        minor = recs.get("GNU.sparse.minor", b"")
        if major == b"0" and minor in (b"0", b"1"):
            is1x0 = False
        elif major == b"1" and minor == b"0":
            is1x0 = True
        elif major or minor:
            return None
        elif recs.get("GNU.sparse.map"):
            is1x0 = False
        else:
            return None
        name = recs.get("GNU.sparse.name")
        if name:
            h.name = name
        size = recs.get("GNU.sparse.size") or recs.get("GNU.sparse.realsize")
        if size:
            h.size = _parse_int64(size, "sparse size")
        if is1x0:
            return self._sparse_map_1x0()
        try:
            n = int(recs.get("GNU.sparse.numblocks", b""))
        except ValueError:
            raise TarFormatError("invalid tar header: bad GNU sparse numblocks") from None
        fields = recs.get("GNU.sparse.map", b"").split(b",")
        if fields == [b""]:
            fields = []
        if n < 0 or len(fields) != 2 * n:
            raise TarFormatError("invalid tar header: bad GNU sparse map")
        try:
            return [(int(fields[i]), int(fields[i + 1])) for i in range(0, len(fields), 2)]
        except ValueError:
            raise TarFormatError("invalid tar header: bad GNU sparse map") from None

    def _sparse_map_1x0(self) -> list[tuple[int, int]]:
        # The map sits at the start of the data section, in whole blocks; Go reads it through the
        # content reader, so (as in tar-split) these bytes are not raw-accounted.
        buf = b""
        lines: list[bytes] = []

        def need(count: int) -> None:
            nonlocal buf
            while len(lines) < count:
                if self.remaining < BLOCK:
                    raise UnexpectedEOF("unexpected end of tar stream (truncated sparse map)")
                blk = self._take_exact(BLOCK)
                self.remaining -= BLOCK
                buf += blk
                *done, buf = buf.split(b"\n")
                lines.extend(done)
                if len(lines) > 2 * 1024 * 1024:
                    raise TarFormatError("invalid tar header: sparse map too large")

        need(1)
        try:
            n = int(lines[0])
        except ValueError:
            raise TarFormatError("invalid tar header: bad sparse map") from None
        if n < 0:
            raise TarFormatError("invalid tar header: bad sparse map")
        need(1 + 2 * n)
        try:
            return [(int(lines[1 + 2 * i]), int(lines[2 + 2 * i])) for i in range(n)]
        except ValueError:
            raise TarFormatError("invalid tar header: bad sparse map") from None

    # ------------------------------------------------------------------ end of stream
    def trailing(self) -> Iterator[bytes]:
        """After the end of the archive: the rest of the stream in 1 MiB pieces counted from the
        end marker (as tar-split reads it), the last one shorter."""
        pending = self._buf[self._pos :]
        self._buf, self._pos = b"", 0
        while True:
            while len(pending) >= CHUNK:
                yield pending[:CHUNK]
                pending = pending[CHUNK:]
            if not self._fill():
                break
            pending += self._buf
            self._buf, self._pos = b"", 0
        if pending:
            yield pending


class _SparseState:
    __slots__ = ("fragments", "size")

    def __init__(self, fragments: list[tuple[int, int]], size: int) -> None:
        self.fragments = [f for f in fragments if f[1] > 0]
        self.size = size


def _valid_sparse(frags: list[tuple[int, int]], size: int) -> bool:
    if size < 0:
        return False
    pre_end = 0
    for off, length in frags:
        if off < 0 or length < 0 or off + length > size or off < pre_end or off + length >= 1 << 63:
            return False
        pre_end = off + length
    return True


def _merge_pax(h: Header, pax: dict[str, bytes]) -> None:
    """Go's mergePAX: empty values keep the USTAR value."""
    for k, v in pax.items():
        if not v:
            continue
        if k == "path":
            h.name = v
        elif k == "linkpath":
            h.linkname = v
        elif k == "uname":
            h.uname = v
        elif k == "gname":
            h.gname = v
        elif k == "uid":
            h.uid = _parse_int64(v, "uid")
        elif k == "gid":
            h.gid = _parse_int64(v, "gid")
        elif k == "mtime":
            h.mtime_ns = _parse_pax_time(v)
        elif k == "atime":
            h.atime_ns = _parse_pax_time(v)
        elif k == "ctime":
            _parse_pax_time(v)
        elif k == "size":
            h.size = _parse_int64(v, "size")
        elif k.startswith(_PAX_SCHILY_XATTR):
            if h.xattrs is None:
                h.xattrs = {}
            h.xattrs[k[len(_PAX_SCHILY_XATTR) :]] = v
    h.pax = pax
