# mypy: disable-error-code="misc"
# (repair actions bind loop variables with lambda defaults, which mypy cannot type)
"""fsck's repairs: the actions that findings carry (rebuild a size file or a short link, finish
a dead process's container removal, drop a stale mount, rewrite ``lower`` files, ...), and
:func:`repair`, which applies them under the store lock."""


from __future__ import annotations

import os
import re

from dockyard.digest import is_hex64, random_link
from dockyard.engine.health.findings import _LINK_RE, CheckerBase, Finding, Report, _read, diff_dir_size
from dockyard.errors import DockyardError
from dockyard.store import Store
from dockyard.store.atomic import write_plain


class Repairs(CheckerBase):
    """Repair actions that need the checker's state."""

    def _repair_size(self, hexid: str) -> None:
        info = self.layers[hexid]
        cache_id = info.get("cache_id")
        if not cache_id:
            return
        size = diff_dir_size(self.store.driver.diff_path(cache_id))
        from dockyard.store.atomic import atomic_write

        atomic_write(os.path.join(self.store.layout.layerdb_sha256, hexid, "size"), str(size).encode(), 0o644)

    def _repair_link(self, cache_id: str) -> None:
        drv = self.store.driver
        d = drv.dir(cache_id)
        old = (_read(os.path.join(d, "link")) or b"").decode("utf-8", "replace").strip()
        # The l/ symlink that still points here names the link every lower file uses: keep it.
        for name in _listdir(self.store.layout.overlay2_links):
            lp = self.store.layout.link_path(name)
            if _LINK_RE.match(name) and os.path.islink(lp) and os.readlink(lp) == f"../{cache_id}/diff":
                write_plain(os.path.join(d, "link"), name.encode(), 0o644)
                return
        link = random_link()
        os.symlink(f"../{cache_id}/diff", self.store.layout.link_path(link))
        write_plain(os.path.join(d, "link"), link.encode(), 0o644)
        if _LINK_RE.match(old):
            lp = self.store.layout.link_path(old)
            if os.path.islink(lp) and os.readlink(lp) == f"../{cache_id}/diff":
                os.unlink(lp)
        # children and containers name this layer in their lower files: rebuild those
        rewrite_all_lowers(self.store)

    def _drop_staged_container(self, cid: str, path: str) -> None:
        from dockyard.containers.removal import release_container_layers

        if not os.path.isdir(self.store.layout.container_dir(cid)):
            release_container_layers(self.store, cid)
        _rmtree(path)

    def _finish_container_removal(self, cid: str) -> None:
        from dockyard.containers.removal import release_container_layers

        release_container_layers(self.store, cid)
        _rmtree(self.store.layout.container_dir(cid) + "-removing")

    def _drop_mount(self, cid: str) -> None:
        md = self.store.layout.mount_dir(cid)
        for key in ("mount-id", "init-id"):
            v = (_read(os.path.join(md, key)) or b"").decode("utf-8", "replace").strip()
            if re.match(r"^[a-f0-9]{64}(-init)?$", v):
                self.store.driver.remove(v)
        from dockyard.archive.fsutil import remove_tree

        remove_tree(md)


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _mkdir(p: str, mode: int) -> None:
    os.mkdir(p, mode)
    os.chmod(p, mode)


def _rmtree(p: str) -> None:
    from dockyard.archive.fsutil import remove_tree

    remove_tree(p)


def _relink(lp: str, cache_id: str) -> None:
    if os.path.lexists(lp):
        if os.path.isdir(lp) and not os.path.islink(lp):
            _rmtree(lp)
        else:
            os.unlink(lp)
    os.symlink(f"../{cache_id}/diff", lp)


def _atomic(path: str, value: str) -> None:
    from dockyard.store.atomic import atomic_write

    atomic_write(path, value.encode(), 0o644)


def _drop_ref(store: Store, repo: str, key: str) -> None:
    repos = store.refs.load()
    if repo in repos:
        repos[repo].pop(key, None)
        store.refs.save(repos)


def _release(store: Store, chain: str) -> None:
    if store.layers.exists(chain):
        store.release_layers(chain)


def _unmount(path: str) -> None:
    store_driver_unmount(path)


def store_driver_unmount(path: str) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2(os.fsencode(path), 2)
    try:
        os.rmdir(path)
    except OSError:
        pass


def expected_lower(store: Store, parent: str | None) -> str | None:
    """``lower`` of a layer on ``parent``, from the short links of the whole parent chain."""
    parts = []
    cur = parent
    while cur:
        try:
            layer = store.layers.get(cur)
            parts.append("l/" + store.driver.link_of(layer.cache_id))
        except (DockyardError, OSError):
            return None
        cur = layer.parent
        if len(parts) > 200:
            return None
    return ":".join(parts) if parts else None


def rewrite_all_lowers(store: Store) -> None:
    """Rewrite every layer's (and container layer's) ``lower`` file from the links of its chain."""
    for chain in store.layers.ids():
        try:
            layer = store.layers.get(chain)
        except DockyardError:
            continue
        if layer.parent is None or not store.driver.exists(layer.cache_id):
            continue
        want = expected_lower(store, layer.parent)
        if want is None:
            continue
        p = os.path.join(store.driver.dir(layer.cache_id), "lower")
        if store.driver.lower_of(layer.cache_id) != want:
            write_plain(p, want.encode(), 0o644)
    # container layers: <mid>-init sits on the image's top layer, <mid> on its init layer
    for cid in _listdir(store.layout.layerdb_mounts):
        md = store.layout.mount_dir(cid)
        mid = (_read(os.path.join(md, "mount-id")) or b"").decode("utf-8", "replace").strip()
        parent = (_read(os.path.join(md, "parent")) or b"").decode("utf-8", "replace").strip() or None
        if not is_hex64(mid):
            continue
        init = mid + "-init"
        if store.driver.exists(init):
            want = expected_lower(store, parent)
            p = os.path.join(store.driver.dir(init), "lower")
            if want is not None and store.driver.lower_of(init) != want:
                write_plain(p, want.encode(), 0o644)
            try:
                rw_want = "l/" + store.driver.link_of(init) + (":" + want if want else "")
            except OSError:
                continue
            p = os.path.join(store.driver.dir(mid), "lower")
            if store.driver.exists(mid) and store.driver.lower_of(mid) != rw_want:
                write_plain(p, rw_want.encode(), 0o644)


def repair(store: Store, report: Report, *, include_confirmed: bool) -> list[Finding]:
    """Apply the repairs of ``report`` under the write lock; returns what was repaired."""
    done = []
    with store._lock:  # not write_lock(): recovery is what we are about to do, step by step
        for f in report.findings:
            if f.action is None or (f.needs_confirmation and not include_confirmed):
                continue
            try:
                f.action()
                done.append(f)
            except FileNotFoundError:
                done.append(f)  # already gone (an earlier repair took it with it)
    return done
