"""The ``<mount-id>-init`` layer: the files Docker puts in every container (``initlayer.Setup``).

It runs on the mounted init layer (upper = ``<id>-init/diff``, lowers = the image), so the kernel
does the copy-ups exactly as for Docker: ``/dev/pts``, ``/dev/shm``, ``/proc``, ``/sys`` (dirs),
``/.dockerenv``, ``/etc/resolv.conf``, ``/etc/hosts``, ``/etc/hostname``, ``/dev/console``
(empty 0755 files) and ``/etc/mtab -> /proc/mounts``. Files and symlinks on the way are unlinked
first (so no image symlink is ever followed); everything is done fd-relative.
"""

from __future__ import annotations

import errno
import os
import stat

from dockyard.archive.fsutil import RootDir

ENTRIES: list[tuple[str, str]] = [
    ("dev/pts", "dir"),
    ("dev/shm", "dir"),
    ("proc", "dir"),
    ("sys", "dir"),
    (".dockerenv", "file"),
    ("etc/resolv.conf", "file"),
    ("etc/hosts", "file"),
    ("etc/hostname", "file"),
    ("dev/console", "file"),
    ("etc/mtab", "/proc/mounts"),
]


def setup(root: str) -> None:
    with RootDir(root) as rd:
        for path, kind in ENTRIES:
            parts = path.split("/")
            # unlink every component that is a file or symlink (dirs stay)
            for i in range(1, len(parts) + 1):
                parent = "/".join(parts[: i - 1]).encode()
                name = parts[i - 1].encode()
                try:
                    pfd = rd.dirfd(parent)
                except (OSError, Exception):
                    break
                try:
                    st = os.lstat(name, dir_fd=pfd)
                except FileNotFoundError:
                    break
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(name, dir_fd=pfd)
            # create what is missing
            cur = b""
            for comp in parts[:-1]:
                nxt = (cur + b"/" + comp.encode()) if cur else comp.encode()
                pfd = rd.dirfd(cur)
                try:
                    os.mkdir(comp, 0o755, dir_fd=pfd)
                    os.chown(comp, 0, 0, dir_fd=pfd, follow_symlinks=False)
                except FileExistsError:
                    pass
                cur = nxt
            pfd = rd.dirfd(cur)
            name = parts[-1].encode()
            try:
                os.lstat(name, dir_fd=pfd)
                continue  # exists (a directory): keep it
            except FileNotFoundError:
                pass
            if kind == "dir":
                os.mkdir(name, 0o755, dir_fd=pfd)
                os.chown(name, 0, 0, dir_fd=pfd, follow_symlinks=False)
            elif kind == "file":
                fd = os.open(
                    name,
                    os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o755,
                    dir_fd=pfd,
                )
                try:
                    os.fchown(fd, 0, 0)
                finally:
                    os.close(fd)
            else:
                try:
                    os.symlink(kind, name, dir_fd=pfd)
                except OSError as e:
                    if e.errno != errno.EEXIST:
                        raise
