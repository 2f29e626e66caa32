"""The merged view of a layer stack, in user space, as the kernel's overlay mount shows it.

A stack is a list of layer roots, top first, each held as a directory fd. A directory of the view
is the list of layer dirs that contribute to it: the topmost layer that has the name as a
directory, then each lower one that also has it as a directory, until a layer whose copy is
opaque (``trusted.overlay.opaque=y``) or a layer where the name is a whiteout (char 0/0) or not a
directory. A name's entry is the topmost one; a whiteout hides the name and everything below.
The metadata of a merged directory is that of its topmost copy (overlay's upper).

Everything is reached with ``openat(O_NOFOLLOW)`` from the held root fds: no path string built
from layer content is ever given to the kernel, and symlinks are only ever *read*, never
followed (:meth:`MergedView.resolve` follows them inside the view, itself).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from dockyard.errors import DockyardError, NotFound

OPAQUE = "trusted.overlay.opaque"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_SYMLINKS = 40  # the kernel's limit on symlinks in one resolution


class ViewError(DockyardError):
    pass


@dataclass
class LayerRoot:
    """One layer of a stack: a label for messages and its ``diff`` dir (held as an fd)."""

    label: str
    path: str
    fd: int = -1
    broken: str | None = None  # why the layer cannot be read (missing diff dir, ...)


@dataclass
class Node:
    """One name of the merged view."""

    path: bytes  # relative to the view's root, b"" for the root
    st: os.stat_result
    layer: int  # index (0 = top) of the layer the entry comes from
    # for a directory: (layer index, fd) of every contributing layer dir, top first
    dirs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def name(self) -> bytes:
        return self.path.rpartition(b"/")[2]

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _fd_path(dirfd: int, name: bytes = b"") -> bytes:
    base = b"/proc/self/fd/%d" % dirfd
    return base + b"/" + name if name else base


def getxattr_at(dirfd: int, name: bytes, attr: str) -> bytes | None:
    """An xattr of ``name`` inside the held directory ``dirfd`` (the name itself not followed)."""
    try:
        return os.getxattr(_fd_path(dirfd, name), attr, follow_symlinks=False)
    except OSError:
        return None


def listxattr_at(dirfd: int, name: bytes) -> list[str]:
    try:
        return os.listxattr(_fd_path(dirfd, name), follow_symlinks=False)
    except OSError:
        return []


def _scandir(fd: int) -> list[bytes]:
    dup = os.dup(fd)
    try:
        with os.scandir(dup) as it:
            return [os.fsencode(e.name) for e in it]
    finally:
        try:
            os.close(dup)
        except OSError:
            pass


class MergedView:
    """A read-only merged view of ``layers`` (top first). Close it (or use ``with``) to drop fds."""

    def __init__(self, layers: list[LayerRoot]) -> None:
        self.layers = layers
        self.problems: list[str] = []
        self._fds: list[int] = []
        for lr in layers:
            if lr.broken:
                self.problems.append(f"layer {lr.label}: {lr.broken}")
                continue
            try:
                lr.fd = os.open(lr.path, _DIR_FLAGS)
                self._fds.append(lr.fd)
            except OSError as e:
                lr.broken = f"cannot open its diff dir: {e.strerror}"
                self.problems.append(f"layer {lr.label}: {lr.broken}")
        good = [(i, lr.fd) for i, lr in enumerate(layers) if lr.fd >= 0]
        if not good:
            raise ViewError(
                "no layer of this target can be read" + (f" ({self.problems[0]})" if self.problems else "")
            )
        top_i, top_fd = good[0]
        self.root = Node(b"", os.stat(top_fd), top_i, good)

    def close(self) -> None:
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()

    def __enter__(self) -> MergedView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ directories
    def children(self, node: Node) -> list[Node]:
        """The merged entries of directory ``node``, sorted by name bytes (the order of Go's
        filepath.Walk, so of docker export). Child directory fds are opened and owned by the
        caller's :meth:`release`."""
        found: dict[bytes, list[tuple[int, int, os.stat_result]]] = {}
        for li, fd in node.dirs:
            try:
                names = _scandir(fd)
            except OSError as e:
                self.problems.append(
                    f"layer {self.layers[li].label}: cannot list {_show(node.path)}: {e.strerror}"
                )
                continue
            for n in names:
                try:
                    st = os.stat(n, dir_fd=fd, follow_symlinks=False)
                except OSError as e:
                    self.problems.append(
                        f"layer {self.layers[li].label}: cannot stat {_show(_join(node.path, n))}: {e.strerror}"
                    )
                    continue
                found.setdefault(n, []).append((li, fd, st))
        out: list[Node] = []
        for n in sorted(found):
            copies = found[n]
            li, fd, st = copies[0]
            if is_whiteout(st):
                continue
            child = Node(_join(node.path, n), st, li)
            if stat.S_ISDIR(st.st_mode):
                for cli, cfd, cst in copies:
                    if not stat.S_ISDIR(cst.st_mode):
                        break
                    try:
                        dfd = os.open(n, _DIR_FLAGS, dir_fd=cfd)
                    except OSError as e:
                        self.problems.append(
                            f"layer {self.layers[cli].label}: cannot open {_show(child.path)}: {e.strerror}"
                        )
                        break
                    child.dirs.append((cli, dfd))
                    if getxattr_at(cfd, n, OPAQUE) == b"y":
                        break
            out.append(child)
        return out

    @staticmethod
    def release(node: Node) -> None:
        for _, fd in node.dirs:
            try:
                os.close(fd)
            except OSError:
                pass
        node.dirs = []

    def walk(self, top: Node | None = None) -> Iterator[tuple[Node, bool]]:
        """Depth first, pre-order, children sorted: yields ``(node, entering)``; ``entering`` is
        False once for each directory after its children (its fds are closed then). Iterative,
        so a 2,000-deep tree is fine; at most one fd per layer per level is open."""
        start = top or self.root
        stack: list[tuple[Node, Iterator[Node]]] = [(start, iter(self.children(start)))]
        yield start, True
        while stack:
            parent, it = stack[-1]
            child = next(it, None)
            if child is None:
                stack.pop()
                yield parent, False
                if parent is not self.root and parent is not top:
                    self.release(parent)
                continue
            yield child, True
            if child.is_dir:
                try:
                    kids = self.children(child)
                except OSError as e:
                    self.problems.append(f"cannot read {_show(child.path)}: {e.strerror}")
                    kids = []
                stack.append((child, iter(kids)))

    # ------------------------------------------------------------------ lookups
    def lookup(self, path: bytes, *, follow: bool = True) -> Node:
        """The node at ``path`` (``/`` separated, absolute or relative to the root). Symlinks on
        the way (and at the end with ``follow``) are resolved inside the view: ``..`` stops at
        the root and an absolute target starts again at the root, as in a chroot."""
        parts = [p for p in path.split(b"/") if p and p != b"."]
        stack: list[Node] = [self.root]
        opened: list[Node] = []
        hops = 0
        try:
            while parts:
                comp = parts.pop(0)
                cur = stack[-1]
                if comp == b"..":
                    if len(stack) > 1:
                        stack.pop()
                    continue
                if not cur.is_dir:
                    raise NotFound(f"{_show(path)}: not a directory: {_show(cur.path)}")
                child = self._child(cur, comp)
                if child is None:
                    raise NotFound(f"{_show(path)}: no such file or directory in the view")
                if stat.S_ISLNK(child.st.st_mode) and (parts or follow):
                    hops += 1
                    if hops > MAX_SYMLINKS:
                        raise ViewError(f"{_show(path)}: too many levels of symbolic links")
                    target = self.readlink(child)
                    if target.startswith(b"/"):
                        del stack[1:]
                    parts = [p for p in target.split(b"/") if p and p != b"."] + parts
                    continue
                if child.is_dir:
                    opened.append(child)
                stack.append(child)
            result = stack[-1]
            for n in opened:
                if n is not result:
                    self.release(n)
            return result
        except BaseException:
            for n in opened:
                self.release(n)
            raise

    def _child(self, node: Node, name: bytes) -> Node | None:
        copies: list[tuple[int, int, os.stat_result]] = []
        for li, fd in node.dirs:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as e:
                if e.errno == errno.ENOTDIR:
                    continue
                raise
            copies.append((li, fd, st))
        if not copies or is_whiteout(copies[0][2]):
            return None
        li, fd, st = copies[0]
        child = Node(_join(node.path, name), st, li)
        if stat.S_ISDIR(st.st_mode):
            for cli, cfd, cst in copies:
                if not stat.S_ISDIR(cst.st_mode):
                    break
                child.dirs.append((cli, os.open(name, _DIR_FLAGS, dir_fd=cfd)))
                if getxattr_at(cfd, name, OPAQUE) == b"y":
                    break
        return child

    # ------------------------------------------------------------------ entry contents
    def _parent_fd(self, node: Node) -> int:
        """fd of the layer dir holding ``node``'s entry (opened fd-relative from the layer root)."""
        parent = node.path.rpartition(b"/")[0]
        fd = self.layers[node.layer].fd
        if not parent:
            return os.dup(fd)
        return self._open_dir(fd, parent)

    @staticmethod
    def _open_dir(root_fd: int, rel: bytes) -> int:
        fd = os.dup(root_fd)
        try:
            for comp in rel.split(b"/"):
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def readlink(self, node: Node) -> bytes:
        pfd = self._parent_fd(node)
        try:
            return os.readlink(node.name, dir_fd=pfd)
        finally:
            os.close(pfd)

    def open_file(self, node: Node) -> int:
        """An fd for reading a regular file's content (never following a symlink)."""
        if not stat.S_ISREG(node.st.st_mode):
            raise ViewError(f"{_show(node.path)}: not a regular file")
        pfd = self._parent_fd(node)
        try:
            return os.open(node.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        finally:
            os.close(pfd)

    def xattr(self, node: Node, attr: str) -> bytes | None:
        pfd = self._parent_fd(node)
        try:
            if not node.path:
                return getxattr_at(pfd, b"", attr)
            return getxattr_at(pfd, node.name, attr)
        finally:
            os.close(pfd)

    def xattrs(self, node: Node) -> dict[str, bytes]:
        pfd = self._parent_fd(node)
        try:
            out: dict[str, bytes] = {}
            for a in sorted(listxattr_at(pfd, node.name if node.path else b"")):
                if a.startswith("trusted.overlay."):
                    continue  # overlay's own bookkeeping, hidden by the kernel too
                v = getxattr_at(pfd, node.name if node.path else b"", a)
                if v is not None:
                    out[a] = v
            return out
        finally:
            os.close(pfd)


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


def _show(p: bytes) -> str:
    return "/" + escape(p)


def escape(p: bytes) -> str:
    """A name fit for a terminal line: invalid UTF-8 as ``\\xNN``, control characters escaped."""
    s = p.decode("utf-8", "backslashreplace")
    return "".join(
        c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in s
    )
