"""The overlay2 graph driver: layer directories, short links, and (only here) mounts.

A layer directory ``overlay2/<id>/`` holds ``diff/`` (its files), ``link`` (its 26-char short
name, with ``l/<link> -> ../<id>/diff``), and, when it has a parent, ``lower`` (the short links
of all layers below, nearest first: ``l/A:l/B``) and ``work/``. Creating a child touches
``committed`` in the parent, which makes Docker mount the parent read-only.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from dockyard.archive.fsutil import remove_tree
from dockyard.digest import random_link
from dockyard.faults import boundary
from dockyard.store.atomic import makedirs, write_plain
from dockyard.store.layout import Layout

MAX_LOWERS = 128


class DriverError(Exception):
    pass


class Overlay2Driver:
    name = "overlay2"

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def ensure_home(self) -> None:
        makedirs(self.layout.overlay2, 0o710)
        makedirs(self.layout.overlay2_links, 0o700)

    def exists(self, cache_id: str) -> bool:
        return os.path.isdir(self.layout.driver_dir(cache_id))

    def dir(self, cache_id: str) -> str:
        return self.layout.driver_dir(cache_id)

    def diff_path(self, cache_id: str) -> str:
        return self.layout.driver_diff(cache_id)

    def link_of(self, cache_id: str) -> str:
        with open(os.path.join(self.dir(cache_id), "link"), "rb") as f:
            return f.read().decode().strip()

    def lower_of(self, cache_id: str) -> str | None:
        try:
            with open(os.path.join(self.dir(cache_id), "lower"), "rb") as f:
                return f.read().decode()
        except FileNotFoundError:
            return None

    def lower_for_child(self, parent: str) -> str:
        """The ``lower`` content of a new layer on top of ``parent``."""
        lower = "l/" + self.link_of(parent)
        plower = self.lower_of(parent)
        if plower:
            lower += ":" + plower
        if lower.count(":") + 1 > MAX_LOWERS:
            raise DriverError(f"cannot create layer: more than {MAX_LOWERS} lower layers")
        return lower

    def create(self, cache_id: str, parent: str | None) -> None:
        """Docker's ``create``: dir 0710, diff/ 0755, link + l/ symlink; lower + work/ with a parent."""
        self.ensure_home()
        lower = self.lower_for_child(parent) if parent else None
        d = self.dir(cache_id)
        os.mkdir(d, 0o710)
        os.chmod(d, 0o710)
        os.mkdir(os.path.join(d, "diff"), 0o755)
        os.chmod(os.path.join(d, "diff"), 0o755)
        for _ in range(8):
            link = random_link()
            try:
                os.symlink(os.path.join("..", cache_id, "diff"), self.layout.link_path(link))
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 2^130 space
            raise DriverError("could not allocate a unique overlay2 short link")
        boundary("driver:link")
        write_plain(os.path.join(d, "link"), link.encode(), 0o644)
        if parent is None:
            return
        os.mkdir(os.path.join(d, "work"), 0o700)
        os.chmod(os.path.join(d, "work"), 0o700)
        write_plain(os.path.join(self.dir(parent), "committed"), b"", 0o600)
        assert lower is not None
        write_plain(os.path.join(d, "lower"), lower.encode(), 0o644)

    def remove(self, cache_id: str) -> None:
        """Docker's ``Remove``: drop the ``l/`` link, then the directory (unmounting first)."""
        d = self.dir(cache_id)
        try:
            link = self.link_of(cache_id)
        except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
            link = ""
        if link and "/" not in link and link not in (".", ".."):
            try:
                os.unlink(self.layout.link_path(link))
            except FileNotFoundError:
                pass
            boundary("driver:link-removed")
        else:
            # the link file was never written (or was lost): find our l/ entry by its target
            want = os.path.join("..", cache_id, "diff")
            try:
                names = os.listdir(self.layout.overlay2_links)
            except FileNotFoundError:
                names = []
            for name in names:
                lp = self.layout.link_path(name)
                try:
                    if os.readlink(lp) == want:
                        os.unlink(lp)
                except OSError:
                    continue
        merged = os.path.join(d, "merged")
        if os.path.ismount(merged):
            self._unmount(merged)
        try:
            remove_tree(d)
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------------ mounts
    def mount_options(self, cache_id: str, *, relative: bool = False) -> str:
        """Docker's mount data: rw (upper/work) unless ``committed`` marks the layer read-only."""
        d = self.dir(cache_id)
        lower = self.lower_of(cache_id)
        if lower is None:
            raise DriverError(f"layer {cache_id} has no lower layers; it is used directly, not mounted")
        committed = os.path.exists(os.path.join(d, "committed"))
        if relative:
            lowers = lower
            diff, work = f"{cache_id}/diff", f"{cache_id}/work"
        else:
            lowers = ":".join(os.path.join(self.layout.overlay2, x) for x in lower.split(":"))
            diff, work = os.path.join(d, "diff"), os.path.join(d, "work")
        opts = "index=off," if os.path.exists("/sys/module/overlay/parameters/index") else ""
        if committed:
            return opts + f"lowerdir={diff}:{lowers}"
        return opts + f"lowerdir={lowers},upperdir={diff},workdir={work}"

    def mounted(self, cache_id: str) -> bool:
        return os.path.ismount(os.path.join(self.dir(cache_id), "merged"))

    def get(self, cache_id: str) -> str:
        """Mount the layer (if not mounted yet) and return its root: ``merged/`` or, for a
        bottom layer, ``diff/``. The only place dockyard mounts anything."""
        d = self.dir(cache_id)
        if self.lower_of(cache_id) is None:
            return os.path.join(d, "diff")
        merged = os.path.join(d, "merged")
        if os.path.ismount(merged):
            return merged
        try:
            os.mkdir(merged, 0o700)
        except FileExistsError:
            pass
        data = self.mount_options(cache_id)
        page = os.sysconf("SC_PAGE_SIZE")
        if len(data) <= page - 1:
            _mount("overlay", merged, "overlay", data)
        else:
            # Too long for one page: relative paths, mounted from a child whose cwd is overlay2/
            # (cwd is per process; the parent's never changes).
            rel = self.mount_options(cache_id, relative=True)
            if len(rel) > page - 1:
                raise DriverError(f"cannot mount layer {cache_id}: too many lower layers for one mount")
            _mount_from(self.layout.overlay2, "overlay", f"{cache_id}/merged", "overlay", rel)
        return merged

    def put(self, cache_id: str) -> None:
        """Unmount the layer (lazily, so a busy mount still goes) and remove ``merged/``."""
        merged = os.path.join(self.dir(cache_id), "merged")
        if os.path.ismount(merged):
            self._unmount(merged)
        try:
            os.rmdir(merged)
        except (FileNotFoundError, OSError):
            pass

    def _unmount(self, path: str) -> None:
        _umount(path)


def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fstype: str, data: str, flags: int = 0) -> None:
    import ctypes

    libc = _libc()
    if (
        libc.mount(
            source.encode(), os.fsencode(target), fstype.encode(), ctypes.c_ulong(flags), data.encode()
        )
        != 0
    ):
        err = ctypes.get_errno()
        raise DriverError(f"mount of {target} failed: {os.strerror(err)}")


def _mount_from(cwd: str, source: str, target: str, fstype: str, data: str) -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        code = 0
        try:
            os.chdir(cwd)
            _mount(source, target, fstype, data)
        except BaseException as e:  # report to the parent
            os.write(w, str(e).encode()[:1000])
            code = 1
        os._exit(code)
    os.close(w)
    msg = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        msg += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise DriverError(msg.decode(errors="replace") or "mount failed")


def _umount(path: str) -> None:
    import ctypes

    libc = _libc()
    MNT_DETACH = 2
    if libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, os.strerror(err), path)
