"""Fault injection for crash-safety tests: die at a chosen write boundary.

Every step that changes the store calls :func:`boundary`. With ``DOCKYARD_CRASH_AT=N`` in the
environment the process kills itself with SIGKILL at the N-th boundary (counted from 1) -- the
harshest crash a process can have short of a power cut. ``DOCKYARD_CRASH_LOG=FILE`` appends the
name of every boundary passed, so a test can learn how many there are. Without these variables
a boundary costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_target = int(os.environ.get("DOCKYARD_CRASH_AT", "0") or "0")
_log = os.environ.get("DOCKYARD_CRASH_LOG")
_count = 0
_owner = os.getpid()


def boundary(name: str) -> None:
    global _count
    if not _target and not _log:
        return
    if os.getpid() != _owner:
        return  # worker processes do not count (their work is staged, the parent publishes)
    _count += 1
    if _log:
        with open(_log, "a") as f:
            f.write(f"{_count} {name}\n")
    if _target and _count == _target:
        os.kill(os.getpid(), signal.SIGKILL)
