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

from dockyard.archive.fsutil import remove_tree
from dockyard.containers.create import ContainerCreator, CreateOptions, parse_bind
from dockyard.containers.monitor import DEFAULT_HOSTS, ContainerRunner, StartError
from dockyard.containers.reaper import _signal_number
from dockyard.containers.records import NAME_RE, now


class Containers(ContainerCreator, ContainerRunner):
    """The containers of one store: records (:mod:`~dockyard.containers.records`), create
    (:mod:`~dockyard.containers.create`), start and monitor (:mod:`~dockyard.containers.monitor`),
    reap, stop and kill (:mod:`~dockyard.containers.reaper`)."""


__all__ = [
    "DEFAULT_HOSTS",
    "NAME_RE",
    "Containers",
    "CreateOptions",
    "StartError",
    "_signal_number",
    "now",
    "parse_bind",
    "remove_tree",
]
