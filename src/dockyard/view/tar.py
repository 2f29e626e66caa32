"""``fs tar``: the merged view as one tar, entry for entry what ``docker export`` writes.

Docker's archiver (as :mod:`dockyard.archive.export` reproduces it over a mounted rootfs):
lexical order, the root left out, directories with a trailing ``/``, type bits in the mode field,
a second name of an inode becomes a hard link to the first, sockets skipped, only
``security.capability`` kept, uname/gname from this host's passwd/group. Here the same entries
come from the layer dirs themselves, with no mount.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable
from typing import Any

from dockyard.archive.export import CAPABILITY, _Names
from dockyard.archive.tarwriter import TarWriter
from dockyard.view.merged import MergedView, Node, ViewError


def write_view_tar(
    view: MergedView, write: Callable[[bytes | memoryview], Any], top: Node | None = None
) -> int:
    """Stream a tar of the view (below ``top``, default the root) to ``write``; returns the count."""
    tw = TarWriter(write)
    names = _Names()
    links: dict[tuple[int, int], str] = {}
    count = 0
    start = top or view.root
    prefix = start.path

    def rel(n: Node) -> str:
        p = n.path[len(prefix) + 1 :] if prefix else n.path
        return p.decode("utf-8", "surrogateescape")

    for node, entering in view.walk(start):
        if not entering or node is start:
            continue
        st = node.st
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            continue
        name = rel(node)
        ti = tarfile.TarInfo(name)
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.uname, ti.gname = names.user(st.st_uid), names.group(st.st_gid)
        ti.mtime = int(st.st_mtime)
        ti.mode = stat.S_IMODE(mode)
        if not stat.S_ISLNK(mode):
            cap = view.xattr(node, CAPABILITY)
            if cap is not None:
                ti.pax_headers = {"SCHILY.xattr." + CAPABILITY: cap.decode("utf-8", "surrogateescape")}
        bits = stat.S_IFMT(mode)
        if stat.S_ISDIR(mode):
            ti.type = tarfile.DIRTYPE
            ti.name = name + "/"
            tw._header(ti, bits)
            count += 1
            continue
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            ti.type = tarfile.LNKTYPE
            ti.linkname = links[key]
            tw._header(ti, bits)
            count += 1
            continue
        if st.st_nlink > 1:
            links[key] = name
        if stat.S_ISLNK(mode):
            ti.type = tarfile.SYMTYPE
            ti.linkname = view.readlink(node).decode("utf-8", "surrogateescape")
            tw._header(ti, bits)
        elif stat.S_ISREG(mode):
            ti.type = tarfile.REGTYPE
            ti.size = st.st_size
            fd = view.open_file(node)
            try:
                tw._header(ti, bits)
                left = st.st_size
                while left > 0:
                    chunk = os.read(fd, min(1 << 20, left))
                    if not chunk:
                        raise ViewError(f"/{name}: file shrank while being read")
                    tw.write_data(chunk)
                    left -= len(chunk)
                tw.pad()
            finally:
                os.close(fd)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            ti.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            tw._header(ti, bits)
        elif stat.S_ISFIFO(mode):
            ti.type = tarfile.FIFOTYPE
            tw._header(ti, bits)
        else:
            continue
        count += 1
    tw.close()
    return count
