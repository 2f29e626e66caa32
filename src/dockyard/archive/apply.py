"""Apply a layer tar stream into an empty directory, in one streaming pass.

What ends up on disk is what Docker 20.10's overlay2 ``ApplyDiff`` (``archive.Unpack`` with the
overlay whiteout converter) writes for the same stream; the same pass records tar-split and
hashes the stream (the diffID).

Docker's semantics, entry by entry:

- names are cleaned; a ``.`` directory entry is skipped (the root keeps its own metadata);
- missing parent directories are created 0755 root:root with the time of extraction;
- an existing path is removed first unless both it and the entry are directories (then the
  metadata is merged);
- ``.wh.<name>`` becomes a 0:0 character device ``<name>`` owned by the entry's uid/gid;
  ``.wh..wh..opq`` sets ``trusted.overlay.opaque=y`` on its directory;
- owner (lchown), then xattrs (ENOTSUP/EPERM ignored), then mode (not for symlinks, nor for
  hard links to symlinks), then times: access time never before the modification time, times
  before 1970 or after 2262 become 0 (Go's Chtimes) except on symlinks; directory times are set
  at the end;
- hard links stay hard links, symlinks are stored verbatim (never followed).

What dockyard refuses where Docker's chroot would quietly confine: absolute names, names that
climb out with ``..``, writing through a symlink or a non-directory, hard links to anything not
already in this layer, whiteouts of ``.``/``..``, a ``.`` entry that is not a directory. Every
path is reached fd-relative without following symlinks (:mod:`dockyard.archive.fsutil`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dockyard.archive import tarstream as ts
from dockyard.archive.crc64 import crc64_bytes, crc64_update
from dockyard.archive.fsutil import PathEscape, RootDir, clean_relative, go_clean, remove_tree_at
from dockyard.archive.tarsplit import TarSplitWriter
from dockyard.errors import LayerError, NoSpace

WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"

_MAX_NS = (1 << 63) - 1  # Go's maxTime on 64-bit: time.Unix(0, 1<<63-1)
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class ApplyResult:
    diff_id: str
    """sha256 of the whole uncompressed stream, trailing bytes included."""
    size: int
    """Docker's layer ``size``: st_size of non-directories in the diff dir, each inode once."""
    entries: int
    """Number of tar headers (files, dirs, links, whiteouts...)."""
    tar_bytes: int
    """Length of the uncompressed stream."""
    ignored_xattrs: int = 0


class _Node:
    """A non-directory created in this layer (shared by its hard links)."""

    __slots__ = ("is_symlink", "refs", "size")

    def __init__(self, size: int, is_symlink: bool = False) -> None:
        self.size = size
        self.refs = 1
        self.is_symlink = is_symlink


def _chtimes(ns: int) -> int:
    """Go's system.Chtimes: times outside [epoch, 2262] become the epoch."""
    return 0 if ns < 0 or ns > _MAX_NS else ns


def _unix_nano(ns: int) -> int:
    """Go's Time.UnixNano (int64 wrap-around outside 1678..2262)."""
    return ((ns + (1 << 63)) % (1 << 64)) - (1 << 63)


def _go_mkdev(major: int, minor: int) -> int:
    return (((major & 0xFFF) << 8) | (minor & 0xFF) | ((minor & 0xFFF00) << 12)) & 0xFFFFFFFF


def _id(n: int) -> int:
    """A tar uid/gid as Go passes it to chown: the low 32 bits (all ones means "unchanged")."""
    v = n & 0xFFFFFFFF
    return -1 if v == 0xFFFFFFFF else v


def _show(name: bytes) -> str:
    return repr(name.decode("utf-8", "backslashreplace"))


class _Applier:
    def __init__(self, dest: str | bytes) -> None:
        self.rd = RootDir(dest)
        self.dirs: set[bytes] = {b""}
        self.sgid: set[bytes] = set()
        self.nodes: dict[bytes, _Node] = {}
        self.dir_times: list[tuple[bytes, int | None, int]] = []
        self.size = 0
        self.ignored_xattrs = 0
        old = os.umask(0o22)
        os.umask(old)
        self.umask = old

    def close(self) -> None:
        self.rd.close()

    # ------------------------------------------------------------------ helpers
    def _parent(self, parent: bytes) -> int:
        """fd of ``parent``, creating missing directories as Docker's MkdirAll does."""
        if parent in self.dirs:
            return self.rd.dirfd(parent)
        missing = []
        p = parent
        while p not in self.dirs:
            if p in self.nodes:
                kind = "a symlink" if self.nodes[p].is_symlink else "not a directory"
                raise PathEscape(p, f"{kind}; refusing to write through it")
            missing.append(p)
            p = p.rpartition(b"/")[0]
        for p in reversed(missing):
            pp, _, base = p.rpartition(b"/")
            pfd = self.rd.dirfd(pp)
            os.mkdir(base, 0o755, dir_fd=pfd)
            fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
            os.fchown(fd, 0, 0)
            if self.umask & 0o755:
                # Docker runs with umask 022: 0755, plus the setgid bit a setgid parent passes on
                os.fchmod(fd, 0o755 | (stat.S_ISGID if pp in self.sgid else 0))
            self.rd.cached(p, fd)
            self.dirs.add(p)
            if pp in self.sgid:
                self.sgid.add(p)  # inherited from the parent by the kernel, as in Docker
        return self.rd.dirfd(parent)

    def _remove(self, rel: bytes, pfd: int, base: bytes) -> None:
        remove_tree_at(pfd, base)
        self.rd.forget(rel)
        prefix = rel + b"/"
        for d in [d for d in self.dirs if d == rel or d.startswith(prefix)]:
            self.dirs.discard(d)
            self.sgid.discard(d)
        for k in [k for k in self.nodes if k == rel or k.startswith(prefix)]:
            node = self.nodes.pop(k)
            node.refs -= 1
            if node.refs == 0:
                self.size -= node.size

    def _add_node(self, rel: bytes, node: _Node) -> None:
        self.nodes[rel] = node
        self.size += node.size

    def _set_xattrs(self, target: int | bytes, xattrs: dict[str, bytes], name: bytes) -> None:
        """Docker's rule: xattrs the filesystem refuses (ENOTSUP, EPERM) are skipped."""
        follow = isinstance(target, int)
        for k, v in xattrs.items():
            try:
                os.setxattr(target, k, v, follow_symlinks=follow)
            except OSError as e:
                if e.errno in (errno.ENOTSUP, errno.EPERM):
                    self.ignored_xattrs += 1
                    continue
                if e.errno in (errno.ENOSPC, errno.E2BIG, errno.ERANGE):
                    raise LayerError(
                        f"entry {_show(name)}: xattr {k} ({len(v)} bytes) does not fit on this filesystem"
                    ) from None
                raise

    def _xattrs_fd(self, fd: int, xattrs: dict[str, bytes], name: bytes) -> None:
        self._set_xattrs(fd, xattrs, name)

    def _xattrs_at(self, pfd: int, base: bytes, xattrs: dict[str, bytes]) -> None:
        # No lsetxattrat(2): go through the parent's /proc fd link, which cannot be redirected.
        self._set_xattrs(b"/proc/self/fd/%d/%s" % (pfd, base), xattrs, base)

    def _file_times(self, h: ts.Header) -> tuple[int, int]:
        a = h.atime_ns
        m = h.mtime_ns
        if a is None or a < m:
            a = m
        return a, m

    # ------------------------------------------------------------------ entries
    def apply(self, h: ts.Header, tr: ts.TarReader) -> int | None:
        """Apply one entry, consuming its content. Returns the content CRC (None if size 0)."""
        tf = h.typeflag
        if tf == ts.TYPE_XGLOBAL:
            return self._consume(h, tr)
        name = h.name
        cleaned = go_clean(name)
        if cleaned.startswith(b"/"):
            raise LayerError(f"entry {_show(name)}: absolute path; refusing to extract outside the layer")
        if cleaned == b".." or cleaned.startswith(b"../"):
            raise LayerError(f"entry {_show(name)}: path climbs out of the layer with '..'")
        if cleaned == b".":
            if tf != ts.TYPE_DIR:
                raise LayerError(f"entry {_show(name)}: the layer root '.' must be a directory")
            return self._consume(h, tr)
        rel = cleaned
        parent, _, base = rel.rpartition(b"/")
        pfd = self._parent(parent)

        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(h, rel, pfd, parent, base)
            return self._consume(h, tr)

        is_dir = rel in self.dirs
        if (is_dir or rel in self.nodes) and not (is_dir and tf == ts.TYPE_DIR):
            self._remove(rel, pfd, base)
            is_dir = False

        mode = h.mode & 0o7777
        if tf == ts.TYPE_REG:
            return self._regular(h, tr, rel, pfd, base, mode)
        if tf == ts.TYPE_DIR:
            self._dir(h, rel, pfd, parent, base, mode, is_dir)
            return self._consume(h, tr)
        if tf == ts.TYPE_SYMLINK:
            self._symlink(h, rel, pfd, base)
            return self._consume(h, tr)
        if tf == ts.TYPE_LINK:
            self._hardlink(h, rel, pfd, base, mode)
            return self._consume(h, tr)
        if tf in (ts.TYPE_CHAR, ts.TYPE_BLOCK, ts.TYPE_FIFO):
            self._special(h, rel, pfd, base, mode)
            return self._consume(h, tr)
        raise LayerError(f"entry {_show(name)}: unsupported tar entry type {chr(tf)!r}")

    def _consume(self, h: ts.Header, tr: ts.TarReader) -> int | None:
        if h.size <= 0:
            for _ in tr.data():
                pass
            return None
        crc = 0
        for piece in tr.data():
            crc = crc64_update(piece, crc)
        return crc

    def _whiteout(self, h: ts.Header, rel: bytes, pfd: int, parent: bytes, base: bytes) -> None:
        if base == OPAQUE_MARKER:
            os.setxattr(pfd, OPAQUE_XATTR, b"y")
            return
        orig = base[len(WHITEOUT_PREFIX) :]
        if orig in (b"", b".", b".."):
            raise LayerError(f"entry {_show(h.name)}: whiteout of {_show(orig or b'')} is not a valid path")
        orel = parent + b"/" + orig if parent else orig
        if orel in self.dirs or orel in self.nodes:
            raise LayerError(
                f"entry {_show(h.name)}: whiteout of {_show(orel)}, which this layer also creates"
            )
        os.mknod(orig, stat.S_IFCHR, 0, dir_fd=pfd)
        os.chown(orig, _id(h.uid), _id(h.gid), dir_fd=pfd, follow_symlinks=False)
        self._add_node(orel, _Node(0))

    def _regular(
        self, h: ts.Header, tr: ts.TarReader, rel: bytes, pfd: int, base: bytes, mode: int
    ) -> int | None:
        fd = os.open(base, _FILE_FLAGS, mode & 0o777, dir_fd=pfd)
        try:
            crc = 0
            write = os.write
            if tr.is_sparse:
                zero_crc = _ZeroCrc()
                pos = 0
                for off, piece in tr.sparse_fragments():
                    if off > pos:
                        crc = zero_crc.extend(crc, off - pos)
                    crc = crc64_update(piece, crc)
                    while piece:
                        n = os.pwrite(fd, piece, off)
                        piece = piece[n:]
                        off += n
                    pos = off
                if h.size > pos:
                    crc = zero_crc.extend(crc, h.size - pos)
                os.ftruncate(fd, h.size)
            else:
                for piece in tr.data():
                    crc = crc64_update(piece, crc)
                    n = write(fd, piece)
                    while n < len(piece):
                        piece = piece[n:]
                        n = write(fd, piece)
            os.fchown(fd, _id(h.uid), _id(h.gid))
            if h.xattrs:
                self._xattrs_fd(fd, h.xattrs, h.name)
            if mode & 0o7000 or (mode & ~self.umask) != mode:
                os.fchmod(fd, mode)
            a, m = self._file_times(h)
            os.utime(fd, ns=(_chtimes(a), _chtimes(m)))
        finally:
            os.close(fd)
        self._add_node(rel, _Node(h.size))
        return crc if h.size > 0 else None

    def _dir(
        self, h: ts.Header, rel: bytes, pfd: int, parent: bytes, base: bytes, mode: int, exists: bool
    ) -> None:
        if not exists:
            os.mkdir(base, mode & 0o777, dir_fd=pfd)
            self.dirs.add(rel)
            fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
            self.rd.cached(rel, fd)
        else:
            fd = self.rd.dirfd(rel)
        os.fchown(fd, _id(h.uid), _id(h.gid))
        if h.xattrs:
            self._xattrs_fd(fd, h.xattrs, h.name)
        if exists or mode & 0o7000 or (mode & ~self.umask) != mode or parent in self.sgid:
            os.fchmod(fd, mode)
        if mode & stat.S_ISGID:
            self.sgid.add(rel)
        else:
            self.sgid.discard(rel)
        self.dir_times.append((rel, h.atime_ns, h.mtime_ns))

    def _symlink(self, h: ts.Header, rel: bytes, pfd: int, base: bytes) -> None:
        os.symlink(h.linkname, base, dir_fd=pfd)
        os.chown(base, _id(h.uid), _id(h.gid), dir_fd=pfd, follow_symlinks=False)
        if h.xattrs:
            self._xattrs_at(pfd, base, h.xattrs)
        a, m = self._file_times(h)
        os.utime(base, ns=(_unix_nano(a), _unix_nano(m)), dir_fd=pfd, follow_symlinks=False)
        self._add_node(rel, _Node(len(h.linkname), is_symlink=True))

    def _hardlink(self, h: ts.Header, rel: bytes, pfd: int, base: bytes, mode: int) -> None:
        target = clean_relative(h.linkname)
        node = self.nodes.get(target)
        if node is None:
            what = "a directory" if target in self.dirs else "not in the layer before this entry"
            raise LayerError(f"entry {_show(h.name)}: hard link to {_show(h.linkname)}, which is {what}")
        tparent, _, tbase = target.rpartition(b"/")
        tpfd = self.rd.dirfd(tparent)
        os.link(tbase, base, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
        node.refs += 1
        self.nodes[rel] = node
        os.chown(base, _id(h.uid), _id(h.gid), dir_fd=pfd, follow_symlinks=False)
        if h.xattrs:
            self._xattrs_at(pfd, base, h.xattrs)
        if not node.is_symlink:
            # base is the hard link we just made (not a symlink), so following is harmless.
            os.chmod(base, mode, dir_fd=pfd)
            a, m = self._file_times(h)
            os.utime(base, ns=(_chtimes(a), _chtimes(m)), dir_fd=pfd, follow_symlinks=False)

    def _special(self, h: ts.Header, rel: bytes, pfd: int, base: bytes, mode: int) -> None:
        kind = {ts.TYPE_CHAR: stat.S_IFCHR, ts.TYPE_BLOCK: stat.S_IFBLK, ts.TYPE_FIFO: stat.S_IFIFO}[
            h.typeflag
        ]
        dev = _go_mkdev(h.devmajor, h.devminor) if kind != stat.S_IFIFO else 0
        try:
            os.mknod(base, kind | (mode & 0o777), dev, dir_fd=pfd)
        except PermissionError:
            raise LayerError(f"entry {_show(h.name)}: creating device nodes needs root (CAP_MKNOD)") from None
        os.chown(base, _id(h.uid), _id(h.gid), dir_fd=pfd, follow_symlinks=False)
        if h.xattrs:
            self._xattrs_at(pfd, base, h.xattrs)
        if mode & 0o7000 or (mode & ~self.umask) != mode:
            os.chmod(base, mode, dir_fd=pfd)
        a, m = self._file_times(h)
        os.utime(base, ns=(_chtimes(a), _chtimes(m)), dir_fd=pfd, follow_symlinks=False)
        self._add_node(rel, _Node(0))

    def finish(self) -> None:
        for rel, a, m in self.dir_times:
            if rel not in self.dirs:
                # Docker sets directory times last and fails on one a later entry removed
                raise LayerError(
                    f"entry {_show(rel)}: the directory was replaced by a later entry of the layer "
                    "(chtimes: no such file or directory)"
                )
            fd = self.rd.dirfd(rel)
            os.utime(fd, ns=(_chtimes(a if a is not None else -1), _chtimes(m)))


class _ZeroCrc:
    """CRC over runs of zero bytes without allocating them all."""

    def __init__(self) -> None:
        self._zeros = bytes(1 << 20)

    def extend(self, crc: int, n: int) -> int:
        z = self._zeros
        while n > 0:
            k = min(n, len(z))
            crc = crc64_update(memoryview(z)[:k], crc)
            n -= k
        return crc


def apply_layer(
    read: Callable[[int], bytes],
    dest: str | bytes,
    tarsplit_write: Callable[[bytes], Any] | None,
) -> ApplyResult:
    """Stream an uncompressed layer tar from ``read`` into the empty directory ``dest``.

    ``tarsplit_write`` receives the uncompressed tar-split JSON (None: do not record). The stream
    is read to its very end (bytes after the end-of-archive blocks count in the diffID).
    Raises :class:`LayerError` on hostile or malformed input; ``dest`` is then left partially
    written for the caller to discard.
    """
    h = hashlib.sha256()
    total = 0

    def hashing_read(n: int) -> bytes:
        nonlocal total
        data = read(n)
        if data:
            h.update(data)
            total += len(data)
        return data

    tr = ts.TarReader(hashing_read)
    tsw = TarSplitWriter(tarsplit_write if tarsplit_write is not None else _discard)
    ap = _Applier(dest)
    entries = 0
    hdr: ts.Header | None = None
    try:
        while True:
            hdr = tr.next()
            raw = tr.take_raw()
            if raw:
                tsw.segment(raw)
            if hdr is None:
                break
            entries += 1
            tsw.claim(hdr.name)
            crc = ap.apply(hdr, tr)
            tsw.file(hdr.name, hdr.size, crc64_bytes(crc) if crc is not None and hdr.size > 0 else None)
            raw = tr.take_raw()
            if raw:  # only when content was left unread (never, in practice)
                tsw.segment(raw)
        for chunk in tr.trailing():
            tsw.segment(chunk)
        tsw.segment(b"")
        tsw.flush()
        ap.finish()
    except PathEscape as e:
        where = _show(hdr.name) if hdr is not None else "?"
        raise LayerError(
            f"entry {where}: {e.path.decode('utf-8', 'backslashreplace')!r} is {e.reason}"
        ) from None
    except OSError as e:
        where = _show(hdr.name) if hdr is not None else "?"
        if e.errno == errno.ENOSPC:
            raise NoSpace(f"no space left on device while extracting entry {where}") from None
        if e.errno == errno.EDQUOT:
            raise NoSpace(f"disk quota exceeded while extracting entry {where}") from None
        raise LayerError(f"entry {where}: {e.strerror or e}") from None
    finally:
        ap.close()
    return ApplyResult(
        diff_id="sha256:" + h.hexdigest(),
        size=ap.size,
        entries=entries,
        tar_bytes=total,
        ignored_xattrs=ap.ignored_xattrs,
    )


def _discard(_: bytes) -> None:
    return None


def crc_of_zeros_self_test() -> bool:  # pragma: no cover - used by tests
    return crc64_update(bytes(10), 0) == _ZeroCrc().extend(0, 10)
