"""Run CPU-heavy jobs (layer extraction) in forked worker processes.

Python threads share one interpreter lock, so each layer is extracted in its own forked
process. The parent starts no threads, so forking is safe; children die with the parent
(``PR_SET_PDEATHSIG``), report progress and their result as pickles over a pipe, and the
parent waits for all of them before it returns or raises.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pickle
import select
import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from dockyard.errors import DockyardError, NoSpace

J = TypeVar("J")
R = TypeVar("R")

ProgressFn = Callable[[int], None]

_PR_SET_PDEATHSIG = 1


class WorkerCrashed(DockyardError):
    pass


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:  # pragma: no cover
        pass


def _send(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj)
    msg = struct.pack("!I", len(data)) + data
    view = memoryview(msg)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _child(fn: Callable[[J, ProgressFn], R], job: J, wfd: int) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    last = [0.0]

    def progress(n: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.1:
            last[0] = now
            _send(wfd, ("p", n))

    try:
        result = fn(job, progress)
        _send(wfd, ("ok", result))
        code = 0
    except DockyardError as e:
        _send(wfd, ("err", e))
        code = 1
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            _send(wfd, ("err", NoSpace(f"no space left on device ({e.filename or 'writing'})")))
        else:
            _send(
                wfd,
                ("err", DockyardError(f"{e.strerror or e}{': ' + str(e.filename) if e.filename else ''}")),
            )
        code = 1
    except BaseException as e:  # report, never let a traceback escape a child
        _send(wfd, ("crash", (f"{type(e).__name__}: {e}", traceback.format_exc())))
        code = 2
    os._exit(code)


def run_jobs(
    fn: Callable[[J, ProgressFn], R],
    jobs: Sequence[J],
    *,
    workers: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[R]:
    """Run ``fn(job, progress)`` for every job; results in job order.

    With one worker (or one job) everything runs in this process. On the first failure the
    other workers are killed and the failure is raised once all of them are gone.
    """
    if workers <= 1 or len(jobs) <= 1:
        out = []
        for i, job in enumerate(jobs):

            def report(n: int, i: int = i) -> None:
                if on_progress:
                    on_progress(i, n)

            out.append(fn(job, report))
        return out

    results: dict[int, R] = {}
    pending = list(range(len(jobs)))
    running: dict[int, tuple[int, int, bytearray]] = {}  # rfd -> (index, pid, buffer)
    failure: BaseException | None = None
    try:
        while (pending and failure is None) or running:
            while pending and failure is None and len(running) < workers:
                i = pending.pop(0)
                r, w = os.pipe()
                pid = os.fork()
                if pid == 0:  # pragma: no cover - runs in the child
                    os.close(r)
                    _child(fn, jobs[i], w)
                os.close(w)
                running[r] = (i, pid, bytearray())
            if not running:
                break
            ready, _, _ = select.select(list(running), [], [])
            for rfd in ready:
                i, pid, buf = running[rfd]
                data = os.read(rfd, 1 << 16)
                if data:
                    buf += data
                    while len(buf) >= 4:
                        (n,) = struct.unpack("!I", buf[:4])
                        if len(buf) < 4 + n:
                            break
                        kind, payload = pickle.loads(bytes(buf[4 : 4 + n]))
                        del buf[: 4 + n]
                        if kind == "p":
                            if on_progress:
                                on_progress(i, payload)
                        elif kind == "ok":
                            results[i] = payload
                        elif kind == "err":
                            failure = failure or payload
                        else:
                            msg, tb = payload
                            if os.environ.get("DOCKYARD_DEBUG"):
                                sys.stderr.write(tb)
                            failure = failure or WorkerCrashed(f"internal error in a worker: {msg}")
                    continue
                os.close(rfd)
                del running[rfd]
                _, status = os.waitpid(pid, 0)
                if i not in results and failure is None:
                    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
                    failure = WorkerCrashed(
                        f"a worker died unexpectedly (signal {sig})"
                        if sig
                        else "a worker exited without a result"
                    )
                if failure is not None:
                    _kill_all(running)
    except BaseException:
        _kill_all(running)
        _reap(running)
        raise
    if failure is not None:
        raise failure
    return [results[i] for i in range(len(jobs))]


def _kill_all(running: dict[int, tuple[int, int, bytearray]]) -> None:
    for _, pid, _ in running.values():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _reap(running: dict[int, tuple[int, int, bytearray]]) -> None:
    for rfd, (_, pid, _) in list(running.items()):
        try:
            os.close(rfd)
        except OSError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    running.clear()
