"""Reaping, stopping and killing: containers whose monitor died are killed, unmounted and
recorded as exited (and removed for ``--rm``) by the next command that touches containers."""

from __future__ import annotations

import os
import shutil
import signal
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

from dockyard.containers.records import ContainerRecords, now
from dockyard.digest import is_hex64
from dockyard.errors import Conflict, DockyardError, InvalidInput, NotFound
from dockyard.procs import pid_alive, start_time
from dockyard.store.atomic import read_text


class ContainerReaper(ContainerRecords):
    """Reap, kill, stop and wait (see :mod:`dockyard.containers.lifecycle`)."""

    def monitor_alive(self, cid: str) -> bool:
        try:
            pid_s, _, start = read_text(os.path.join(self.exec_root, cid, "monitor")).strip().partition(" ")
            pid = int(pid_s)
        except (OSError, ValueError):
            return False
        return pid_alive(pid) and start_time(pid) == start

    def reap(self) -> list[str]:
        """Clean up after monitors that died: kill what they watched, unmount, record the end."""
        reaped = []
        unremoved = []  # --rm containers that ended while nobody was left to remove them
        for cid in self.ids():
            try:
                cfg = self.load(cid)
            except DockyardError:
                continue
            st = cfg.get("State") or {}
            mid = None
            try:
                mid = self.mount_id(cid)
            except (OSError, DockyardError):
                pass
            running = bool(st.get("Running"))
            stale_mount = mid is not None and self.store.driver.mounted(mid) and not self.monitor_alive(cid)
            if not running and not stale_mount:
                if (
                    cfg.get("HasBeenStartedBefore")
                    and self.hostconfig(cid).get("AutoRemove")
                    and not self.monitor_alive(cid)
                ):
                    unremoved.append(cid)
                continue
            if self.monitor_alive(cid):
                continue
            try:
                # Under the lock from the check to the end: a start claims its container under the
                # same lock, so nothing it starts can be killed or unmounted here.
                with self.store.write_lock():
                    if self.monitor_alive(cid):
                        continue  # a start claimed it while we looked
                    st = self.load(cid).get("State") or {}  # as it is now, not as it was
                    running = bool(st.get("Running"))
                    pid = int(st.get("Pid") or 0)
                    if pid and pid_alive(pid):
                        _kill_quiet(pid, signal.SIGKILL)
                    self.runtime.kill(cid, "KILL", all_=True)
                    self.runtime.delete(cid)
                    if mid:
                        self.store.driver.put(mid)
                    if running:
                        cfg = self.load(cid)
                        cfg["State"].update(
                            Running=False,
                            Pid=0,
                            ExitCode=137,
                            FinishedAt=now(),
                            Error="the process watching the container died",
                        )
                        self.save(cid, cfg)
                    shutil.rmtree(os.path.join(self.exec_root, cid), ignore_errors=True)
                    if self.hostconfig(cid).get("AutoRemove"):
                        from dockyard.containers.removal import remove_container

                        remove_container(self.store, cid, force=True)
            except DockyardError:
                continue
            reaped.append(cid)
        # bundles of containers that ended (or no longer exist) whose monitor is gone
        try:
            names = os.listdir(self.exec_root)
        except FileNotFoundError:
            names = []
        stale = [n for n in names if is_hex64(n) and not self.monitor_alive(n)]
        if stale:
            with self.store.write_lock():  # starts claim their bundle under this lock
                for name in stale:
                    if self.monitor_alive(name):
                        continue
                    try:
                        gone = not os.path.isdir(self.dir(name)) or not self.load(name)["State"].get(
                            "Running"
                        )
                    except DockyardError:
                        gone = True
                    if gone:
                        self.runtime.delete(name)
                        shutil.rmtree(os.path.join(self.exec_root, name), ignore_errors=True)
        # docker removes those on its next start; here the next command does
        if unremoved:
            from dockyard.containers.removal import remove_container

            with self.store.write_lock():
                for cid in unremoved:
                    if os.path.isdir(self.dir(cid)) and not self.monitor_alive(cid):
                        try:
                            self.store.driver.put(self.mount_id(cid))
                        except (DockyardError, OSError):
                            pass
                        remove_container(self.store, cid, force=True)
                        reaped.append(cid)
        return reaped

    # ------------------------------------------------------------------ signals
    def kill(self, cid: str, sig: int = signal.SIGKILL) -> None:
        cfg = self.load(cid)
        if not self.is_running(cfg):
            raise Conflict(f"Cannot kill container: {cid}: Container {cid} is not running")
        _kill_quiet(int(cfg["State"]["Pid"]), sig)

    def stop(self, cid: str, timeout: int | None = None) -> None:
        cfg = self.load(cid)
        if not self.is_running(cfg):
            return
        cfg["HasBeenManuallyStopped"] = True
        self.save(cid, cfg)
        stop_sig = _signal_number(str(cfg["Config"].get("StopSignal") or "SIGTERM"))
        if timeout is None:
            timeout = int(cfg["Config"].get("StopTimeout") or 10)
        pid = int(cfg["State"]["Pid"])
        _kill_quiet(pid, stop_sig)
        if not self.wait_stopped(cid, timeout):
            _kill_quiet(pid, signal.SIGKILL)
            self.runtime.kill(cid, "KILL", all_=True)
            self.wait_stopped(cid, 30)

    def wait_stopped(self, cid: str, timeout: float | None) -> bool:
        """Wait until the monitor has recorded the end (True) or the timeout passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                cfg = self.load(cid)
            except NotFound:
                return True
            if not cfg["State"].get("Running"):
                return True
            if not self.monitor_alive(cid):
                self.reap()
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def _kill_quiet(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_number(name: str) -> int:
    n = name.upper()
    if n.isdigit():
        return int(n)
    if not n.startswith("SIG"):
        n = "SIG" + n
    try:
        return int(getattr(signal, n))
    except AttributeError:
        raise InvalidInput(f"invalid signal: {name}") from None
