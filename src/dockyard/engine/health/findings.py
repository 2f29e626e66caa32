# mypy: disable-error-code="misc"
# (repair actions bind loop variables with lambda defaults, which mypy cannot type)
"""What fsck reports: :class:`Finding` (path, one-line message, severity, repair action) and
:class:`Report`, and the state one check run shares (:class:`CheckerBase`)."""


from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dockyard.image.config import ImageConfig
from dockyard.store import Store

ERROR = "error"
WARNING = "warning"
INFO = "info"  # not damage: shown, and removed by prune

_LINK_RE = re.compile(r"^[A-Z2-7]{26}$")


@dataclass
class Finding:
    severity: str
    code: str
    path: str
    message: str
    repair: str | None = None
    """What --repair does, in words (None: cannot be repaired without loss)."""
    action: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    needs_confirmation: bool = False
    """Repairs that delete data nothing refers to (orphans) ask first unless --yes."""
    images: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "path": self.path,
            "message": self.message,
            "repairable": self.action is not None,
        }
        if self.repair:
            d["repair"] = self.repair
        if self.images:
            d["affected_images"] = self.images
        return d


@dataclass
class Report:
    root: str
    findings: list[Finding] = field(default_factory=list)
    images_checked: int = 0
    layers_checked: int = 0
    damaged_images: dict[str, list[str]] = field(default_factory=dict)

    def add(self, f: Finding) -> None:
        self.findings.append(f)

    @property
    def clean(self) -> bool:
        return not self.findings


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _rel(store: Store, path: str) -> str:
    root = store.root
    return path[len(root) + 1 :] if path.startswith(root + "/") else path


class CheckerBase:
    """The state a check run shares: the store, the report, what was learnt so far."""

    def __init__(
        self,
        store: Store,
        *,
        deep: bool = False,
        progress: Callable[[str, int, int | None], None] | None = None,
    ) -> None:
        self.store = store
        self.deep = deep
        self.progress = progress
        self.report = Report(store.root)
        self.layers: dict[str, dict[str, Any]] = {}  # chain hex -> info
        self.bad_layers: dict[str, str] = {}  # chain id -> why it is unusable
        self.uncertain_usage = False  # a config or a parent link could not be read
        self.missing_cache_ids: list[str] = []  # chains whose cache-id is unreadable
        self.missing_diffs: list[str] = []  # chains whose diff file is unreadable
        self.configs: dict[str, ImageConfig] = {}
        self.cache_ids: dict[str, str] = {}  # cache id -> owner description

    def f(
        self,
        severity: str,
        code: str,
        path: str,
        message: str,
        repair: str | None = None,
        action: Callable[[], None] | None = None,
        confirm: bool = False,
    ) -> Finding:
        fd = Finding(severity, code, _rel(self.store, path), message, repair, action, confirm)
        self.report.add(fd)
        return fd

    def tmp_leftover(self, path: str) -> None:
        """A ``.tmp-*`` file that an interrupted atomic write left behind: safe to remove."""
        self.f(
            WARNING,
            "tmp-leftover",
            path,
            "leftover of an interrupted write",
            "remove it",
            lambda: os.unlink(path),
        )

    def partial_pull_blob(self, path: str, size: int) -> None:
        """A blob an interrupted pull left in tmp/dockyard-pull/: the next pull resumes it; prune removes it."""
        self.f(
            INFO,
            "partial-pull-blob",
            path,
            f"partial download of an interrupted pull ({size} bytes; the next pull resumes it)",
            "remove it (system prune)",
            lambda: os.unlink(path),
        )

    def _bad(self, chain: str, why: str) -> None:
        self.bad_layers.setdefault(chain, why)


def diff_dir_size(path: str) -> int:
    """Docker's ``directory.Size``: st_size of non-directories, each inode once, no following."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [path]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                    continue
                if st.st_size <= 0:
                    continue
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1:
                    if key in seen:
                        continue
                    seen.add(key)
                total += st.st_size
    return total
