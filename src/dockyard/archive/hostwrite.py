"""Putting files that came out of a container onto the host, without trusting either side.

``cp CONTAINER:SRC HOSTDEST`` first extracts into a fresh private directory (mode 0700, made
by us, fd-relative, see :mod:`dockyard.archive.apply`), then :func:`sanitize` makes the copy
harmless and :func:`place` moves it into the destination:

* :func:`sanitize` removes device nodes, clears setuid/setgid bits, removes ``security.*``
  extended attributes (file capabilities, SELinux labels) and gives everything to the calling
  user -- unless ``keep_owner`` (``cp -a``), which keeps the container's uids and gids as
  Docker does (the setuid/setgid bits are still cleared: a setuid-root binary from a container
  is never made on the host);
* :func:`place` walks the destination fd-relative and never follows a symlink already there:
  a name that does not exist is renamed in (``renameat``, which does not follow), a directory
  merges into a directory, a non-directory replaces a non-directory (the rename replaces the
  name, never what a symlink points to), and, as Docker's ``NoOverwriteDirNonDir`` does, a
  directory never replaces a non-directory (``cannot overwrite non-directory ... with
  directory ...``) nor the reverse.
"""

from __future__ import annotations

import errno
import os
import stat

from dockyard.errors import InvalidInput

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _names(fd: int) -> list[bytes]:
    dup = os.open(".", _DIR_FLAGS, dir_fd=fd)
    with os.scandir(dup) as it:
        return sorted(os.fsencode(e.name) for e in it)


def _strip_security_xattrs(target: str | int) -> None:
    try:
        names = (
            os.listxattr(target, follow_symlinks=False) if isinstance(target, str) else os.listxattr(target)
        )
    except OSError:
        return
    for n in names:
        if n.startswith("security."):
            try:
                if isinstance(target, str):
                    os.removexattr(target, n, follow_symlinks=False)
                else:
                    os.removexattr(target, n)
            except OSError:
                pass


def sanitize(dir_fd: int, *, keep_owner: bool, uid: int | None = None, gid: int | None = None) -> None:
    """Make everything below ``dir_fd`` safe to hand to the host user (see the module doc)."""
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    for name in _names(dir_fd):
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.unlink(name, dir_fd=dir_fd)
            continue
        if stat.S_ISLNK(mode):
            if not keep_owner:
                os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
            continue
        if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
            fd = os.open(
                name,
                (
                    _DIR_FLAGS
                    if stat.S_ISDIR(mode)
                    else os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
                ),
                dir_fd=dir_fd,
            )
            try:
                if not keep_owner:
                    os.fchown(fd, uid, gid)
                _strip_security_xattrs(fd)
                os.fchmod(fd, stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
                if stat.S_ISDIR(mode):
                    sanitize(fd, keep_owner=keep_owner, uid=uid, gid=gid)
            finally:
                os.close(fd)
            continue
        # FIFOs (sockets are never archived)
        if not keep_owner:
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)


def _lstat(dir_fd: int, name: bytes) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def place(
    src_dir_fd: int, src_name: bytes, dst_dir_fd: int, dst_name: bytes, *, dst_path: str, extract_dir: str
) -> None:
    """Move ``src_name`` (in our private staging dir) to ``dst_name`` in the destination
    directory, merging directories, never following anything in the destination.
    ``dst_path``/``extract_dir`` only name things in error messages."""
    sst = os.stat(src_name, dir_fd=src_dir_fd, follow_symlinks=False)
    dst = _lstat(dst_dir_fd, dst_name)
    src_dir = stat.S_ISDIR(sst.st_mode)
    if dst is None:
        os.rename(src_name, dst_name, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return
    dst_dir = stat.S_ISDIR(dst.st_mode)
    if dst_dir and not src_dir:
        raise InvalidInput(
            f"cannot overwrite directory {dst_path!r} with non-directory {extract_dir!r}".replace("'", '"')
        )
    if src_dir and not dst_dir:
        raise InvalidInput(
            f"cannot overwrite non-directory {dst_path!r} with directory {extract_dir!r}".replace("'", '"')
        )
    if not src_dir:
        os.rename(src_name, dst_name, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return
    sfd = os.open(src_name, _DIR_FLAGS, dir_fd=src_dir_fd)
    try:
        try:
            dfd = os.open(dst_name, _DIR_FLAGS, dir_fd=dst_dir_fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped for a symlink since the lstat
                raise InvalidInput(
                    f"cannot overwrite non-directory {dst_path!r} with directory {extract_dir!r}".replace(
                        "'", '"'
                    )
                ) from None
            raise
        try:
            os.fchmod(dfd, stat.S_IMODE(sst.st_mode))
            for name in _names(sfd):
                place(
                    sfd,
                    name,
                    dfd,
                    name,
                    dst_path=dst_path + "/" + name.decode("utf-8", "surrogateescape"),
                    extract_dir=extract_dir,
                )
            os.utime(dfd, ns=(sst.st_atime_ns, sst.st_mtime_ns))
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)
