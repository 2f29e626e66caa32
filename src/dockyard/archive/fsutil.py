"""fd-relative filesystem access that never leaves a root directory.

Every path below the root is reached one component at a time with ``openat(O_NOFOLLOW |
O_DIRECTORY)`` from a directory fd, so a symlink anywhere on the way (planted by an earlier tar
entry, or by a container) is refused rather than followed, and ``..`` never appears (callers
pass paths cleaned by :func:`clean_relative`). Directory fds are cached (LRU) because layer
tars visit the same directories over and over.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class PathEscape(Exception):
    """A path component is a symlink or not a directory."""

    def __init__(self, path: bytes, reason: str) -> None:
        super().__init__(f"{path.decode('utf-8', 'backslashreplace')}: {reason}")
        self.path = path
        self.reason = reason


def go_clean(p: bytes) -> bytes:
    """Go's ``path/filepath.Clean`` on a slash-separated byte path."""
    if not p:
        return b"."
    rooted = p.startswith(b"/")
    out: list[bytes] = []
    for part in p.split(b"/"):
        if part == b"" or part == b".":
            continue
        if part == b"..":
            if out and out[-1] != b"..":
                out.pop()
            elif not rooted:
                out.append(b"..")
            continue
        out.append(part)
    s = b"/".join(out)
    if rooted:
        return b"/" + s
    return s or b"."


def clean_relative(p: bytes) -> bytes:
    """Where a name lands under a root, the way Docker's chroot resolves it: ``..`` cannot climb
    above the root and a leading ``/`` is the root. Returns ``b""`` for the root itself."""
    c = go_clean(b"/" + p)
    return c[1:]


class RootDir:
    """A directory tree reached only through fds (no symlink following, no ``..``)."""

    def __init__(self, root: str | bytes, *, max_open: int = 512) -> None:
        self.root_fd = os.open(root, _DIR_FLAGS)
        self._cache: dict[bytes, int] = {}
        self._max = max_open

    def close(self) -> None:
        for fd in self._cache.values():
            os.close(fd)
        self._cache.clear()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def __enter__(self) -> RootDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _remember(self, rel: bytes, fd: int) -> None:
        cache = self._cache
        if len(cache) >= self._max:
            # evict the oldest quarter
            for k in list(cache)[: self._max // 4]:
                os.close(cache.pop(k))
        cache[rel] = fd

    def dirfd(self, rel: bytes) -> int:
        """fd of the directory ``rel`` (cleaned, relative; ``b""`` = root). Raises PathEscape /
        FileNotFoundError."""
        if not rel:
            return self.root_fd
        fd = self._cache.get(rel)
        if fd is not None:
            return fd
        parent, _, base = rel.rpartition(b"/")
        pfd = self.dirfd(parent)
        try:
            fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                st = os.lstat(base, dir_fd=pfd)
                what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                raise PathEscape(rel, f"{what}; refusing to go through it") from None
            raise
        self._remember(rel, fd)
        return fd

    def cached(self, rel: bytes, fd: int) -> None:
        """Register an fd the caller opened for directory ``rel`` (ownership passes here)."""
        old = self._cache.pop(rel, None)
        if old is not None:
            os.close(old)
        self._remember(rel, fd)

    def forget(self, rel: bytes) -> None:
        """Drop cached fds of ``rel`` and everything below it (after it was removed/replaced)."""
        prefix = rel + b"/"
        for k in [k for k in self._cache if k == rel or k.startswith(prefix)]:
            os.close(self._cache.pop(k))

    def open_file(self, rel: bytes) -> int:
        """Open a regular file below the root for reading (no symlink anywhere)."""
        parent, _, base = rel.rpartition(b"/")
        pfd = self.dirfd(parent)
        fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=pfd)
        # O_NONBLOCK: a FIFO or a device planted where a file was expected never blocks us
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise PathEscape(rel, "not a regular file; refusing to read it")
        return fd


def remove_tree_at(dir_fd: int, name: bytes) -> None:
    """``rm -rf`` of ``name`` inside ``dir_fd`` without ever following a symlink."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        for entry in _scandir_names(fd):
            remove_tree_at(fd, entry)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def _scandir_names(fd: int) -> Iterator[bytes]:
    # os.listdir(fd) returns str names; go through a dup so scandir's close does not close ours.
    dup = os.dup(fd)
    try:
        with os.scandir(dup) as it:
            names = [os.fsencode(e.name) for e in it]
    finally:
        try:
            os.close(dup)
        except OSError:
            pass
    return iter(names)


def remove_tree(path: str | bytes) -> None:
    """``rm -rf path`` without following symlinks below it (path itself must be a real dir or file)."""
    p = os.fsencode(path)
    parent, _, base = p.rstrip(b"/").rpartition(b"/")
    pfd = os.open(parent or b"/", _DIR_FLAGS)
    try:
        remove_tree_at(pfd, base)
    finally:
        os.close(pfd)
