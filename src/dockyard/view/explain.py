"""``dockyard explain CONTAINER``: the chain from a container to its files, read only.

layerdb/mounts/<id>/{mount-id,init-id,parent} -> the RW and ``-init`` layer dirs with their ``l/``
links -> the overlay mount options dockerd passes to the kernel (``lowerdir=...,upperdir=...,
workdir=...``, as /proc/mounts shows them while the container runs) -> each lower link resolved to
its image layer (chainID, diffID, created_by) -> the RW layer's size and change count ->
``containers/<id>/`` files -> volumes and binds.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from dockyard.errors import DockyardError
from dockyard.store import Store
from dockyard.store.containers import read_mount_record
from dockyard.view.merged import LayerRoot, MergedView, is_whiteout


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return None


def _layer_dir(store: Store, cache_id: str) -> dict[str, Any]:
    d = store.layout.driver_dir(cache_id)
    link = _read(os.path.join(d, "link"))
    out: dict[str, Any] = {"cache_id": cache_id, "dir": d, "diff": store.layout.driver_diff(cache_id), "link": link}
    if link:
        lp = store.layout.link_path(link)
        out["link_path"] = lp
        try:
            out["link_target"] = os.readlink(lp)
        except OSError as e:
            out["link_error"] = e.strerror
    lower = _read(os.path.join(d, "lower"))
    if lower is not None:
        out["lower"] = lower
    out["exists"] = os.path.isdir(out["diff"])
    return out


def _rw_changes(diff: str) -> tuple[int, int]:
    """(size, change count) of a RW layer: st_size of non-dirs (each inode once), and the entries
    (whiteouts included) below its root."""
    view = MergedView([LayerRoot("rw", diff)])
    size, count, seen = 0, 0, set()
    try:
        for node, entering in view.walk():
            if not entering or node is view.root:
                continue
            count += 1
            st = node.st
            if stat.S_ISDIR(st.st_mode) or is_whiteout(st) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            size += st.st_size
    finally:
        view.close()
    return size, count


def explain_container(store: Store, cid: str) -> dict[str, Any]:
    rec = store.containers.get(cid)
    if rec is None:
        raise DockyardError(f"No such container: {cid}")
    try:
        mount = read_mount_record(store.layout, cid)
    except ValueError as e:
        raise DockyardError(f"container {cid[:12]}: {e}") from None
    info: dict[str, Any] = {
        "id": cid,
        "name": rec.name.lstrip("/"),
        "image": rec.image_id,
        "running": rec.running,
        "layerdb_mounts_dir": store.layout.mount_dir(cid),
        "mount_id": mount.mount_id,
        "init_id": mount.init_id,
        "parent": mount.parent,
    }
    rw = _layer_dir(store, mount.mount_id)
    info["rw_layer"] = rw
    info["init_layer"] = _layer_dir(store, mount.init_id) if mount.init_id else None
    try:
        info["mount_options"] = store.driver.mount_options(mount.mount_id).removeprefix("index=off,")
    except Exception as e:  # a damaged layer dir: say what, go on
        info["mount_options_error"] = str(e)
    # each lower link -> its layer
    by_link: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    chain = []
    if mount.parent:
        try:
            chain = store.layers.chain(mount.parent)
        except DockyardError as e:
            info["parent_error"] = str(e)
        try:
            cfg = store.image(rec.image_id)
            history = [h for h in cfg.history if not h.get("empty_layer")]
        except DockyardError:
            history = []
    for i, layer in enumerate(chain):
        link = _read(os.path.join(store.layout.driver_dir(layer.cache_id), "link"))
        created_by = str(history[i].get("created_by") or "") if i < len(history) else ""
        by_link[f"l/{link}"] = {
            "index": i,
            "chain_id": layer.chain_id,
            "diff_id": layer.diff_id,
            "cache_id": layer.cache_id,
            "created_by": created_by,
        }
    lowers = []
    for item in (rw.get("lower") or "").split(":") if rw.get("lower") else []:
        entry: dict[str, Any] = {"link": item}
        if item in by_link:
            entry.update(by_link[item])
        elif info["init_layer"] and item == f"l/{info['init_layer'].get('link')}":
            entry["layer"] = "init"
        else:
            entry["error"] = "not a layer of this container's image"
        lowers.append(entry)
    info["lowers"] = lowers
    if rw["exists"]:
        info["rw_size"], info["rw_changes"] = _rw_changes(rw["diff"])
    cdir = store.layout.container_dir(cid)
    files = []
    for dp, dn, fn in os.walk(cdir):
        dn.sort()
        for n in sorted(fn):
            p = os.path.join(dp, n)
            try:
                files.append({"path": os.path.relpath(p, cdir), "size": os.lstat(p).st_size})
            except OSError:
                continue
    info["container_dir"] = cdir
    info["container_files"] = files
    mps = rec.config.get("MountPoints") or {}
    info["mounts"] = [
        {
            "destination": dest,
            "type": m.get("Type") or ("volume" if m.get("Name") else "bind"),
            "name": m.get("Name") or "",
            "source": m.get("Source") or "",
            "rw": bool(m.get("RW")),
        }
        for dest, m in sorted(mps.items())
    ]
    return info


def render(info: dict[str, Any]) -> list[str]:
    out = [f"Container {info['id']} ({info['name']})", f"  image:       {info['image']}"]
    out.append(f"  running:     {'yes' if info['running'] else 'no'}")
    out.append(f"  layerdb:     {info['layerdb_mounts_dir']}/{{mount-id,init-id,parent}}")
    out.append(f"  mount-id:    {info['mount_id']}")
    out.append(f"  init-id:     {info['init_id']}")
    out.append(f"  parent:      {info['parent']}")
    for key, title in (("rw_layer", "RW layer"), ("init_layer", "init layer")):
        layer = info.get(key)
        if not layer:
            continue
        out.append(f"{title}")
        out.append(f"  dir:         {layer['dir']}{'' if layer['exists'] else '   PROBLEM: diff/ is missing'}")
        if layer.get("link"):
            tgt = layer.get("link_target") or f"PROBLEM: {layer.get('link_error')}"
            out.append(f"  short link:  {layer['link_path']} -> {tgt}")
    if "mount_options" in info:
        out.append("Overlay mount (as in /proc/mounts while it runs)")
        out.append(f"  {info['mount_options']}")
    else:
        out.append(f"Overlay mount: PROBLEM: {info.get('mount_options_error')}")
    out.append("Lower layers (top first)")
    for lw in info["lowers"]:
        if "chain_id" in lw:
            out.append(f"  {lw['link']}  layer {lw['index']}  chainID {lw['chain_id']}")
            out.append(f"      diffID {lw['diff_id']}")
            if lw["created_by"]:
                out.append(f"      created_by {lw['created_by'][:200]}")
        elif lw.get("layer") == "init":
            out.append(f"  {lw['link']}  the -init layer")
        else:
            out.append(f"  {lw['link']}  PROBLEM: {lw['error']}")
    if "rw_size" in info:
        out.append(f"RW layer: {info['rw_size']} bytes, {info['rw_changes']} entries changed")
    out.append(f"Container dir {info['container_dir']}")
    for f in info["container_files"]:
        out.append(f"  {f['path']}  {f['size']}")
    if info["mounts"]:
        out.append("Mounts")
        for m in info["mounts"]:
            src = m["name"] or m["source"]
            out.append(f"  {m['type']:<7} {src} -> {m['destination']} ({'rw' if m['rw'] else 'ro'})")
    return out
