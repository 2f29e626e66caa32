"""Starting a container under a *monitor*: the rootfs and its hosts/hostname/resolv.conf, the
OCI bundle, ``runtime create`` with pipes (or a console socket), the recorded ``State``, the
output pump into the json-file log, and the exit (see :mod:`dockyard.containers.lifecycle`)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket

from dockyard import gojson
from dockyard.archive.fsutil import RootDir
from dockyard.containers import confine, model
from dockyard.containers.create import parse_bind
from dockyard.containers.logs import JsonFileWriter
from dockyard.containers.reaper import _kill_quiet
from dockyard.containers.records import ContainerRecords, now
from dockyard.containers.spec import DEFAULT_PATH, build_spec, merge_env, resolve_user
from dockyard.errors import Conflict, DockyardError, NotFound
from dockyard.procs import pid_alive, start_time
from dockyard.store.atomic import atomic_write, makedirs, read_text, write_plain

_PR_SET_CHILD_SUBREAPER = 36

DEFAULT_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


class StartError(DockyardError):
    """The container could not be started; ``exit_code`` follows docker run (125/126/127)."""

    def __init__(self, message: str, exit_code: int = 125) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ContainerRunner(ContainerRecords):
    """``start`` and the monitor that watches a running container."""

    # ------------------------------------------------------------------ start / monitor
    def _mark_starting(self, cid: str) -> None:
        """Claim the container for this process before anything is mounted: ``reap`` leaves a
        container alone while the pid in its monitor file lives."""
        bundle = os.path.join(self.exec_root, cid)
        os.makedirs(bundle, mode=0o711, exist_ok=True)
        _replace(os.path.join(bundle, "monitor"), f"{os.getpid()} {start_time(os.getpid())}".encode())

    def prepare_start(self, cid: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Mount the rootfs, write hostname/hosts/resolv.conf, write the OCI bundle."""
        st = self.store
        with st.write_lock():
            cfg = self.load(cid)
            if self.is_running(cfg):
                raise Conflict(f"container {cid[:12]} is already running")
            self._mark_starting(cid)
            try:
                return self._prepare(cid, cfg)
            except BaseException as e:
                # nothing may stay mounted or half-written after a failed start
                try:
                    st.driver.put(self.mount_id(cid))
                except (DockyardError, OSError):
                    pass
                shutil.rmtree(os.path.join(self.exec_root, cid), ignore_errors=True)
                if isinstance(e, DockyardError):
                    cfg = self.load(cid)
                    cfg["State"].update(Running=False, Pid=0, ExitCode=128, Error=str(e))
                    self.save(cid, cfg)
                    raise StartError(str(e), 125) from None
                raise

    def _prepare(self, cid: str, cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        st = self.store
        hc = self.hostconfig(cid)
        cdir = self.dir(cid)
        mid = self.mount_id(cid)
        confine.check(hc)  # refuse what cannot be enforced before anything is mounted
        rootfs = st.driver.get(mid)
        c = cfg["Config"]
        hostname = c.get("Hostname") or cid[:12]
        _write_file(os.path.join(cdir, "hostname"), (hostname + "\n").encode(), 0o644)
        if hc.get("NetworkMode") == "host":
            hosts = _read_host_file("/etc/hosts") or DEFAULT_HOSTS.encode()
        else:
            hosts = DEFAULT_HOSTS.encode()
        _write_file(os.path.join(cdir, "hosts"), hosts, 0o644)
        resolv = _resolv_conf(hc.get("NetworkMode") == "host")
        _write_file(os.path.join(cdir, "resolv.conf"), resolv, 0o644)
        atomic_write(
            os.path.join(cdir, "resolv.conf.hash"),
            ("sha256:" + hashlib.sha256(resolv).hexdigest()).encode(),
            0o644,
            sync_dir=False,
        )
        makedirs(os.path.join(cdir, "mounts"), 0o710)
        log_path = os.path.join(cdir, f"{cid}-json.log")
        if not os.path.exists(log_path):
            _write_file(log_path, b"", 0o640)
        cfg["HostnamePath"] = os.path.join(cdir, "hostname")
        cfg["HostsPath"] = os.path.join(cdir, "hosts")
        cfg["ResolvConfPath"] = os.path.join(cdir, "resolv.conf")
        cfg["LogPath"] = log_path
        self.save(cid, cfg)
        user = resolve_user(rootfs, str(c.get("User") or ""))
        workdir = str(c.get("WorkingDir") or "/")
        _mkdir_in_rootfs(rootfs, workdir)
        binds = []
        for b in hc.get("Binds") or []:
            src, dst, rw = parse_bind(b)
            if not os.path.exists(src):
                os.makedirs(src, 0o755, exist_ok=True)
            binds.append((src, dst, rw))
        env = merge_env(
            [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"] + (["TERM=xterm"] if c.get("Tty") else []),
            list(c.get("Env") or []),
        )
        spec = build_spec(
            rootfs=rootfs,
            args=[str(cfg["Path"]), *[str(a) for a in cfg.get("Args") or []]],
            env=env,
            cwd=workdir,
            user=user,
            hostname=hostname,
            tty=bool(c.get("Tty")),
            read_only=bool(hc.get("ReadonlyRootfs")),
            network_mode=str(hc.get("NetworkMode") or "none"),
            container_dir=cdir,
            binds=binds,
            cgroups_path=f"/dockyard/{cid}",
        )
        confine.apply(spec, hc, cfg, cid, parent="dockyard")  # dockerd's confinement, or a refusal
        bundle = os.path.join(self.exec_root, cid)
        os.makedirs(bundle, mode=0o711, exist_ok=True)
        atomic_write(
            os.path.join(bundle, "config.json"), gojson.marshal(spec).encode(), 0o600, sync_dir=False
        )
        return cfg, hc

    def monitor(
        self,
        cid: str,
        *,
        attach: bool,
        stdin: bool,
        on_started: Callable[[int], None] | None = None,
        on_failed: Callable[[str], None] | None = None,
    ) -> int:
        """Run the container to its end; returns its exit code. Runs in the monitor process."""
        cfg = self.load(cid)
        tty_mode = bool(cfg["Config"].get("Tty"))
        _set_subreaper()
        bundle = os.path.join(self.exec_root, cid)
        pid_file = os.path.join(bundle, "init.pid")
        mon = os.path.join(bundle, "monitor")
        _replace(mon, f"{os.getpid()} {start_time(os.getpid())}".encode())
        log = JsonFileWriter(cfg.get("LogPath") or os.path.join(self.dir(cid), f"{cid}-json.log"))
        if os.path.exists(os.path.join(self.runtime.state_root, cid)):
            self.runtime.delete(cid)  # leftovers of an earlier, interrupted run
        console_sock = None
        master = -1
        fds: dict[int, str] = {}
        in_w = -1
        err_text = b""
        try:
            if tty_mode:
                # AF_UNIX paths are short (108 bytes): a private dir under /tmp, not the bundle
                sock_dir = tempfile_dir()
                sock_path = os.path.join(sock_dir, "console.sock")
                console_sock = _console_socket(sock_path)
                proc = subprocess.run(
                    self.runtime.cmd(
                        "create",
                        "--bundle",
                        bundle,
                        "--pid-file",
                        pid_file,
                        "--console-socket",
                        sock_path,
                        cid,
                    ),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                )
                if proc.returncode != 0:
                    raise DockyardError(_runtime_error(proc.stderr))
                master = _recv_fd(console_sock)
                fds[master] = "stdout"
            else:
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                in_r = -1
                if stdin:
                    in_r, in_w = os.pipe()
                proc = subprocess.run(
                    self.runtime.cmd("create", "--bundle", bundle, "--pid-file", pid_file, cid),
                    stdin=in_r if in_r >= 0 else subprocess.DEVNULL,
                    stdout=out_w,
                    stderr=err_w,
                )
                os.close(out_w)
                os.close(err_w)
                if in_r >= 0:
                    os.close(in_r)
                if proc.returncode != 0:
                    err_text = _drain(err_r)
                    os.close(out_r)
                    os.close(err_r)
                    raise DockyardError(_runtime_error(err_text))
                fds[out_r] = "stdout"
                fds[err_r] = "stderr"
            pid = int(read_text(pid_file).strip())
            cfg2 = self.load(cid)
            cfg2["State"].update(
                Running=True, Pid=pid, StartedAt=now(), ExitCode=0, Error="", FinishedAt=model.ZERO_TIME
            )
            cfg2["HasBeenStartedBefore"] = True
            self.save(cid, cfg2)
            start = subprocess.run(self.runtime.cmd("start", cid), capture_output=True)
            if start.returncode != 0:
                raise DockyardError(_runtime_error(start.stderr))
            if on_started:
                on_started(pid)
            code = self._pump(pid, fds, log, attach, stdin, in_w, master, tty_mode)
        except BaseException as e:
            msg = str(e) if isinstance(e, DockyardError) else f"{type(e).__name__}: {e}"
            log.close()
            # docker's codes for a process that never ran: 127 not found, 126 not executable
            low = msg.lower()
            code = (
                127
                if ("no such file" in low or "not found" in low)
                else (126 if "permission denied" in low else 128)
            )
            self._finish(cid, code, error=msg, started=False)
            if on_failed:
                on_failed(msg)
            raise StartError(
                msg if isinstance(e, DockyardError) else f"failed to run container {cid[:12]}: {msg}",
                code if code in (126, 127) else 125,
            ) from None
        finally:
            if console_sock is not None:
                console_sock.close()
                shutil.rmtree(os.path.dirname(sock_path), ignore_errors=True)
        log.close()
        self._finish(cid, code)
        return code

    def _pump(
        self,
        pid: int,
        fds: dict[int, str],
        log: JsonFileWriter,
        attach: bool,
        stdin: bool,
        in_w: int,
        master: int,
        tty_mode: bool,
    ) -> int:
        """Copy output to the log (and terminal) until the container's init exits."""
        forwarded = [
            signal.SIGINT,
            signal.SIGTERM,
            signal.SIGHUP,
            signal.SIGQUIT,
            signal.SIGUSR1,
            signal.SIGUSR2,
        ]
        old_handlers: dict[int, Any] = {}
        if attach and not tty_mode:
            for s in forwarded:
                old_handlers[s] = signal.signal(s, lambda sig, _f: _kill_quiet(pid, sig))
        else:
            for s in forwarded:
                old_handlers[s] = signal.signal(s, signal.SIG_IGN) if not attach else signal.getsignal(s)
        term_state = None
        in_fd = -1
        if attach and stdin:
            in_fd = sys.stdin.fileno()
            if tty_mode and os.isatty(in_fd):
                import termios
                import tty

                term_state = termios.tcgetattr(in_fd)
                tty.setraw(in_fd)
        status: int | None = None
        try:
            open_fds = dict(fds)
            while True:
                watch = list(open_fds)
                if in_fd >= 0:
                    watch.append(in_fd)
                ready, _, _ = select.select(watch, [], [], 0.2) if watch else ([], [], [])
                for fd in ready:
                    if fd == in_fd:
                        data = os.read(in_fd, 65536)
                        target = master if tty_mode else in_w
                        if not data:
                            in_fd = -1
                            if not tty_mode and in_w >= 0:
                                os.close(in_w)
                                in_w = -1
                            continue
                        if target >= 0:
                            try:
                                os.write(target, data)
                            except OSError:
                                pass
                        continue
                    try:
                        data = os.read(fd, 65536)
                    except OSError as e:
                        if e.errno == errno.EIO:  # pty closed
                            data = b""
                        else:
                            raise
                    if not data:
                        del open_fds[fd]
                        os.close(fd)
                        continue
                    stream = open_fds[fd]
                    log.write(stream, data)
                    if attach:
                        out = sys.stdout.buffer if stream == "stdout" else sys.stderr.buffer
                        out.write(data)
                        out.flush()
                # Reap children (we are a subreaper: the container's init is one of them, next to
                # runtime helpers) and keep the init's status when it comes by.
                try:
                    while True:
                        wp, st = os.waitpid(-1, os.WNOHANG)
                        if wp == 0:
                            break
                        if wp == pid and status is None:
                            status = st
                except ChildProcessError:
                    if status is None and not pid_alive(pid):
                        status = 255 << 8  # gone without a status we could read
                if status is not None and not open_fds:
                    break
                if status is not None and not ready:
                    # init is gone and nothing more came: anything still holding the pipes is dead too
                    for fd in list(open_fds):
                        os.close(fd)
                    open_fds.clear()
                    break
        finally:
            if term_state is not None:
                import termios

                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, term_state)
            for signum, h in old_handlers.items():
                try:
                    signal.signal(signum, h)
                except (TypeError, ValueError):
                    pass
            if in_w >= 0:
                try:
                    os.close(in_w)
                except OSError:
                    pass
        if os.WIFEXITED(status):
            return os.WEXITSTATUS(status)
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return 255

    def _finish(self, cid: str, code: int, *, error: str = "", started: bool = True) -> None:
        """After the container ended: runtime state gone, rootfs unmounted, exit recorded."""
        self.runtime.delete(cid)
        try:
            with self.store.write_lock():
                try:
                    self.store.driver.put(self.mount_id(cid))
                except (DockyardError, OSError):
                    pass
                try:
                    cfg = self.load(cid)
                except NotFound:
                    cfg = None
                if cfg is not None:
                    cfg["State"].update(Running=False, Pid=0, ExitCode=code, Error=error)
                    if started:
                        cfg["State"]["FinishedAt"] = now()
                    self.save(cid, cfg)
                shutil.rmtree(os.path.join(self.exec_root, cid), ignore_errors=True)
                if cfg is not None and self.hostconfig(cid).get("AutoRemove"):
                    from dockyard.containers.removal import remove_container

                    remove_container(self.store, cid, force=True)
        except DockyardError:
            pass


def _set_subreaper() -> None:
    import ctypes  # only the monitor needs it; create stays lean

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _replace(path: str, data: bytes) -> None:
    """Replace a small runtime file by rename, so a reader never sees it empty."""
    tmp = f"{path}.{os.getpid()}.tmp"
    write_plain(tmp, data, 0o600)
    os.rename(tmp, path)


def _write_file(path: str, data: bytes, mode: int) -> None:
    write_plain(path, data, mode)


def _read_host_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _resolv_conf(host_network: bool) -> bytes:
    """The host's resolv.conf, without localhost nameservers (unless host networking)."""
    data = _read_host_file("/etc/resolv.conf") or b""
    if host_network:
        return data
    lines = []
    for line in data.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if (
            len(parts) >= 2
            and parts[0] == "nameserver"
            and (parts[1].startswith("127.") or parts[1] == "::1")
        ):
            continue
        lines.append(line)
    if not any(x.split()[:1] == ["nameserver"] for x in lines if x.strip()):
        lines += ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]
    return ("\n".join(lines) + "\n").encode()


def _mkdir_in_rootfs(rootfs: str, path: str) -> None:
    """``mkdir -p`` inside the container rootfs, never following its symlinks out."""
    parts = [p for p in path.split("/") if p and p != "."]
    with RootDir(rootfs) as rd:
        cur = b""
        for p in parts:
            if p == "..":
                continue
            pfd = rd.dirfd(cur)
            try:
                os.mkdir(p, 0o755, dir_fd=pfd)
            except FileExistsError:
                pass
            cur = (cur + b"/" + p.encode()) if cur else p.encode()
            try:
                rd.dirfd(cur)
            except Exception:
                return  # a symlink or file in the way: the runtime resolves it safely itself


def _drain(fd: int) -> bytes:
    out = b""
    fl = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out += chunk
    except BlockingIOError:
        pass
    return out


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="dyc-", dir="/tmp")


def _runtime_error(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace").strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    msg = lines[-1] if lines else "the OCI runtime failed"
    m = re.search(r'msg="((?:[^"\\]|\\.)*)"', msg)
    if m:
        msg = re.sub(r"\\(.)", r"\1", m.group(1))
    return f"OCI runtime create failed: {msg}"


def _console_socket(path: str) -> socket.socket:
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s.bind(path)
    s.listen(1)
    return s


def _recv_fd(sock: socket.socket) -> int:
    import socket
    import struct

    sock.settimeout(30)
    conn, _ = sock.accept()
    with conn:
        fds: list[int] = []
        _msg, ancdata, _flags, _addr = conn.recvmsg(4096, socket.CMSG_LEN(struct.calcsize("i") * 4))
        for level, typ, data in ancdata:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                fds.extend(struct.unpack(f"{len(data) // 4}i", data[: len(data) - len(data) % 4]))
    if not fds:
        raise DockyardError("the OCI runtime did not send the console")
    return fds[0]
