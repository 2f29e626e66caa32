"""Tar a directory the way Docker's archiver does (``docker commit``, ``docker export``).

Entries in lexical order of the on-disk names, the root left out, directories with a trailing
``/``; hard links after the first become links to it; sockets are skipped; only
``security.capability`` is kept as an xattr. With ``overlay_whiteouts`` (a container's upper
dir), a 0:0 character device ``x`` becomes a regular ``.wh.x`` (mode 0600) and a directory with
``trusted.overlay.opaque=y`` is followed by ``.wh..wh..opq`` (the dir's permissions, mtime 0).
Nothing is ever followed: the tree is read through :mod:`dockyard.archive.walker` (held
directory fds, every entry opened ``O_PATH|O_NOFOLLOW`` and fstat'd), so a container that swaps a
directory for a symlink while it is archived gets the symlink archived, never its target.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import tarfile
from collections.abc import Callable, Iterable
from typing import Any

from dockyard.archive.tarwriter import TarWriter
from dockyard.archive.walker import Entry, walk, walk_at

CAPABILITY = "security.capability"
OPAQUE = "trusted.overlay.opaque"


class _Names:
    """uid/gid -> user/group names, as the Debian build of dockerd fills uname/gname."""

    def __init__(self) -> None:
        self.users: dict[int, str] = {}
        self.groups: dict[int, str] = {}

    def user(self, uid: int) -> str:
        if uid not in self.users:
            try:
                self.users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self.users[uid] = ""
        return self.users[uid]

    def group(self, gid: int) -> str:
        if gid not in self.groups:
            try:
                self.groups[gid] = grp.getgrgid(gid).gr_name
            except KeyError:
                self.groups[gid] = ""
        return self.groups[gid]


def write_dir_tar(
    root: str | int,
    write: Callable[[bytes | memoryview], Any],
    *,
    overlay_whiteouts: bool = False,
    skip: Callable[[str], bool] | None = None,
) -> int:
    """Stream a tar of everything below ``root`` (a trusted path, or a held directory fd) to
    ``write``; returns the number of entries."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if isinstance(root, str) else os.dup(root)
    try:
        return write_entries_tar(walk(fd), write, overlay_whiteouts=overlay_whiteouts, skip=skip)
    finally:
        os.close(fd)


def write_entry_tar(
    dir_fd: int, name: bytes, write: Callable[[bytes | memoryview], Any], *, arcname: bytes | None = None
) -> int:
    """Stream a tar of ``name`` inside ``dir_fd`` (and everything below it if it is a directory),
    entry names starting with ``arcname`` (default ``name``): what ``docker cp CONTAINER:PATH -``
    streams."""
    return write_entries_tar(walk_at(dir_fd, name, arcname), write)


def write_entries_tar(
    entries: Iterable[Entry],
    write: Callable[[bytes | memoryview], Any],
    *,
    overlay_whiteouts: bool = False,
    skip: Callable[[str], bool] | None = None,
) -> int:
    tw = TarWriter(write)
    names = _Names()
    links: dict[tuple[int, int], str] = {}
    count = 0

    def emit(ti: tarfile.TarInfo, *, pax: dict[str, str] | None = None, type_bits: int = 0) -> None:
        nonlocal count
        if pax:
            ti.pax_headers = pax
        tw._header(ti, type_bits)
        count += 1

    for e in entries:
        st = e.st
        mode = st.st_mode
        name = e.path.decode("utf-8", "surrogateescape")
        if skip is not None and skip(name):
            continue
        if stat.S_ISSOCK(mode):
            continue
        ti = tarfile.TarInfo(name)
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.uname, ti.gname = names.user(st.st_uid), names.group(st.st_gid)
        ti.mtime = int(st.st_mtime)
        ti.mode = stat.S_IMODE(mode)
        pax: dict[str, str] = {}
        if overlay_whiteouts and stat.S_ISCHR(mode) and st.st_rdev == 0:
            parent, _, base = name.rpartition("/")
            ti.name = (parent + "/" if parent else "") + ".wh." + base
            ti.type = tarfile.REGTYPE
            ti.mode = 0o600
            ti.size = 0
            emit(ti)
            continue
        cap = e.xattr(CAPABILITY)
        if cap is not None:
            pax["SCHILY.xattr." + CAPABILITY] = cap.decode("utf-8", "surrogateescape")
        if stat.S_ISDIR(mode):
            ti.type = tarfile.DIRTYPE
            ti.name = name + "/"
            emit(ti, pax=pax, type_bits=stat.S_IFMT(mode))
            if overlay_whiteouts and e.xattr(OPAQUE) == b"y":
                op = tarfile.TarInfo(name + "/.wh..wh..opq")
                op.mode = stat.S_IMODE(mode) & 0o777
                op.uid, op.gid, op.uname, op.gname = ti.uid, ti.gid, ti.uname, ti.gname
                op.mtime = 0
                emit(op)
            continue
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            ti.type = tarfile.LNKTYPE
            ti.linkname = links[key]
            ti.size = 0
            emit(ti, pax=pax, type_bits=stat.S_IFMT(mode))
            continue
        if st.st_nlink > 1:
            links[key] = name
        if stat.S_ISLNK(mode):
            ti.type = tarfile.SYMTYPE
            ti.linkname = (e.link_target or b"").decode("utf-8", "surrogateescape")
            emit(ti, pax=pax, type_bits=stat.S_IFMT(mode))
        elif stat.S_ISREG(mode):
            ti.type = tarfile.REGTYPE
            ti.size = st.st_size
            fd = e.open()
            try:
                emit(ti, pax=pax, type_bits=stat.S_IFMT(mode))
                left = st.st_size
                while left > 0:
                    chunk = os.read(fd, min(1 << 20, left))
                    if not chunk:
                        raise OSError(f"{name} shrank while being archived")
                    tw.write_data(chunk)
                    left -= len(chunk)
                tw.pad()
            finally:
                os.close(fd)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            ti.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            emit(ti, pax=pax, type_bits=stat.S_IFMT(mode))
        elif stat.S_ISFIFO(mode):
            ti.type = tarfile.FIFOTYPE
            emit(ti, pax=pax, type_bits=stat.S_IFMT(mode))

    tw.close()
    return count
