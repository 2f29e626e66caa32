"""Who may write to a data-root.

- dockyard processes serialise their changes with an exclusive ``flock`` on
  ``<root>/.dockyard.lock`` (readers take no lock: every change is published by rename).
- A running dockerd holds ``flock(LOCK_EX)`` on ``<root>/volumes/metadata.db``. If that lock
  cannot be taken, dockerd owns the data-root and dockyard refuses to write. While dockyard
  writes it holds that lock itself, so a dockerd cannot start underneath it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
from types import TracebackType

from dockyard.errors import StoreBusy
from dockyard.procs import pid_alive
from dockyard.store.layout import Layout


def dockerd_running(layout: Layout) -> str | None:
    """A description of the dockerd that owns the data-root, or None."""
    db = layout.dockerd_volumes_db
    if os.path.exists(db):
        try:
            fd = os.open(db, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return f"a running dockerd holds {db}"
            finally:
                os.close(fd)
    if os.path.realpath(layout.root) == "/var/lib/docker":
        try:
            with open("/var/run/docker.pid") as f:
                pid = int(f.read().strip() or "0")
            if pid and pid_alive(pid):
                return f"dockerd (pid {pid}) is running on /var/lib/docker"
        except (OSError, ValueError):
            pass
    return None


class StoreLock:
    """Exclusive write access to a data-root (a context manager)."""

    def __init__(self, layout: Layout, *, wait: bool = True) -> None:
        self.layout = layout
        self.wait = wait
        self._fd = -1
        self._dockerd_fd = -1
        self.depth = 0

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def acquire(self) -> None:
        if self.depth:
            self.depth += 1
            return
        busy = dockerd_running(self.layout)
        if busy:
            raise StoreBusy(f"refusing to write to {self.layout.root}: {busy}; stop it first")
        os.makedirs(self.layout.root, mode=0o711, exist_ok=True)
        fd = os.open(self.layout.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise
            if not self.wait:
                os.close(fd)
                raise StoreBusy(f"another dockyard process is writing to {self.layout.root}") from None
            if sys.stderr.isatty():
                print(
                    "Waiting for another dockyard process to finish with this data-root...", file=sys.stderr
                )
            fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd
        # Keep dockerd from starting on the data-root while we change it.
        db = self.layout.dockerd_volumes_db
        if os.path.exists(db):
            try:
                dfd = os.open(db, os.O_RDWR | os.O_CLOEXEC)
                try:
                    fcntl.flock(dfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    self._dockerd_fd = dfd
                except OSError:
                    os.close(dfd)
                    self.release_fd()
                    raise StoreBusy(
                        f"refusing to write to {self.layout.root}: a running dockerd holds {db}"
                    ) from None
            except OSError:
                pass
        self.depth = 1

    def release_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def release(self) -> None:
        if self.depth > 1:
            self.depth -= 1
            return
        self.depth = 0
        if self._dockerd_fd >= 0:
            os.close(self._dockerd_fd)
            self._dockerd_fd = -1
        self.release_fd()
