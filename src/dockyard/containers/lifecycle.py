"""Containers without a daemon: create, start (watched by a monitor), stop, kill, wait, remove.

Layout (exactly Docker's): ``layerdb/mounts/<id>/{mount-id,init-id,parent}``, the driver dirs
``overlay2/<mount-id>-init`` and ``overlay2/<mount-id>``, and ``containers/<id>/`` with
``config.v2.json``, ``hostconfig.json``, ``checkpoints/``, and after the first start
``hostname``, ``hosts``, ``resolv.conf(.hash)``, ``mounts/`` and ``<id>-json.log``.

Creation order, so a crash never leaves a dangling reference: init layer, read-write layer,
then the mount record (staged in ``layerdb/tmp``, renamed into ``layerdb/mounts``), then the
container dir (staged as ``containers/.tmp-<id>``, renamed). A crash leaves only orphans that
fsck removes.

Running: a *monitor* (the ``run``/``start -a`` process itself, or a detached process for ``-d``)
makes itself a child subreaper, has the OCI runtime create the container with pipes for its
stdio, records ``State`` in config.v2.json, starts it, copies its output into the json-file log
(and the terminal when attached), waits for its exit, and then deletes the runtime state,
unmounts the rootfs and records the exit (removing the container for ``--rm``). If a monitor is
killed, the next dockyard command that touches containers reaps what it left behind.
"""

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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket

from dockyard import gojson
from dockyard.archive.fsutil import RootDir, remove_tree
from dockyard.containers import initlayer, model
from dockyard.containers.logs import JsonFileWriter
from dockyard.containers.names import random_name
from dockyard.containers.runtime import Runtime, default_exec_root
from dockyard.containers.spec import DEFAULT_PATH, build_spec, merge_env, resolve_user
from dockyard.digest import is_hex64, random_id
from dockyard.errors import Conflict, DockyardError, InvalidInput, NotFound
from dockyard.faults import boundary
from dockyard.procs import pid_alive, start_time
from dockyard.store import Store
from dockyard.store.atomic import atomic_write, fsync_dir, makedirs, read_text, write_plain

NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
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


@dataclass
class CreateOptions:
    name: str | None = None
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    env: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    hostname: str | None = None
    binds: list[str] = field(default_factory=list)
    network: str = "none"
    tty: bool = False
    interactive: bool = False
    auto_remove: bool = False
    read_only: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    image_name: str = ""


def now() -> str:
    return gojson.format_rfc3339nano(time.time_ns())


def parse_bind(spec: str) -> tuple[str, str, bool]:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise InvalidInput(f"invalid volume specification: {spec!r} (expected HOST:CONTAINER[:ro|rw])")
    src, dst = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise InvalidInput(f"invalid mode {mode!r} in volume specification {spec!r}")
    if not os.path.isabs(src):
        raise InvalidInput(
            f"invalid volume specification {spec!r}: only absolute host paths (bind mounts) are supported"
        )
    if not os.path.isabs(dst):
        raise InvalidInput(f"invalid volume specification {spec!r}: the container path must be absolute")
    return os.path.normpath(src), os.path.normpath(dst), mode == "rw"


class Containers:
    def __init__(self, store: Store, *, exec_root: str | None = None, runtime: str | None = None) -> None:
        self.store = store
        self.exec_root = exec_root or default_exec_root(store.root)
        self.runtime = Runtime(
            runtime or os.environ.get("DOCKYARD_RUNTIME", "runc"), os.path.join(self.exec_root, "runtime")
        )

    # ------------------------------------------------------------------ records
    def dir(self, cid: str) -> str:
        return self.store.layout.container_dir(cid)

    def load(self, cid: str) -> dict[str, Any]:
        try:
            return model.load_json(model.config_path(self.dir(cid)))
        except FileNotFoundError:
            raise NotFound(f"No such container: {cid}") from None
        except ValueError as e:
            raise DockyardError(f"container {cid[:12]}: {e}") from None

    def hostconfig(self, cid: str) -> dict[str, Any]:
        try:
            return model.load_json(model.hostconfig_path(self.dir(cid)))
        except (FileNotFoundError, ValueError):
            return {}

    def save(self, cid: str, cfg: dict[str, Any]) -> None:
        atomic_write(model.config_path(self.dir(cid)), model.encode(cfg), 0o600)

    def update_state(self, cid: str, **state: Any) -> dict[str, Any]:
        cfg = self.load(cid)
        cfg["State"].update(state)
        self.save(cid, cfg)
        return cfg

    def ids(self) -> list[str]:
        return self.store.containers.ids()

    def all(self) -> list[dict[str, Any]]:
        out = []
        for cid in self.ids():
            try:
                out.append(self.load(cid))
            except DockyardError:
                continue
        return out

    def resolve(self, ref: str) -> str:
        """docker's lookup: full ID, exact name, then unique ID prefix."""
        if is_hex64(ref) and os.path.isdir(self.dir(ref)):
            return ref
        name = "/" + ref.lstrip("/")
        cfgs = self.all()
        for c in cfgs:
            if c.get("Name") == name:
                return str(c["ID"])
        hits = (
            [str(c["ID"]) for c in cfgs if str(c["ID"]).startswith(ref)]
            if re.match(r"^[a-f0-9]+$", ref)
            else []
        )
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise DockyardError(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def mount_id(self, cid: str) -> str:
        v = read_text(os.path.join(self.store.layout.mount_dir(cid), "mount-id")).strip()
        if not is_hex64(v):
            raise DockyardError(f"container {cid[:12]}: invalid mount-id")
        return v

    def is_running(self, cfg: dict[str, Any]) -> bool:
        st = cfg.get("State") or {}
        pid = int(st.get("Pid") or 0)
        return bool(st.get("Running")) and pid > 0 and pid_alive(pid)

    # ------------------------------------------------------------------ create
    def create(self, image: str, opts: CreateOptions) -> str:
        st = self.store
        image_id = st.resolve_image(image)
        img = st.images.get(image_id)
        merged = _merge_config(opts, img.container_config)
        entry = merged.get("Entrypoint") or []
        cmd = merged.get("Cmd") or []
        argv = list(entry) + list(cmd)
        if not argv:
            raise InvalidInput("no command specified")
        if opts.network not in ("none", "host"):
            raise InvalidInput(
                f"network mode {opts.network!r} is not supported yet: use --network none or --network host"
            )
        for b in opts.binds:
            parse_bind(b)
        cid = random_id()
        merged["Hostname"] = opts.hostname or (cid[:12] if opts.network != "host" else os.uname().nodename)
        merged["Image"] = opts.image_name or image
        merged["AttachStdin"] = opts.interactive
        merged["AttachStdout"] = True
        merged["AttachStderr"] = True
        merged["Tty"] = opts.tty
        merged["OpenStdin"] = opts.interactive
        merged["StdinOnce"] = opts.interactive
        self.reap()
        with st.write_lock():
            taken = {str(c.get("Name", "")).lstrip("/") for c in self.all()}
            if opts.name:
                if not NAME_RE.match(opts.name):
                    raise InvalidInput(
                        f"Invalid container name ({opts.name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )
                if opts.name.lstrip("/") in taken:
                    other = self.resolve(opts.name)
                    raise Conflict(
                        f'Conflict. The container name "/{opts.name.lstrip("/")}" is already in use by container '
                        f'"{other}". You have to remove (or rename) that container to be able to reuse that name.'
                    )
                name = "/" + opts.name.lstrip("/")
            else:
                name = "/" + random_name(taken)
            # the image may have gone while we prepared: look again under the lock
            if not st.images.exists(image_id):
                raise NotFound(f"No such image: {image}")
            mount_id = random_id()
            top = img.top_chain
            if top and not st.layers.exists(top):
                raise NotFound(f"No such image: {image}")
            parent_cache = st.layers.get(top).cache_id if top else None
            self._create_layers(mount_id, parent_cache)
            self._write_mount_record(cid, mount_id, top)
            log_path = os.path.join(self.dir(cid), f"{cid}-json.log")
            mounts = {}
            for b in opts.binds:
                src, dst, rw = parse_bind(b)
                mounts[dst] = model.mount_point(src, dst, rw)
            record = model.container_record(
                container_id=cid,
                created=now(),
                path=argv[0],
                args=argv[1:],
                config=merged,
                image_id=image_id,
                name=name,
                network=opts.network,
                log_path=log_path,
                mount_points=mounts,
            )
            hc = model.host_config(
                binds=opts.binds,
                network_mode=opts.network,
                auto_remove=opts.auto_remove,
                read_only=opts.read_only,
            )
            self._write_container_dir(cid, record, hc)
        return cid

    def _create_layers(self, mount_id: str, parent_cache: str | None) -> None:
        drv = self.store.driver
        init_id = mount_id + "-init"
        drv.create(init_id, parent_cache)
        boundary("container:init-layer")
        try:
            root = drv.get(init_id)
            try:
                initlayer.setup(root)
            finally:
                drv.put(init_id)
            drv.create(mount_id, init_id)
        except BaseException:
            drv.remove(mount_id)
            drv.remove(init_id)
            raise
        boundary("container:rw-layer")

    def _write_mount_record(self, cid: str, mount_id: str, parent: str | None) -> None:
        lay = self.store.layout
        makedirs(lay.layerdb_mounts, 0o755)
        makedirs(lay.layerdb_tmp, 0o755)
        staging = os.path.join(lay.layerdb_tmp, f"mount-{cid}")
        os.mkdir(staging, 0o755)
        os.chmod(staging, 0o755)
        write_plain(os.path.join(staging, "mount-id"), mount_id.encode(), 0o644)
        write_plain(os.path.join(staging, "init-id"), f"{mount_id}-init".encode(), 0o644)
        if parent:
            write_plain(os.path.join(staging, "parent"), parent.encode(), 0o644)
        fsync_dir(staging)
        os.rename(staging, lay.mount_dir(cid))
        fsync_dir(lay.layerdb_mounts)
        boundary("container:mount-record")

    def _write_container_dir(self, cid: str, record: dict[str, Any], hc: dict[str, Any]) -> None:
        lay = self.store.layout
        makedirs(lay.containers, 0o710)
        staging = os.path.join(lay.containers, f".tmp-{cid}")
        os.mkdir(staging, 0o710)
        os.chmod(staging, 0o710)
        os.mkdir(os.path.join(staging, "checkpoints"), 0o700)
        atomic_write(os.path.join(staging, "config.v2.json"), model.encode(record), 0o600, sync_dir=False)
        atomic_write(os.path.join(staging, "hostconfig.json"), model.encode(hc), 0o644, sync_dir=False)
        fsync_dir(staging)
        os.rename(staging, self.dir(cid))
        fsync_dir(lay.containers)
        boundary("container:created")

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

    # ------------------------------------------------------------------ reaping
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


# ---------------------------------------------------------------------------- helpers
def _merge_config(opts: CreateOptions, image: dict[str, Any]) -> dict[str, Any]:
    """docker's merge of the run config with the image config (runconfig merge)."""
    c: dict[str, Any] = {}
    c["User"] = opts.user if opts.user is not None else image.get("User", "")
    ports = dict(image.get("ExposedPorts") or {})
    if ports:
        c["ExposedPorts"] = ports
    env = list(opts.env)
    keys = {e.partition("=")[0] for e in env}
    for e in image.get("Env") or []:
        if e.partition("=")[0] not in keys:
            env.append(e)
    c["Env"] = env or None
    if opts.entrypoint is not None:
        c["Entrypoint"] = [x for x in opts.entrypoint if x != ""] or None
        c["Cmd"] = opts.cmd or None
    else:
        c["Entrypoint"] = image.get("Entrypoint")
        c["Cmd"] = opts.cmd if opts.cmd else image.get("Cmd")
        if not opts.cmd and image.get("ArgsEscaped"):
            c["ArgsEscaped"] = True
    if image.get("Healthcheck"):
        c["Healthcheck"] = image["Healthcheck"]
    c["Volumes"] = image.get("Volumes")
    c["WorkingDir"] = opts.workdir if opts.workdir else image.get("WorkingDir", "")
    c["OnBuild"] = image.get("OnBuild")
    labels = dict(image.get("Labels") or {})
    labels.update(opts.labels)
    c["Labels"] = labels or None
    if image.get("StopSignal"):
        c["StopSignal"] = image["StopSignal"]
    if image.get("Shell"):
        c["Shell"] = image["Shell"]
    return c


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


__all__ = ["Containers", "CreateOptions", "parse_bind", "remove_tree"]
