"""``docker diff``: what a container changed, by comparing two directory trees.

dockerd 20.10 computes it naively (``archive.ChangesDirs``): the container's mounted rootfs
against its mounted init layer (the image plus Docker's init files). A path only in the new tree
is added (A), only in the old one deleted (D); a path in both is changed (C) when its mode,
owner, device, or -- for non-directories -- size or mtime differ, or its
``security.capability`` does; a directory with changes below it is reported as changed too,
before them. Nothing is followed: every stat is an lstat.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Change:
    kind: str  # "A", "C", "D"
    path: str


class _Node:
    __slots__ = ("added", "cap", "children", "st")

    def __init__(self, st: os.stat_result | None, cap: bytes | None) -> None:
        self.st = st
        self.cap = cap
        self.children: dict[str, _Node] = {}
        self.added = False


def _cap(path: str) -> bytes | None:
    try:
        return os.getxattr(path, "security.capability", follow_symlinks=False)
    except OSError:
        return None


def _collect(root: str) -> _Node:
    top = _Node(None, None)

    def walk(dirpath: str, node: _Node) -> None:
        try:
            it = os.scandir(dirpath)
        except OSError:
            return
        with it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                child = _Node(st, _cap(e.path))
                node.children[e.name] = child
                if stat.S_ISDIR(st.st_mode):
                    walk(e.path, child)

    walk(root, top)
    return top


def _same_time(a: os.stat_result, b: os.stat_result) -> bool:
    sa, na = divmod(a.st_mtime_ns, 1_000_000_000)
    sb, nb = divmod(b.st_mtime_ns, 1_000_000_000)
    return sa == sb and (na == nb or na == 0 or nb == 0)


def _stat_different(a: os.stat_result, b: os.stat_result) -> bool:
    if a.st_mode != b.st_mode or a.st_uid != b.st_uid or a.st_gid != b.st_gid or a.st_rdev != b.st_rdev:
        return True
    return not stat.S_ISDIR(a.st_mode) and (not _same_time(a, b) or a.st_size != b.st_size)


def changes_between(new_root: str, old_root: str) -> list[Change]:
    """Changes from ``old_root`` to ``new_root`` (Docker's ChangesDirs), children in name order."""
    new, old = _collect(new_root), _collect(old_root)
    out: list[Change] = []

    def add(node: _Node, old_node: _Node | None, path: str) -> None:
        at_entry = len(out)
        if old_node is None and path != "/":
            out.append(Change("A", path))
            node.added = True
        old_children = (
            dict(old_node.children)
            if old_node is not None and (node.st is None or stat.S_ISDIR(node.st.st_mode))
            else {}
        )
        for name in sorted(node.children, key=os.fsencode):
            child = node.children[name]
            cpath = (path.rstrip("/") + "/" + name) if path != "/" else "/" + name
            oc = old_children.get(name)
            if oc is not None:
                assert oc.st is not None and child.st is not None
                if _stat_different(oc.st, child.st) or oc.cap != child.cap:
                    out.append(Change("C", cpath))
                    child.added = True
                del old_children[name]
            add(child, oc, cpath)
        for name in sorted(old_children, key=os.fsencode):
            cpath = (path.rstrip("/") + "/" + name) if path != "/" else "/" + name
            out.append(Change("D", cpath))
        if (
            len(out) > at_entry
            and path != "/"
            and not node.added
            and node.st is not None
            and stat.S_ISDIR(node.st.st_mode)
        ):
            out.insert(at_entry, Change("C", path))

    add(new, old, "/")
    return out
