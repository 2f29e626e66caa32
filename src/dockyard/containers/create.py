"""Container creation in Docker's order, each step staged: the init layer, the read-write
layer, the mount record, then the container dir (see :mod:`dockyard.containers.lifecycle`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

from dockyard.containers import hostflags, initlayer, model
from dockyard.containers.hostflags import ConfineFlags
from dockyard.containers.names import random_name
from dockyard.containers.reaper import ContainerReaper
from dockyard.containers.records import NAME_RE, now
from dockyard.digest import random_id
from dockyard.errors import Conflict, InvalidInput, NotFound
from dockyard.faults import boundary
from dockyard.store.atomic import atomic_write, fsync_dir, makedirs, write_plain


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
    confine: ConfineFlags = field(default_factory=ConfineFlags)  # --cap-add, --memory, ... (hostflags)


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


class ContainerCreator(ContainerReaper):
    """``create`` (it first reaps, as every container command does)."""

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
        # confinement flags -> hostconfig fields as dockerd records them; validated before anything is made
        confine_hc, confine_rec, tmpfs_points = hostflags.host_fields(opts.confine)
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
            mounts.update(tmpfs_points)
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
            hc = hostflags.order({**hc, **confine_hc})
            record.update(confine_rec)
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
