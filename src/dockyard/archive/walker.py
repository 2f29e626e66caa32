"""One fd-relative walker for container and layer trees that may be hostile.

A container's processes can rename anything in its filesystem while dockyard (as root) reads it:
swap a directory for a symlink to a host path between our ``lstat`` and our ``open``
(``renameat2(RENAME_EXCHANGE)``, the CVE-2018-15664 class). The defence here is that no path
string built from container content is ever resolved by the host:

* the walk holds an fd for every directory it is in; each entry is opened with
  ``openat(dirfd, name, O_PATH | O_NOFOLLOW)`` and ``fstat``'d, so what is described is the
  inode that was opened -- a symlink is reported as a symlink and never followed;
* a directory is entered through that O_PATH fd (``openat(pathfd, ".")``), a regular file is
  read through a re-open of the same inode (``/proc/self/fd/N``), so a FIFO or a device node
  swapped in is never opened for reading;
* a path given by the user (``cp CONTAINER:PATH``) is resolved inside the root
  (:func:`open_in_root`): ``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`` where the kernel
  has it, else component by component with ``openat(O_NOFOLLOW)`` and symlinks resolved by hand
  with ``..`` clamped at the root, as Docker's ``FollowSymlinkInScope`` does.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_PROC_FD = os.path.isdir("/proc/self/fd")
_MAX_LINKS = 40

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
_SYS_OPENAT2 = 437  # same number on every Linux architecture (asm-generic)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover
    _libc = None
# None = not probed yet; tests set it to False to exercise the fallback.
HAVE_OPENAT2: bool | None = None


def openat2(dir_fd: int, path: bytes, flags: int, resolve: int, mode: int = 0) -> int:
    """The openat2(2) system call (raises OSError; ENOSYS where the kernel lacks it)."""
    if _libc is None:
        raise OSError(errno.ENOSYS, "openat2 unavailable")
    how = _OpenHow(flags, mode, resolve)
    for _ in range(16):
        fd = int(_libc.syscall(_SYS_OPENAT2, dir_fd, path, ctypes.byref(how), ctypes.sizeof(how)))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err in (errno.EAGAIN, errno.EINTR):  # a rename raced the resolution: try again
            continue
        raise OSError(err, os.strerror(err), path.decode("utf-8", "backslashreplace"))
    raise OSError(errno.EAGAIN, "path kept changing while it was resolved", path.decode("utf-8", "replace"))


def _have_openat2() -> bool:
    global HAVE_OPENAT2
    if HAVE_OPENAT2 is None:
        try:
            os.close(openat2(-100, b"/", os.O_PATH | os.O_CLOEXEC, 0))
            HAVE_OPENAT2 = True
        except OSError:
            HAVE_OPENAT2 = False
    return HAVE_OPENAT2


def _components(path: bytes) -> list[bytes]:
    return [c for c in path.split(b"/") if c and c != b"."]


def _resolve_fallback(root_fd: int, path: bytes, flags: int) -> int:
    """Userspace RESOLVE_IN_ROOT: symlinks resolved inside the root, ``..`` clamped at it."""
    stack: list[int] = []  # fds of the directories below the root we are in (owned)
    todo = _components(path)
    todo.reverse()
    links = 0

    def cur() -> int:
        return stack[-1] if stack else root_fd

    try:
        while todo:
            comp = todo.pop()
            if comp == b"..":
                if stack:
                    os.close(stack.pop())
                continue
            last = not todo
            try:
                st = os.stat(comp, dir_fd=cur(), follow_symlinks=False)
            except FileNotFoundError:
                if last and flags & os.O_CREAT:
                    return os.open(comp, flags | os.O_NOFOLLOW, 0o644, dir_fd=cur())
                raise
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path.decode("utf-8", "replace"))
                target = os.readlink(comp, dir_fd=cur())
                if target.startswith(b"/"):
                    while stack:
                        os.close(stack.pop())
                more = _components(target)
                more.reverse()
                todo.extend(more)
                continue
            if last:
                return os.open(comp, flags | os.O_NOFOLLOW, dir_fd=cur())
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(
                    errno.ENOTDIR, os.strerror(errno.ENOTDIR), path.decode("utf-8", "replace")
                )
            # O_NOFOLLOW|O_DIRECTORY: if it was swapped for a symlink since the stat, this fails
            # (ELOOP) instead of following it; the caller sees an error, never a host file.
            stack.append(os.open(comp, _DIR_FLAGS, dir_fd=cur()))
        return os.open(".", flags, dir_fd=cur())
    finally:
        for fd in stack:
            os.close(fd)


def open_in_root(root_fd: int, path: bytes | str, flags: int = os.O_PATH | os.O_CLOEXEC) -> int:
    """Open ``path`` as if ``root_fd`` were ``/``: symlinks (absolute or relative) and ``..``
    never leave the root. Magic links (``/proc/*/fd``) are refused."""
    p = os.fsencode(path)
    flags |= os.O_CLOEXEC
    if _have_openat2():
        return openat2(root_fd, p or b".", flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    return _resolve_fallback(root_fd, p, flags)


def open_parent_in_root(root_fd: int, path: bytes | str) -> tuple[int, bytes]:
    """The directory holding ``path`` (resolved in the root, an fd the caller closes) and the
    final name, which is *not* resolved (``cp`` copies a symlink itself). The root itself is
    returned as ``(dup(root_fd), b"")``."""
    p = os.fsencode(path)
    from dockyard.archive.fsutil import go_clean

    c = go_clean(b"/" + p)
    if c == b"/":
        return os.dup(root_fd), b""
    parent, _, base = c.rpartition(b"/")
    return open_in_root(root_fd, parent or b"/", os.O_RDONLY | os.O_DIRECTORY), base


@dataclass
class Entry:
    """One file met by :func:`walk`. ``fd`` and ``path_fd`` are valid until the walk moves on."""

    path: bytes
    """Relative to the walk's top, ``/``-separated; ``b""`` for the top itself."""
    st: os.stat_result
    """fstat of the opened inode (never of a path)."""
    path_fd: int
    """An O_PATH fd of the entry (the inode described by ``st``)."""
    link_target: bytes | None = None

    def open(self) -> int:
        """A readable fd of this regular file (the same inode; the caller closes it)."""
        if not stat.S_ISREG(self.st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", self.path.decode("utf-8", "replace"))
        if _PROC_FD:
            return os.open(f"/proc/self/fd/{self.path_fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
        raise OSError(errno.ENOSYS, "/proc is not mounted; cannot reopen safely")

    def xattr(self, name: str) -> bytes | None:
        """An extended attribute of the entry (None if absent); never of a symlink."""
        if stat.S_ISLNK(self.st.st_mode) or not _PROC_FD:
            return None
        try:
            return os.getxattr(f"/proc/self/fd/{self.path_fd}", name)
        except OSError:
            return None


def _entry(dir_fd: int, name: bytes, rel: bytes) -> Entry | None:
    try:
        pfd = os.open(name, _PATH_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None  # removed since the directory was listed
    try:
        st = os.fstat(pfd)
        target = None
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(b"", dir_fd=pfd)  # readlinkat(fd, ""): this very symlink
    except BaseException:
        os.close(pfd)
        raise
    return Entry(rel, st, pfd, target)


def _names(dir_fd: int) -> list[bytes]:
    # os.scandir(fd) works on its own dup of the fd and leaves ``dir_fd`` open (and unmoved)
    with os.scandir(dir_fd) as it:
        return sorted(os.fsencode(e.name) for e in it)


def walk_at(dir_fd: int, name: bytes, rel: bytes | None = None) -> Iterator[Entry]:
    """Entries of ``name`` inside ``dir_fd`` and, if it is a directory, everything below it,
    in pre-order with children in byte order of their names."""
    top = _entry(dir_fd, name, name if rel is None else rel)
    if top is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name.decode("utf-8", "replace"))
    yield from _walk_entry(top)


def walk(dir_fd: int, prefix: bytes = b"") -> Iterator[Entry]:
    """Everything below the directory ``dir_fd`` (not the directory itself), names prefixed by
    ``prefix/``."""
    for name in _names(dir_fd):
        e = _entry(dir_fd, name, prefix + b"/" + name if prefix else name)
        if e is not None:
            yield from _walk_entry(e)


def _walk_entry(e: Entry) -> Iterator[Entry]:
    try:
        yield e
        if stat.S_ISDIR(e.st.st_mode):
            try:
                sub = os.open(".", _DIR_FLAGS, dir_fd=e.path_fd)
            except FileNotFoundError:
                return
            try:
                yield from walk(sub, e.path)
            finally:
                os.close(sub)
    finally:
        os.close(e.path_fd)
