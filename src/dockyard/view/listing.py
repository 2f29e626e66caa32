"""Entries of the view as records for ``fs ls``, ``fs stat`` and ``fs find`` (tables and JSON).

In JSON a name is ``path`` (UTF-8 text) when its bytes are valid UTF-8; otherwise ``path`` holds
the bytes with ``\\xNN`` escapes and ``path_b64`` the exact bytes, base64-encoded. The same holds
for ``target`` / ``target_b64`` of symlinks.
"""

from __future__ import annotations

import base64
import fnmatch
import os
import stat
import time
from typing import Any

from dockyard.view.merged import MergedView, Node, escape

TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def kind(node: Node) -> str:
    return TYPES.get(stat.S_IFMT(node.st.st_mode), "unknown")


def _text(key: str, b: bytes, out: dict[str, Any]) -> None:
    try:
        out[key] = b.decode("utf-8")
    except UnicodeDecodeError:
        out[key] = b.decode("utf-8", "backslashreplace")
        out[key + "_b64"] = base64.b64encode(b).decode("ascii")


def record(view: MergedView, node: Node, *, layer_labels: list[str] | None = None) -> dict[str, Any]:
    st = node.st
    out: dict[str, Any] = {}
    _text("path", b"/" + node.path, out)
    out["type"] = kind(node)
    out["mode"] = "%04o" % stat.S_IMODE(st.st_mode)
    out["uid"], out["gid"] = st.st_uid, st.st_gid
    out["size"] = st.st_size if not node.is_dir else 0
    out["mtime"] = st.st_mtime_ns // 1_000_000_000
    out["mtime_ns"] = st.st_mtime_ns
    out["nlink"] = st.st_nlink
    if stat.S_ISLNK(st.st_mode):
        _text("target", view.readlink(node), out)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        out["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    out["layer"] = (layer_labels or [lr.label for lr in view.layers])[node.layer]
    return out


def ls_line(view: MergedView, node: Node, long: bool, name: bytes | None = None) -> str:
    shown = escape(name if name is not None else node.name or b"/")
    if not long:
        return shown
    st = node.st
    if stat.S_ISLNK(st.st_mode):
        shown += " -> " + escape(view.readlink(node))
    size = (
        f"{os.major(st.st_rdev)}, {os.minor(st.st_rdev)}"
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
        else str(st.st_size)
    )
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(st.st_mtime))
    return f"{stat.filemode(st.st_mode)} {st.st_nlink:>3} {st.st_uid:>5} {st.st_gid:>5} {size:>10} {when} {shown}"


def matches(node: Node, *, name_glob: str | None, newer_than: float | None, type_: str | None) -> bool:
    if name_glob is not None and not fnmatch.fnmatchcase(
        node.name.decode("utf-8", "surrogateescape"), name_glob
    ):
        return False
    if newer_than is not None and node.st.st_mtime <= newer_than:
        return False
    if type_ is not None:
        want = {
            "f": "file",
            "d": "dir",
            "l": "symlink",
            "c": "char",
            "b": "block",
            "p": "fifo",
            "s": "socket",
        }
        if kind(node) != want.get(type_, type_):
            return False
    return True


def parse_time(s: str) -> float:
    """RFC 3339 / ISO 8601 time, a Unix timestamp, or a duration back from now (``10m``, ``2h``, ``3d``)."""
    import datetime
    import re

    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", s)
    if m:
        mult = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return time.time() - float(m.group(1)) * mult
    try:
        return float(s)
    except ValueError:
        pass
    try:
        dt = datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"invalid time {s!r}: use RFC 3339, a Unix timestamp or a duration like 2h"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.timestamp()
