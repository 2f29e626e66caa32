"""Container operations with docker's verbs: run, start, stop, rm, ps, logs, diff, commit, export, cp."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from dockyard import __version__, gojson
from dockyard.archive.fsutil import RootDir
from dockyard.containers.lifecycle import Containers, CreateOptions, now
from dockyard.errors import Conflict, DockyardError, InvalidInput, NotFound

if TYPE_CHECKING:
    from dockyard.containers.changes import Change

# Heavier modules (tar writing, diffs, image configs, housekeeping) are imported by the commands
# that use them, so `run` and `create` start quickly.


# ----------------------------------------------------------------------------- start / run
def start(mgr: Containers, cid: str, *, attach: bool, interactive: bool) -> int | None:
    """Start a created/stopped container. Attached: returns its exit code (we are the monitor).
    Detached: a monitor process is left watching it; returns None once it runs."""
    mgr.reap()
    mgr.prepare_start(cid)
    if attach:
        return mgr.monitor(cid, attach=True, stdin=interactive)
    _spawn_monitor(mgr, cid)
    return None


def _spawn_monitor(mgr: Containers, cid: str) -> None:
    """Double-fork a monitor that outlives this command; wait until it reports the start."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            status = [False]

            def started(p: int) -> None:
                status[0] = True
                os.write(w, f"ok {p}\n".encode())
                os.close(w)

            def failed(msg: str) -> None:
                if not status[0]:
                    os.write(w, f"err {msg}\n".encode(errors="replace"))

            try:
                mgr.monitor(cid, attach=False, stdin=False, on_started=started, on_failed=failed)
            except BaseException:
                pass
        finally:
            os._exit(0)
    os.close(w)
    msg = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        msg += chunk
    os.close(r)
    os.waitpid(pid, 0)
    text = msg.decode(errors="replace").strip()
    if not text.startswith("ok"):
        raise DockyardError(text[4:] if text.startswith("err ") else f"container {cid[:12]} failed to start")


def run(mgr: Containers, image: str, opts: CreateOptions, *, detach: bool) -> tuple[str, int | None]:
    cid = mgr.create(image, opts)
    try:
        code = start(mgr, cid, attach=not detach, interactive=opts.interactive)
    except DockyardError:
        if opts.auto_remove:
            try:
                remove(mgr, cid, force=True)
            except DockyardError:
                pass
        raise
    return cid, code


def remove(mgr: Containers, cid: str, *, force: bool) -> None:
    mgr.reap()
    cfg = mgr.load(cid)
    if mgr.is_running(cfg):
        if not force:
            raise Conflict(
                f"You cannot remove a running container {cid}. Stop the container before attempting removal or force remove"
            )
        mgr.kill(cid)
        mgr.wait_stopped(cid, 30)
    from dockyard.containers.removal import remove_container

    with mgr.store.write_lock():
        if os.path.isdir(mgr.dir(cid)):
            try:
                mgr.store.driver.put(mgr.mount_id(cid))
            except (DockyardError, OSError):
                pass
            remove_container(mgr.store, cid, force=True)


def wait(mgr: Containers, cid: str) -> int:
    mgr.wait_stopped(cid, None)
    try:
        return int(mgr.load(cid)["State"]["ExitCode"])
    except NotFound:
        return 0


# ----------------------------------------------------------------------------- ps / inspect
def status_of(cfg: dict[str, Any], running: bool) -> tuple[str, str]:
    st = cfg.get("State") or {}
    if running:
        started = _ns(st.get("StartedAt"))
        from dockyard.units import human_duration

        return "running", "Up " + human_duration(time.time() - started / 1e9)
    if st.get("StartedAt") in (None, "", gojson.ZERO_TIME) and not cfg.get("HasBeenStartedBefore"):
        return "created", "Created"
    fin = _ns(st.get("FinishedAt"))
    from dockyard.units import human_duration

    ago = human_duration(time.time() - fin / 1e9) + " ago" if fin else ""
    return "exited", f"Exited ({st.get('ExitCode', 0)}) {ago}".rstrip()


def _ns(s: Any) -> int:
    try:
        return gojson.parse_rfc3339(str(s))
    except ValueError:
        return 0


def inspect_container(mgr: Containers, cid: str) -> dict[str, Any]:
    """docker container inspect's JSON (the fields dockyard knows)."""
    cfg = mgr.load(cid)
    hc = mgr.hostconfig(cid)
    running = mgr.is_running(cfg)
    state = dict(cfg.get("State") or {})
    status, _ = status_of(cfg, running)
    st_out = {
        "Status": status,
        "Running": running,
        "Paused": bool(state.get("Paused")),
        "Restarting": bool(state.get("Restarting")),
        "OOMKilled": bool(state.get("OOMKilled")),
        "Dead": bool(state.get("Dead")),
        "Pid": int(state.get("Pid") or 0) if running else 0,
        "ExitCode": int(state.get("ExitCode") or 0),
        "Error": state.get("Error", ""),
        "StartedAt": state.get("StartedAt", gojson.ZERO_TIME),
        "FinishedAt": state.get("FinishedAt", gojson.ZERO_TIME),
    }
    try:
        mid = mgr.mount_id(cid)
        d = mgr.store.driver.dir(mid)
        lower = mgr.store.driver.lower_of(mid) or ""
        lowers = []
        for item in lower.split(":") if lower else []:
            try:
                lowers.append(
                    os.path.normpath(
                        os.path.join(
                            mgr.store.layout.overlay2_links,
                            os.readlink(os.path.join(mgr.store.layout.overlay2, item)),
                        )
                    )
                )
            except OSError:
                continue
        gd: dict[str, Any] = {
            "Data": {
                "LowerDir": ":".join(lowers),
                "MergedDir": os.path.join(d, "merged"),
                "UpperDir": os.path.join(d, "diff"),
                "WorkDir": os.path.join(d, "work"),
            },
            "Name": "overlay2",
        }
    except (DockyardError, OSError):
        gd = {"Data": None, "Name": "overlay2"}
    mounts = []
    for mp in (cfg.get("MountPoints") or {}).values():
        mounts.append(
            {
                "Type": mp.get("Type", "bind"),
                "Source": mp.get("Source", ""),
                "Destination": mp.get("Destination", ""),
                "Mode": "" if mp.get("RW", True) else "ro",
                "RW": bool(mp.get("RW", True)),
                "Propagation": mp.get("Propagation", ""),
            }
        )
    return {
        "Id": cid,
        "Created": cfg.get("Created", ""),
        "Path": cfg.get("Path", ""),
        "Args": cfg.get("Args") or [],
        "State": st_out,
        "Image": cfg.get("Image", ""),
        "ResolvConfPath": cfg.get("ResolvConfPath", ""),
        "HostnamePath": cfg.get("HostnamePath", ""),
        "HostsPath": cfg.get("HostsPath", ""),
        "LogPath": cfg.get("LogPath", ""),
        "Name": cfg.get("Name", ""),
        "RestartCount": cfg.get("RestartCount", 0),
        "Driver": cfg.get("Driver", "overlay2"),
        "Platform": cfg.get("OS", "linux"),
        "MountLabel": cfg.get("MountLabel", ""),
        "ProcessLabel": cfg.get("ProcessLabel", ""),
        "AppArmorProfile": cfg.get("AppArmorProfile", ""),
        "ExecIDs": None,
        "HostConfig": hc,
        "GraphDriver": gd,
        "Mounts": mounts,
        "Config": cfg.get("Config") or {},
        "NetworkSettings": cfg.get("NetworkSettings") or {},
    }


# ----------------------------------------------------------------------------- logs
def logs(
    mgr: Containers,
    cid: str,
    *,
    follow: bool,
    tail: int | None,
    timestamps: bool,
    out: Callable[[str, str], None],
) -> None:
    from dockyard.containers.logs import read_entries

    cfg = mgr.load(cid)
    path = cfg.get("LogPath") or os.path.join(mgr.dir(cid), f"{cid}-json.log")
    entries = list(read_entries(path))
    if tail is not None and tail >= 0:
        entries = entries[-tail:] if tail else []
    for e in entries:
        out(e.stream, (e.time + " " if timestamps else "") + e.text)
    if not follow:
        return
    try:
        pos = os.path.getsize(path)
    except OSError:
        return
    while True:
        try:
            size = os.path.getsize(path)
        except OSError:
            return
        if size > pos:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read(size - pos)
            keep = data.rfind(b"\n") + 1
            pos += keep
            import json

            for line in data[:keep].splitlines():
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                out(
                    str(obj.get("stream", "stdout")),
                    (str(obj.get("time", "")) + " " if timestamps else "") + str(obj.get("log", "")),
                )
            continue
        try:
            running = mgr.is_running(mgr.load(cid))
        except NotFound:
            return
        if not running:
            return
        time.sleep(0.1)


# ----------------------------------------------------------------------------- diff / export / commit
def _layer_dirs(mgr: Containers, cid: str) -> tuple[str, list[str]]:
    mid = mgr.mount_id(cid)
    drv = mgr.store.driver
    lowers = []
    lower = drv.lower_of(mid) or ""
    for item in lower.split(":") if lower else []:
        link = os.path.join(mgr.store.layout.overlay2, item)
        lowers.append(os.path.normpath(os.path.join(mgr.store.layout.overlay2_links, os.readlink(link))))
    return drv.diff_path(mid), lowers


def diff(mgr: Containers, cid: str) -> list[Change]:
    """docker diff: the mounted rootfs against the mounted init layer (dockerd's naive diff)."""
    from dockyard.containers.changes import changes_between

    mgr.reap()
    mid = mgr.mount_id(cid)
    with _mounted(mgr, cid, mid) as new_root, _mounted(mgr, cid, mid + "-init") as old_root:
        return changes_between(new_root, old_root)


@contextmanager
def _mounted(mgr: Containers, cid: str, layer: str) -> Iterator[str]:
    """The merged view of one of the container's layers; unmounted afterwards if this mounted it,
    except the rootfs of a container that runs."""
    drv = mgr.store.driver
    with mgr.store.write_lock():
        ours = not drv.mounted(layer) and drv.lower_of(layer) is not None
        root = drv.get(layer)
    try:
        yield root
    finally:
        if ours and not (layer == mgr.mount_id(cid) and mgr.is_running(mgr.load(cid))):
            with mgr.store.write_lock():
                drv.put(layer)


def _rootfs(mgr: Containers, cid: str) -> AbstractContextManager[str]:
    """The container's mounted rootfs (see :func:`_mounted`)."""
    return _mounted(mgr, cid, mgr.mount_id(cid))


def export(mgr: Containers, cid: str, write: Callable[[bytes | memoryview], Any]) -> None:
    """docker export: the merged filesystem as one tar (mounted read-only view if stopped)."""
    from dockyard.archive.export import write_dir_tar

    mgr.reap()
    with _rootfs(mgr, cid) as root:
        write_dir_tar(root, write)


def commit(
    mgr: Containers,
    cid: str,
    repo_tag: str | None,
    *,
    message: str = "",
    author: str = "",
    changes: list[str] | None = None,
    pause: bool = True,
) -> str:
    """docker commit: a new image from the container's read-write layer (against its init layer)."""
    from dockyard.archive.apply import apply_layer
    from dockyard.archive.export import write_dir_tar
    from dockyard.image.changes import apply_changes
    from dockyard.image.config import ImageConfig
    from dockyard.image.container_config import container_config
    from dockyard.image.reference import parse_reference
    from dockyard.store.atomic import fsync_dir, syncfs

    st = mgr.store
    cfg = mgr.load(cid)
    ref = parse_reference(repo_tag).tagged_or_latest() if repo_tag else None
    image_id = str(cfg.get("Image") or "")
    parent_img = st.images.get(image_id)
    upper, _ = _layer_dirs(mgr, cid)
    import tempfile

    with st.write_lock():
        st.layers.ensure_dirs()
        st.images.ensure_dirs()
        # Stream the diff into a pipe-less spool: the tar goes through apply_layer (which
        # records tar-split and computes the diffID) straight into the new layer's diff dir.
        top = parent_img.top_chain
        parent_layer = st.layers.get(top) if top else None
        pending = st.layers.begin(parent_layer.cache_id if parent_layer else None)
        try:
            with tempfile.TemporaryFile(dir=st.layout.tmp if os.path.isdir(st.layout.tmp) else None) as spool:
                write_dir_tar(upper, spool.write, overlay_whiteouts=True)
                spool.seek(0)
                import gzip

                with (
                    open(pending.tar_split_path, "wb") as raw,
                    gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
                ):
                    result = apply_layer(spool.read, st.driver.diff_path(pending.cache_id), gz.write)
            empty = result.entries == 0
            if empty:
                st.layers.discard(pending)
                layer = None
            else:
                syncfs(st.root)
                layer = st.layers.publish(pending, result.diff_id, result.size, top)
        except BaseException:
            if os.path.isdir(pending.staging):
                st.layers.discard(pending)
            raise
        container_cfg = dict(cfg.get("Config") or {})
        new_cfg = container_config(apply_changes(container_cfg, changes or []))
        created = now()
        hist: dict[str, Any] = {"created": created}
        if author:
            hist["author"] = author
        cmd = container_cfg.get("Cmd") or []
        if cmd:
            hist["created_by"] = " ".join(cmd)
        if message:
            hist["comment"] = message
        if empty:
            hist["empty_layer"] = True
        pd = parent_img.data
        history = [_history_entry(h) for h in parent_img.history] + [hist]
        diff_ids = list(parent_img.diff_ids) + ([] if layer is None else [layer.diff_id])
        img: dict[str, Any] = {
            "architecture": pd.get("architecture") or "amd64",
            "config": new_cfg,
            "container": cid,
            "container_config": container_config(container_cfg),
            "created": created,
            "docker_version": f"dockyard-{__version__}",
            "history": history,
            "os": pd.get("os") or "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        if author:
            img["author"] = author
        if pd.get("variant"):
            img["variant"] = pd["variant"]
        if pd.get("os.version"):
            img["os.version"] = pd["os.version"]
        if pd.get("os.features"):
            img["os.features"] = pd["os.features"]
        config = ImageConfig(gojson.marshal_image_config(img))
        new_id = st.images.create(config)
        fsync_dir(st.layout.imagedb_content)
        st.images.set_parent(new_id, image_id)
        if ref is not None:
            st.refs.add(ref, new_id)
            st.images.set_last_updated(new_id, gojson.format_rfc3339nano(gojson.now_ns()))
    return new_id


def _history_entry(h: dict[str, Any]) -> dict[str, Any]:
    """A history entry as Go re-marshals image.History (field order, omitempty)."""
    out: dict[str, Any] = {}
    if h.get("created"):
        try:
            out["created"] = gojson.format_rfc3339nano(gojson.parse_rfc3339(str(h["created"])))
        except ValueError:
            out["created"] = gojson.ZERO_TIME
    else:
        out["created"] = gojson.ZERO_TIME
    for k in ("author", "created_by", "comment"):
        if h.get(k):
            out[k] = h[k]
    if h.get("empty_layer"):
        out["empty_layer"] = True
    return out


# ----------------------------------------------------------------------------- cp
def copy_from(mgr: Containers, cid: str, src: str, write: Callable[[bytes | memoryview], Any]) -> None:
    """Tar of ``src`` (a path in the container) -- what ``docker cp CONTAINER:SRC -`` streams."""
    from dockyard.archive.export import write_dir_tar

    with _rootfs(mgr, cid) as root:
        rel = os.path.normpath("/" + src).lstrip("/")
        with RootDir(root) as rd:
            parent, _, _base = rel.rpartition("/")
            rd.dirfd(parent.encode())  # refuses symlinks on the way
        full = os.path.join(root, rel)
        tw_root = os.path.dirname(full) if rel else root
        name = os.path.basename(full) if rel else "."
        import stat as _stat

        st = os.lstat(full)
        if _stat.S_ISDIR(st.st_mode):
            buf_names = name

            def skip(n: str) -> bool:
                return not (n == buf_names or n.startswith(buf_names + "/"))

            write_dir_tar(tw_root, write, skip=skip)
        else:
            write_dir_tar(tw_root, write, skip=lambda n: n != name)


def copy_to(mgr: Containers, cid: str, host_src: str, dest: str) -> None:
    """Copy a host file or directory into the container (``docker cp SRC CONTAINER:DEST``).

    Written through the mounted rootfs fd-relative, never following a symlink of the container;
    new files belong to root, as docker cp does without ``-a``.
    """
    import shutil
    import stat as _stat

    if not os.path.exists(host_src):
        raise NotFound(f"no such file or directory: {host_src}")
    with _rootfs(mgr, cid) as root:
        dest_rel = os.path.normpath("/" + dest).lstrip("/")
        with RootDir(root) as rd:
            try:
                rd.dirfd(dest_rel.encode())
                target = (dest_rel + "/" if dest_rel else "") + os.path.basename(os.path.normpath(host_src))
            except FileNotFoundError:
                target = dest_rel
            except OSError:
                target = dest_rel

            def put_file(src: str, rel: str) -> None:
                parent, _, base = rel.rpartition("/")
                pfd = rd.dirfd(parent.encode())
                try:
                    if not _stat.S_ISDIR(os.lstat(base, dir_fd=pfd).st_mode):
                        os.unlink(base, dir_fd=pfd)
                except FileNotFoundError:
                    pass
                st = os.lstat(src)
                if _stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(src), base, dir_fd=pfd)
                    return
                fd = os.open(
                    base,
                    os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                    _stat.S_IMODE(st.st_mode),
                    dir_fd=pfd,
                )
                with open(src, "rb") as f, os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(f, out, 1 << 20)
                    os.fchmod(out.fileno(), _stat.S_IMODE(st.st_mode))

            def put_dir(rel: str, mode: int) -> None:
                parent, _, base = rel.rpartition("/")
                pfd = rd.dirfd(parent.encode())
                try:
                    os.mkdir(base, mode, dir_fd=pfd)
                except FileExistsError:
                    pass

            if os.path.isdir(host_src) and not os.path.islink(host_src):
                for dirpath, dirnames, filenames in os.walk(host_src):
                    relbase = os.path.relpath(dirpath, host_src)
                    rel_dir = target if relbase == "." else f"{target}/{relbase}"
                    put_dir(rel_dir, _stat.S_IMODE(os.stat(dirpath).st_mode))
                    for fn in filenames:
                        put_file(os.path.join(dirpath, fn), f"{rel_dir}/{fn}")
                    for dn in list(dirnames):
                        if os.path.islink(os.path.join(dirpath, dn)):
                            put_file(os.path.join(dirpath, dn), f"{rel_dir}/{dn}")
                            dirnames.remove(dn)
            else:
                put_file(host_src, target)


__all__ = ["DockyardError", "InvalidInput", "remove", "run", "start", "wait"]
