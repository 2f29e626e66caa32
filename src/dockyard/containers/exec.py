"""``exec``: run another process in a running container, through ``runc exec``, as dockerd 20.10 does.

The process (``process.json`` for ``runc exec --process``) starts from the container's own
``process`` in its bundle (``<exec-root>/<id>/config.json``), so it keeps the container's
capabilities, ``noNewPrivileges``, rlimits and apparmor profile; the runtime applies the
container's seccomp filter to it. Then, as ``daemon/exec.go`` and ``exec_linux.go``:

- args, env (``PATH``, ``HOSTNAME``, ``TERM=xterm`` with ``-t``, the container's ``Env``, then
  ``-e``/``--env-file``, replace-or-append), cwd (``-w`` or the container's ``WorkingDir``, else
  ``/``) and terminal are replaced;
- the user (``-u`` or the container's ``User``) is resolved in the container's ``/etc/passwd`` and
  ``/etc/group``, read fd-relative (no symlink, O_NONBLOCK, regular files only, size-capped);
- ``--privileged`` gives all capabilities in bounding, effective and permitted.

Exit status: the process's; a process that could not be started gets 126, as from dockerd (for
a missing command too, unlike ``run``'s 127). dockerd keeps exec instances in memory only (its
``config.v2.json`` has no exec field); dockyard records nothing on disk either.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dockyard.containers.capabilities import all_caps
from dockyard.containers.spec import DEFAULT_PATH, merge_env, resolve_user
from dockyard.errors import Conflict, DockyardError

if TYPE_CHECKING:
    from dockyard.containers.lifecycle import Containers


class ExecError(DockyardError):
    """The exec'd process could not be started; ``exit_code`` as dockerd sets it."""

    def __init__(self, message: str, exit_code: int = 126) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class ExecOptions:
    cmd: list[str]
    interactive: bool = False
    tty: bool = False
    detach: bool = False
    user: str = ""
    workdir: str = ""
    env: list[str] = field(default_factory=list)
    privileged: bool = False


def _bundle_spec(mgr: Containers, cid: str) -> dict[str, Any]:
    path = os.path.join(mgr.exec_root, cid, "config.json")
    try:
        with open(path, "rb") as f:
            spec = json.loads(f.read(16 << 20))
    except (OSError, ValueError):
        raise DockyardError(f"container {cid[:12]}: its runtime bundle is unreadable") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("process"), dict):
        raise DockyardError(f"container {cid[:12]}: its runtime bundle has no process")
    return spec


def build_process(cfg: dict[str, Any], spec: dict[str, Any], opts: ExecOptions) -> dict[str, Any]:
    """The exec'd process from the container's spec process and the exec options."""
    c = cfg.get("Config") or {}
    proc = dict(spec["process"])
    hostname = str(c.get("Hostname") or "")
    base = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"] + (["TERM=xterm"] if opts.tty else [])
    env = merge_env(merge_env(base, [str(e) for e in c.get("Env") or []]), list(opts.env))
    proc["args"] = list(opts.cmd)
    proc["env"] = env
    proc["cwd"] = opts.workdir or str(c.get("WorkingDir") or "") or "/"
    proc["terminal"] = opts.tty
    user_spec = opts.user or str(c.get("User") or "")
    if opts.user:
        rootfs = str((spec.get("root") or {}).get("path") or "")
        u = resolve_user(rootfs, user_spec)
        proc["user"] = {
            "uid": u.uid,
            "gid": u.gid,
            **({"additionalGids": u.additional_gids} if u.additional_gids else {}),
        }
    if opts.privileged:
        caps = all_caps()
        proc["capabilities"] = {"bounding": caps, "effective": list(caps), "permitted": list(caps)}
    proc.pop("consoleSize", None)
    return proc


def _start_error(stderr: bytes) -> ExecError:
    text = stderr.decode("utf-8", "replace").strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    msg = lines[-1] if lines else "the OCI runtime failed"
    m = re.search(r'msg="((?:[^"\\]|\\.)*)"', msg)
    if m:
        msg = re.sub(r"\\(.)", r"\1", m.group(1))
    msg = re.sub(r"^(ERRO\[\d+\]\s*|runc exec failed:\s*)", "", msg)
    # dockerd presets an exec's exit code to 126 and keeps it when the start fails, whatever the reason
    return ExecError(f"OCI runtime exec failed: {msg}: unknown", 126)


def run_exec(mgr: Containers, cid: str, opts: ExecOptions) -> int:
    """Run the process; returns its exit status (0 at once for ``-d``)."""
    cfg = mgr.load(cid)
    if not mgr.is_running(cfg):
        raise Conflict(f"Container {cid} is not running")
    if not opts.cmd:
        raise DockyardError("No exec command specified")
    proc = build_process(cfg, _bundle_spec(mgr, cid), opts)
    from dockyard.containers.monitor import _console_socket, tempfile_dir

    tmp = tempfile_dir()
    try:
        pfile = os.path.join(tmp, "process.json")
        with open(pfile, "w", encoding="utf-8") as f:
            json.dump(proc, f)
        args = ["exec", "--process", pfile]
        if opts.tty:
            # runc hands the pty master to a console socket (only with --detach); the process is
            # then reparented to us (a child subreaper), so its status is still ours to read
            pid_file = os.path.join(tmp, "pid")
            sock_path = os.path.join(tmp, "console.sock")
            sock = _console_socket(sock_path)
            try:
                targs = [*args, "--detach", "--pid-file", pid_file, "--console-socket", sock_path, cid]
                return _run_tty(mgr, targs, sock, pid_file, opts)
            finally:
                sock.close()
        if opts.detach:
            args += ["--detach", "--pid-file", os.path.join(tmp, "pid")]
        # Attached: the process's stdio is ours, runc forwards signals and returns its status.
        stdin: Any = None if opts.interactive and not opts.detach else subprocess.DEVNULL
        out: Any = subprocess.DEVNULL if opts.detach else None
        err_r, err_w = os.pipe()
        p = subprocess.Popen(mgr.runtime.cmd(*args, cid), stdin=stdin, stdout=out, stderr=err_w)
        os.close(err_w)
        old = _forward_signals(p.pid)
        try:
            err = _copy_stderr(err_r)
            code = p.wait()
        finally:
            _restore(old)
        return _exit_or_raise(code, err)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# runc writes its own failures to stderr as one logrus line; a process's own stderr passes through
_RUNC_LINE = re.compile(rb'^(time="[^"]*" level=error msg=|ERRO\[\d+\] )')


def _copy_stderr(fd: int) -> bytes:
    """Pass the stderr of runc (= the process's) through; keep runc's own error lines apart."""
    kept = b""
    pending = b""
    with os.fdopen(fd, "rb", buffering=0) as f:
        while True:
            chunk = f.read(65536)
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                line, _, pending = pending.partition(b"\n")
                if _RUNC_LINE.match(line):
                    kept += line + b"\n"
                else:
                    sys.stderr.buffer.write(line + b"\n")
                    sys.stderr.buffer.flush()
            if pending and not (pending.startswith(b'time="') or b'time="'.startswith(pending)):
                sys.stderr.buffer.write(pending)
                sys.stderr.buffer.flush()
                pending = b""
    if pending:
        if _RUNC_LINE.match(pending):
            kept += pending
        else:
            sys.stderr.buffer.write(pending)
            sys.stderr.buffer.flush()
    return kept


def _exit_or_raise(code: int, runc_err: bytes) -> int:
    if runc_err:
        raise _start_error(runc_err)
    if code < 0:
        return 128 - code
    return code


def _forward_signals(pid: int) -> dict[int, Any]:
    old: dict[int, Any] = {}
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        old[s] = signal.signal(s, lambda sig, _f: _kill(pid, sig))
    return old


def _restore(old: dict[int, Any]) -> None:
    for s, h in old.items():
        try:
            signal.signal(s, h)
        except (TypeError, ValueError):
            pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _run_tty(mgr: Containers, args: list[str], sock: Any, pid_file: str, opts: ExecOptions) -> int:
    """``-t``: copy between the pty master and our stdio until the process ends; ``-d -t``: a
    detached drainer keeps reading the master (docker discards a detached exec's output)."""
    from dockyard.containers.monitor import _recv_fd, _set_subreaper

    if not opts.detach:
        _set_subreaper()
    err_r, err_w = os.pipe()
    p = subprocess.Popen(
        mgr.runtime.cmd(*args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_w
    )
    os.close(err_w)
    try:
        master = _recv_fd(sock)
    except (DockyardError, OSError):
        p.wait()
        raise _start_error(_drain_all(err_r) or b"the OCI runtime did not send the console") from None
    if not opts.interactive:
        # what docker shows for ``exec -t`` without ``-i``: no \r added before \n
        import termios

        attrs = termios.tcgetattr(master)
        attrs[1] &= ~termios.ONLCR
        termios.tcsetattr(master, termios.TCSANOW, attrs)
    code = p.wait()
    err = _drain_all(err_r)
    if code != 0:
        os.close(master)
        return _exit_or_raise(code, err)
    if opts.detach:
        if os.fork() == 0:  # pragma: no cover - the drainer
            try:
                os.setsid()
                if os.fork() == 0:
                    _drain_master(master)
            finally:
                os._exit(0)
        os.close(master)
        os.wait()
        return 0
    try:
        with open(pid_file, encoding="ascii") as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        os.close(master)
        raise ExecError("the OCI runtime did not report the process", 126) from None
    return _pump_tty(master, pid, opts.interactive)


def _drain_master(master: int) -> None:
    while True:
        try:
            if not os.read(master, 65536):
                return
        except OSError:
            return


def _pump_tty(master: int, pid: int, interactive: bool) -> int:
    import select

    in_fd = sys.stdin.fileno() if interactive else -1
    term_state = None
    if in_fd >= 0 and os.isatty(in_fd):
        import termios
        import tty

        term_state = termios.tcgetattr(in_fd)
        tty.setraw(in_fd, termios.TCSANOW)  # as docker: keep what was typed ahead
    if sys.stdout.isatty():
        try:
            import fcntl
            import termios

            size = fcntl.ioctl(sys.stdout.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(master, termios.TIOCSWINSZ, size)
        except OSError:
            pass
    old = _forward_signals(pid) if term_state is None else {}
    status: int | None = None
    try:
        out = sys.stdout.buffer
        while True:
            watch = [master] + ([in_fd] if in_fd >= 0 else [])
            ready, _, _ = select.select(watch, [], [], 0.5)
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                out.write(data)
                out.flush()
            if in_fd >= 0 and in_fd in ready:
                data = os.read(in_fd, 65536)
                if data:
                    os.write(master, data)
                else:
                    in_fd = -1
            status = _reap(pid, status)
            if status is not None and not ready:
                break
        while status is None:
            wp, st = os.waitpid(-1, 0)
            if wp == pid:
                status = st
    finally:
        if term_state is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, term_state)
        _restore(old)
        os.close(master)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 255


def _reap(pid: int, status: int | None) -> int | None:
    """Reap our children without blocking; keep the status of ``pid`` when it comes by."""
    try:
        while True:
            wp, st = os.waitpid(-1, os.WNOHANG)
            if wp == 0:
                return status
            if wp == pid and status is None:
                status = st
    except ChildProcessError:
        return status


def _drain_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as f:
        return f.read()
