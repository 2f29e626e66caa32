"""``docker diff``: what a container changed, from its upper dir and the layers below it.

Docker's overlay rules (``archive.OverlayChanges``): walk the upper dir in lexical order; a 0:0
character device or an opaque directory is a deletion (D); anything else is a modification (C)
if the path exists in a lower layer (a directory identical in size, mode and mtime is skipped),
else an addition (A); the parent of an A or D is reported as C once.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Change:
    kind: str  # "A", "C", "D"
    path: str


def _lstat_in(layers: list[str], rel: str) -> os.stat_result | None:
    for layer in layers:
        try:
            return os.stat(os.path.join(layer, rel.lstrip("/")), follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return None


def overlay_changes(upper: str, lowers: list[str]) -> list[Change]:
    changes: list[Change] = []
    changed_dirs: set[str] = set()

    def walk(rel: str) -> None:
        full = os.path.join(upper, rel.lstrip("/")) if rel != "/" else upper
        with os.scandir(full) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
        for e in entries:
            path = (rel.rstrip("/") + "/" + e.name) if rel != "/" else "/" + e.name
            st = e.stat(follow_symlinks=False)
            deleted = False
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                deleted = True
            elif stat.S_ISDIR(st.st_mode):
                try:
                    deleted = os.getxattr(e.path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
                except OSError:
                    deleted = False
            if deleted:
                kind = "D"
            else:
                kind = "A"
                lower = _lstat_in(lowers, path)
                if lower is not None:
                    if (
                        stat.S_ISDIR(lower.st_mode)
                        and stat.S_ISDIR(st.st_mode)
                        and lower.st_size == st.st_size
                        and lower.st_mode == st.st_mode
                        and _same_time(lower, st)
                    ):
                        if stat.S_ISDIR(st.st_mode):
                            walk(path)
                        continue
                    kind = "C"
            if stat.S_ISDIR(st.st_mode):
                changed_dirs.add(path)
            if kind in ("A", "D"):
                parent = os.path.dirname(path)
                if parent not in changed_dirs and parent != "/":
                    changes.append(Change("C", parent))
                    changed_dirs.add(parent)
            changes.append(Change(kind, path))
            if stat.S_ISDIR(st.st_mode):
                walk(path)

    walk("/")
    return changes


def _same_time(a: os.stat_result, b: os.stat_result) -> bool:
    # Go's sameFsTime: equal seconds, and equal nanoseconds unless either is 0
    sa, na = divmod(a.st_mtime_ns, 1_000_000_000)
    sb, nb = divmod(b.st_mtime_ns, 1_000_000_000)
    return sa == sb and (na == nb or na == 0 or nb == 0)
