"""Directory listings in exactly the format of the oracle's `diff_dir` entries (shared/fixtures/make-oracle.py
list_tree), and a comparison that ignores what Docker itself could not reproduce (mtimes marked volatile)."""
from __future__ import annotations

import hashlib
import os
import stat
from typing import Any

TYPE_OF = [(stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"), (stat.S_ISCHR, "char"),
           (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket")]


def _dec_name(b: bytes) -> tuple[str, str | None]:
    try:
        return b.decode("utf-8"), None
    except UnicodeDecodeError:
        return b.decode("utf-8", "backslashreplace"), b.hex()


def _xattr_value(v: bytes) -> dict:
    d: dict[str, Any] = {"hex": v.hex()}
    try:
        s = v.decode("ascii")
        if s.isprintable():
            d["text"] = s
    except UnicodeDecodeError:
        pass
    return d


def _sha256_file(path: bytes) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def list_tree(root: os.PathLike | str, with_hash: bool = True, volatile_after: int | None = None) -> list[dict]:
    """Listing of a directory tree as it sits on disk, entry format identical to the oracle's `diff_dir`.

    `volatile` is set on the root and on whiteout devices (char 0/0) and, if `volatile_after` is given, on
    entries whose mtime lies in [volatile_after, volatile_after + 3600] (the extraction time window)."""
    rootb = os.fsencode(str(root))
    entries: list[dict] = []
    by_inode: dict[tuple[int, int], list[dict]] = {}
    stack = [b""]
    while stack:
        rel = stack.pop()
        full = os.path.join(rootb, rel) if rel else rootb
        st = os.lstat(full)
        e: dict[str, Any] = {}
        name, hx = _dec_name(rel if rel else b".")
        e["path"] = name
        if hx:
            e["path_hex"] = hx
        t = next(n for f, n in TYPE_OF if f(st.st_mode))
        e["type"] = t
        e["mode"] = "%04o" % stat.S_IMODE(st.st_mode)
        e["uid"] = st.st_uid
        e["gid"] = st.st_gid
        sec, ns = divmod(st.st_mtime_ns, 10 ** 9)
        e["mtime"] = sec
        if ns:
            e["mtime_ns"] = ns
        if t == "file":
            e["size"] = st.st_size
            if with_hash:
                e["sha256"] = _sha256_file(full)
            if st.st_size >= 1 << 20:
                e["blocks_512"] = st.st_blocks
        elif t == "symlink":
            tg, thx = _dec_name(os.readlink(full))
            e["target"] = tg
            if thx:
                e["target_hex"] = thx
        elif t in ("char", "block"):
            e["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
        if (rel == b"" or (t == "char" and st.st_rdev == 0)
                or (volatile_after is not None and volatile_after <= sec <= volatile_after + 3600)):
            e["volatile"] = ["mtime"]
        if t != "dir":
            e["nlink"] = st.st_nlink
            if st.st_nlink > 1:
                by_inode.setdefault((st.st_dev, st.st_ino), []).append(e)
        try:
            names = os.listxattr(full, follow_symlinks=False)
        except OSError:
            names = []
        if names:
            e["xattrs"] = {n: _xattr_value(os.getxattr(full, n, follow_symlinks=False)) for n in sorted(names)}
        entries.append(e)
        if t == "dir":
            kids = sorted(os.listdir(full))
            for k in reversed(kids):
                stack.append(os.path.join(rel, k) if rel else k)
    for group in by_inode.values():
        if len(group) > 1:
            leader = min(g["path"] for g in group)
            for g in group:
                g["hardlink_group"] = leader
    entries.sort(key=lambda e: (e["path"] != ".", e["path"].encode("utf-8", "surrogateescape")))
    return entries


def _key(e: dict) -> str:
    return e.get("path_hex") or e["path"]


def _normalise(e: dict, volatile: bool) -> dict:
    d = {k: v for k, v in e.items() if k != "volatile"}
    if volatile:
        d.pop("mtime", None)
        d.pop("mtime_ns", None)
    if "blocks_512" in d:
        # what matters is whether the file is stored sparse or fully allocated, not the fs's exact block count
        d["blocks_512"] = "allocated" if d["blocks_512"] * 512 >= d.get("size", 0) else "sparse"
    return d


def compare_listing(actual: list[dict], expected: list[dict], limit: int = 60) -> list[str]:
    """Differences between two listings, as readable lines (empty list = equal).

    mtime/mtime_ns are ignored on entries that the EXPECTED listing marks `volatile` (Docker's time of
    extraction); the `volatile` marker itself is not compared."""
    act = {_key(e): e for e in actual}
    exp = {_key(e): e for e in expected}
    out: list[str] = []
    for k in sorted(exp.keys() - act.keys()):
        out.append("missing:    %s  expected %s" % (k, _short(exp[k])))
    for k in sorted(act.keys() - exp.keys()):
        out.append("unexpected: %s  got %s" % (k, _short(act[k])))
    for k in sorted(exp.keys() & act.keys()):
        e, a = exp[k], act[k]
        vol = "mtime" in (e.get("volatile") or [])
        en, an = _normalise(e, vol), _normalise(a, vol)
        if en != an:
            fields = sorted(set(en) | set(an))
            diffs = ["%s: expected %r, got %r" % (f, en.get(f, "<absent>"), an.get(f, "<absent>"))
                     for f in fields if en.get(f, "<absent>") != an.get(f, "<absent>")]
            out.append("differs:    %s  %s" % (k, "; ".join(diffs)))
    if len(out) > limit:
        out = [*out[:limit], "... and %d more" % (len(out) - limit)]
    return out


def _short(e: dict) -> str:
    keep = ("type", "mode", "uid", "gid", "size", "target", "rdev")
    return "{%s}" % ", ".join("%s=%r" % (k, e[k]) for k in keep if k in e)
