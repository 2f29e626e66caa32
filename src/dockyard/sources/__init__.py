"""Image sources: open an input (file, directory or stdin) as a list of images.

``open_input`` recognises a docker-save tar (legacy or OCI-hybrid, possibly compressed), an OCI
layout directory or tar, and spools what cannot be read in place (stdin, compressed archives)
into the data-root's ``tmp/`` first.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from dockyard.archive import compression
from dockyard.errors import InvalidInput
from dockyard.image.platform import Platform
from dockyard.sources.base import ArchiveTree, DirTree, SourceImage, Tree
from dockyard.sources.dockersave import read_docker_save
from dockyard.sources.ocilayout import default_repository, read_oci_layout

SPOOL_PREFIX = "dockyard-spool-"


def read_tree(tree: Tree, *, platform: Platform | None, name_hint: str) -> list[SourceImage]:
    if tree.exists("manifest.json"):
        return read_docker_save(tree)
    if tree.exists("index.json"):
        return read_oci_layout(tree, platform=platform, repo_hint=default_repository(name_hint))
    if tree.exists("repositories"):
        raise InvalidInput(
            f"{tree.label}: this is a pre-1.10 docker save (no manifest.json); it is not supported"
        )
    raise InvalidInput(
        f"{tree.label}: not a docker save archive or OCI image layout (no manifest.json or index.json)"
    )


def _spool(src: IO[bytes], spool_dir: str, label: str) -> str:
    os.makedirs(spool_dir, mode=0o700, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=SPOOL_PREFIX, dir=spool_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            head = src.read(6)
            kind = compression.detect(head)
            raw = compression.VerifyingReader(_Prepend(head, src), what=label)
            stream = compression.decompressor(raw, kind)
            try:
                shutil.copyfileobj(stream, out, 1 << 20)
            except (OSError, EOFError) as e:
                if isinstance(e, OSError) and e.errno is not None and e.errno in (28,):
                    raise
                raise InvalidInput(f"{label}: cannot decompress input: {e}") from None
    except BaseException:
        os.unlink(path)
        raise
    return path


class _Prepend:
    def __init__(self, head: bytes, f: IO[bytes]) -> None:
        self._head = head
        self._f = f

    def read(self, n: int = -1) -> bytes:
        if self._head:
            h = self._head
            if n < 0 or n >= len(h):
                self._head = b""
                return h + (self._f.read(n - len(h)) if n > len(h) else (self._f.read() if n < 0 else b""))
            self._head = h[n:]
            return h[:n]
        return self._f.read(n)


@contextmanager
def open_input(
    path: str | None, *, spool_dir: str, platform: Platform | None = None
) -> Iterator[list[SourceImage]]:
    """The images in ``path`` (None or ``-``: standard input)."""
    spooled: str | None = None
    try:
        if path is None or path == "-":
            if sys.stdin.isatty():
                raise InvalidInput("requested load from stdin, but stdin is empty (a terminal); use -i FILE")
            spooled = _spool(sys.stdin.buffer, spool_dir, "stdin")
            if os.path.getsize(spooled) == 0:
                raise InvalidInput("requested load from stdin, but stdin is empty")
            tree: Tree = ArchiveTree(spooled, "stdin")
            name_hint = "image"
        elif os.path.isdir(path):
            tree = DirTree(path, path)
            name_hint = path
        elif os.path.exists(path):
            with open(path, "rb") as f:
                kind = compression.detect(f.read(6))
            if kind == compression.NONE:
                tree = ArchiveTree(path, path)
            else:
                with open(path, "rb") as f:
                    spooled = _spool(f, spool_dir, path)
                tree = ArchiveTree(spooled, path)
            name_hint = path
        else:
            raise InvalidInput(f"open {path}: no such file or directory")
        yield read_tree(tree, platform=platform, name_hint=name_hint)
    finally:
        if spooled:
            try:
                os.unlink(spooled)
            except FileNotFoundError:
                pass
