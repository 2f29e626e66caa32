"""Crash-safe writes: every change is staged, made durable, then published by rename.

- :func:`atomic_write` is Docker's ``AtomicWriteFile`` (temp file ``.tmp-<name>*`` in the same
  dir, write, fsync, chmod, rename) plus an fsync of the directory, so the rename itself survives
  a power loss.
- :func:`write_synced` writes a file inside a staging directory that is published later by
  renaming the whole directory (Docker's ``AtomicWriteSet``).
"""

from __future__ import annotations

import errno
import os
import secrets

from dockyard.errors import NoSpace
from dockyard.faults import boundary


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _nospace(e: OSError, path: str) -> Exception:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"no space left on device writing {path}")
    return e


def _create_synced(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        _write_all(fd, data)
        os.fsync(fd)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: int = 0o644, *, sync_dir: bool = True) -> None:
    d, base = os.path.split(path)
    tmp = os.path.join(d, f".tmp-{base}{secrets.token_hex(5)}")
    try:
        _create_synced(tmp, data, mode)
        boundary(f"atomic_write:staged:{base}")
        os.rename(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise _nospace(e, path) from None
    if sync_dir:
        fsync_dir(d)
    boundary(f"atomic_write:published:{base}")


def write_synced(path: str, data: bytes, mode: int = 0o644) -> None:
    """Create ``path`` (which must not exist) with ``data``, fsync'd."""
    boundary(f"write_synced:{os.path.basename(path)}")
    try:
        _create_synced(path, data, mode)
    except OSError as e:
        raise _nospace(e, path) from None


def write_plain(path: str, data: bytes, mode: int = 0o644) -> None:
    """Create or replace ``path`` without fsync (Docker writes link/lower/committed this way)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        _write_all(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def read_text(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


def makedirs(path: str, mode: int) -> None:
    """``mkdir -p`` that sets ``mode`` on the directories it creates (not on existing ones)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        makedirs(parent, 0o755 if mode & 0o055 else mode)
    try:
        os.mkdir(path, mode)
        os.chmod(path, mode)
    except FileExistsError:
        pass


def random_suffix() -> str:
    return secrets.token_hex(16)


def syncfs(path: str) -> None:
    """Flush every dirty page of the filesystem holding ``path`` (one call for a whole load)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)
