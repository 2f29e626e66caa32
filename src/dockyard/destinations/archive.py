"""Archives as destinations: ``docker save`` tars and OCI image layout tars.

The docker-save form is Docker 20.10's legacy layout (``<v1id>/{VERSION,json,layer.tar}``,
``<image id>.json``, ``manifest.json``, ``repositories``), entries in lexical order, a layer
repeated within the save written once and linked. The OCI form is an image layout with
uncompressed layers, the config bytes unchanged (so the image ID is too) and an index whose
descriptors carry ``org.opencontainers.image.ref.name`` (the tag) and
``io.containerd.image.name`` (the full reference).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from dockyard import gojson
from dockyard.archive.tarwriter import TarWriter
from dockyard.image.v1 import v1_ids_and_json
from dockyard.store import Store
from dockyard.store.layertar import layer_tar_size, write_layer_tar
from dockyard.store.selection import SelectedImage

ProgressFn = Callable[[str, int, int | None], None]

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _created_s(store: Store, image_id: str) -> int:
    try:
        return gojson.parse_rfc3339(store.images.get(image_id).created) // 1_000_000_000
    except ValueError:
        return 0


def _stream_layer(
    store: Store, tw: TarWriter, name: str, layer: Any, mtime: int, progress: ProgressFn | None
) -> int:
    size = layer_tar_size(store.layers.tar_split_path(layer.chain_id))
    tw.begin_file(name, size, mtime=mtime)
    done = [0]

    def write(b: bytes | memoryview) -> None:
        tw.write_data(b)
        done[0] += len(b)
        if progress:
            progress(layer.diff_id, done[0], size)

    n = write_layer_tar(store, layer, write)
    if n != size:
        raise ValueError(f"layer {layer.chain_id}: {n} bytes reassembled, {size} expected")
    tw.pad()
    return size


def write_docker_save(
    store: Store,
    images: list[SelectedImage],
    write: Callable[[bytes | memoryview], Any],
    progress: ProgressFn | None = None,
) -> None:
    # Plan every entry first: Docker's archiver writes a temp dir in lexical order.
    entries: dict[str, tuple[str, Any]] = {}
    manifest: list[dict[str, Any]] = []
    repos: dict[str, dict[str, str]] = {}
    diff_paths: dict[str, str] = {}
    ids = {im.image_id for im in images}
    now = int(time.time())
    for im in images:
        cfg = store.images.get(im.image_id)
        created = _created_s(store, im.image_id)
        layers = store.image_layers(im.image_id)
        v1 = v1_ids_and_json(cfg)
        layer_paths = []
        for (v1id, body), layer in zip(v1, layers, strict=True):
            entries[v1id] = ("dir", created)
            entries[f"{v1id}/VERSION"] = ("bytes", (b"1.0", created))
            entries[f"{v1id}/json"] = ("bytes", (body, created))
            path = f"{v1id}/layer.tar"
            if layer.diff_id in diff_paths and diff_paths[layer.diff_id] != path:
                entries[path] = ("symlink", (f"../{diff_paths[layer.diff_id]}", now))
                entries[v1id] = ("dir", now)
            elif path not in entries:
                entries[path] = ("layer", (layer, created))
                diff_paths[layer.diff_id] = path
            layer_paths.append(path)
        hexid = im.image_id[7:]
        entries[f"{hexid}.json"] = ("bytes", (cfg.raw, created))
        item: dict[str, Any] = {
            "Config": f"{hexid}.json",
            "RepoTags": [r.familiar_string() for r in im.refs] or None,
            "Layers": layer_paths,
        }
        parent = store.images.get_parent(im.image_id)
        if parent and parent in ids:
            item["Parent"] = parent
        manifest.append(item)
        if v1:
            for r in im.refs:
                repos.setdefault(r.familiar_name, {})[r.tag or "latest"] = v1[-1][0]
    entries["manifest.json"] = ("bytes", ((gojson.marshal(manifest) + "\n").encode(), 0))
    if repos:
        entries["repositories"] = ("bytes", ((gojson.marshal(repos, sort_all=True) + "\n").encode(), 0))

    tw = TarWriter(write, uname="root", gname="root")
    for name in sorted(entries):
        kind, val = entries[name]
        if kind == "dir":
            tw.add_dir(name, mtime=val)
        elif kind == "bytes":
            tw.add_bytes(name, val[0], mtime=val[1])
        elif kind == "symlink":
            tw.add_symlink(name, val[0], mtime=val[1])
        else:
            _stream_layer(store, tw, name, val[0], val[1], progress)
    tw.close()


def write_oci_archive(
    store: Store,
    images: list[SelectedImage],
    write: Callable[[bytes | memoryview], Any],
    progress: ProgressFn | None = None,
) -> None:
    tw = TarWriter(write, uname="root", gname="root")
    # ref.name is the tag (as Docker 25+ writes it) unless two saved images share a tag; then the
    # whole reference, so tools that select by ref.name (umoci, skopeo) are never ambiguous.
    tag_count: dict[str, int] = {}
    for im in images:
        for r in im.refs:
            tag_count[r.tag or "latest"] = tag_count.get(r.tag or "latest", 0) + 1
    ref_names = {
        r: (r.tag or "latest") if tag_count[r.tag or "latest"] == 1 else r.familiar_string()
        for im in images
        for r in im.refs
    }
    blobs_written: set[str] = set()
    index_manifests: list[dict[str, Any]] = []
    tw.add_bytes("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
    tw.add_dir("blobs")
    tw.add_dir("blobs/sha256")
    for im in images:
        cfg = store.images.get(im.image_id)
        layers = store.image_layers(im.image_id)
        layer_descs = []
        for layer in layers:
            name = "blobs/sha256/" + layer.diff_id[7:]
            if layer.diff_id not in blobs_written:
                size = _stream_layer(store, tw, name, layer, 0, progress)
                blobs_written.add(layer.diff_id)
            else:
                size = layer_tar_size(store.layers.tar_split_path(layer.chain_id))
            layer_descs.append({"mediaType": MT_OCI_LAYER, "digest": layer.diff_id, "size": size})
        if im.image_id not in blobs_written:
            tw.add_bytes("blobs/sha256/" + im.image_id[7:], cfg.raw)
            blobs_written.add(im.image_id)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": im.image_id, "size": len(cfg.raw)},
            "layers": layer_descs,
        }
        mraw = gojson.marshal(manifest).encode()
        mdigest = "sha256:" + hashlib.sha256(mraw).hexdigest()
        if mdigest not in blobs_written:
            tw.add_bytes("blobs/sha256/" + mdigest[7:], mraw)
            blobs_written.add(mdigest)
        desc: dict[str, Any] = {"mediaType": MT_OCI_MANIFEST, "digest": mdigest, "size": len(mraw)}
        platform = {"architecture": cfg.architecture or "amd64", "os": cfg.os or "linux"}
        if cfg.variant:
            platform["variant"] = cfg.variant
        if not im.refs:
            index_manifests.append({**desc, "platform": platform})
        for r in im.refs:
            index_manifests.append(
                {
                    **desc,
                    "annotations": {
                        "io.containerd.image.name": str(r),
                        "org.opencontainers.image.ref.name": ref_names[r],
                    },
                    "platform": platform,
                }
            )
    index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": index_manifests}
    tw.add_bytes("index.json", (gojson.marshal(index) + "\n").encode())
    tw.close()
