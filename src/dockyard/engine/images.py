"""Image operations with docker's rules: list, inspect, history, tag, remove, explain."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from dockyard import gojson
from dockyard.digest import hex_of, short_id
from dockyard.errors import Conflict, DockyardError, InvalidInput, NotFound
from dockyard.image.config import ImageConfig
from dockyard.image.container_config import container_config
from dockyard.image.reference import Reference, parse_reference
from dockyard.store import Store
from dockyard.store.layers import Layer


# ----------------------------------------------------------------------------- listing
@dataclass
class ImageSummary:
    id: str
    config: ImageConfig
    repo_tags: list[str]
    repo_digests: list[str]
    size: int
    created_ns: int
    parent: str
    refs: list[Reference] = field(default_factory=list)


def image_size(store: Store, image_id: str) -> int:
    return sum(layer.size for layer in store.image_layers(image_id))


def _created_ns(cfg: ImageConfig) -> int:
    try:
        return gojson.parse_rfc3339(cfg.created)
    except ValueError:
        return 0


def references_by_image(store: Store) -> dict[str, list[Reference]]:
    out: dict[str, list[Reference]] = {}
    for ref, image_id in store.refs.all():
        out.setdefault(image_id, []).append(ref)
    return out


def list_images(store: Store, *, all: bool = False) -> list[ImageSummary]:
    """Docker's image list: dangling intermediates (with children) only with ``all``."""
    refs = references_by_image(store)
    parents = store.images.all_parents()
    has_children = set(parents.values())
    out = []
    for image_id in store.images.ids():
        try:
            cfg = store.images.get(image_id)
            size = image_size(store, image_id)
        except DockyardError:
            continue  # Docker skips images whose layers are missing
        r = refs.get(image_id, [])
        tags = sorted(x.familiar_string() for x in r if x.tag)
        digests = sorted(x.familiar_string() for x in r if x.digest)
        if not r and not all and image_id in has_children:
            continue
        out.append(
            ImageSummary(image_id, cfg, tags, digests, size, _created_ns(cfg), parents.get(image_id, ""), r)
        )
    out.sort(key=lambda s: -s.created_ns)
    return out


# ----------------------------------------------------------------------------- inspect
def graphdriver_data(store: Store, layer: Layer | None) -> dict[str, str]:
    if layer is None:
        return {}
    d = store.driver.dir(layer.cache_id)
    data: dict[str, str] = {}
    lower = store.driver.lower_of(layer.cache_id)
    if lower:
        paths = []
        for item in lower.split(":"):
            link = os.path.join(store.layout.overlay2, item)
            try:
                target = os.readlink(link)
            except OSError:
                continue
            paths.append(os.path.normpath(os.path.join(store.layout.overlay2_links, target)))
        data["LowerDir"] = ":".join(paths)
    data["MergedDir"] = os.path.join(d, "merged")
    data["UpperDir"] = os.path.join(d, "diff")
    data["WorkDir"] = os.path.join(d, "work")
    return data


def inspect_image(store: Store, image_id: str) -> dict[str, Any]:
    cfg = store.images.get(image_id)
    d = cfg.data
    refs = store.refs.references_to(image_id)
    layers = store.image_layers(image_id)
    size = sum(x.size for x in layers)
    last_tag = store.images.get_last_updated(image_id)
    out: dict[str, Any] = {
        "Id": image_id,
        "RepoTags": sorted(r.familiar_string() for r in refs if r.tag),
        "RepoDigests": sorted(r.familiar_string() for r in refs if r.digest),
        "Parent": store.images.get_parent(image_id) or "",
        "Comment": d.get("comment", "") or "",
        "Created": _go_time(cfg.created),
        "Container": d.get("container", "") or "",
        "ContainerConfig": container_config(d.get("container_config") or {}),
        "DockerVersion": d.get("docker_version", "") or "",
        "Author": d.get("author", "") or "",
        "Config": container_config(d.get("config")),
        "Architecture": cfg.architecture,
    }
    if cfg.variant:
        out["Variant"] = cfg.variant
    out["Os"] = cfg.os
    if d.get("os.version"):
        out["OsVersion"] = d["os.version"]
    out["Size"] = size
    out["VirtualSize"] = size
    out["GraphDriver"] = {"Data": graphdriver_data(store, layers[-1] if layers else None), "Name": "overlay2"}
    out["RootFS"] = {"Type": "layers"}
    if cfg.diff_ids:
        out["RootFS"]["Layers"] = cfg.diff_ids
    out["Metadata"] = {"LastTagTime": last_tag or gojson.ZERO_TIME}
    return out


def _go_time(s: str) -> str:
    """A config time re-formatted the way Go's time marshals it (RFC3339Nano)."""
    try:
        return gojson.format_rfc3339nano(gojson.parse_rfc3339(s))
    except ValueError:
        return gojson.ZERO_TIME


# ----------------------------------------------------------------------------- history
@dataclass
class HistoryItem:
    id: str
    created: int
    created_by: str
    comment: str
    size: int
    tags: list[str] | None


def history(store: Store, image_id: str) -> list[HistoryItem]:
    cfg = store.images.get(image_id)
    diff_ids = cfg.diff_ids
    chains = cfg.chain_ids
    items: list[HistoryItem] = []
    n = 0
    for h in cfg.history:
        size = 0
        if not h.get("empty_layer"):
            if n >= len(diff_ids):
                raise InvalidInput("too many non-empty layers in History section")
            size = store.layers.get(chains[n]).size
            n += 1
        try:
            created = gojson.parse_rfc3339(str(h.get("created", ""))) // 1_000_000_000
        except ValueError:
            created = -62135596800  # Go's zero time
        items.insert(
            0,
            HistoryItem(
                "<missing>",
                created,
                str(h.get("created_by", "") or ""),
                str(h.get("comment", "") or ""),
                size,
                None,
            ),
        )
    cur: str | None = image_id
    for item in items:
        if cur is None:
            break
        item.id = cur
        tags = sorted(r.familiar_string() for r in store.refs.references_to(cur) if r.tag)
        item.tags = tags or None
        cur = store.images.get_parent(cur)
        if cur is not None and not store.images.exists(cur):
            break
    return items


# ----------------------------------------------------------------------------- tag
def tag_image(store: Store, source: str, target: str) -> None:
    with store.write_lock():
        image_id = store.resolve_image(source)
        ref = parse_reference(target)
        if ref.digest is not None:
            raise InvalidInput("refusing to create a tag with a digest reference")
        ref = ref.tagged_or_latest()
        store.refs.add(ref, image_id)
        store.images.set_last_updated(image_id, gojson.format_rfc3339nano(gojson.now_ns()))


# ----------------------------------------------------------------------------- remove
def _conflict(image_id: str, hard: bool, message: str) -> Conflict:
    force = "cannot be forced" if hard else "must be forced"
    return Conflict(f"conflict: unable to delete {short_id(image_id)} ({force}) - {message}")


class _Deleter:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.records: list[tuple[str, str]] = []

    def refs_of(self, image_id: str) -> list[Reference]:
        return self.store.refs.references_to(image_id)

    def check(
        self, image_id: str, *, children: bool, running: bool, refs: bool, stopped: bool
    ) -> Conflict | None:
        st = self.store
        if children and st.images.children(image_id):
            return _conflict(image_id, True, "image has dependent child images")
        users = [c for c in st.containers.all() if c.image_id == image_id]
        if running:
            for c in users:
                if c.running:
                    return _conflict(
                        image_id, True, f"image is being used by running container {short_id(c.id)}"
                    )
        if refs and self.refs_of(image_id):
            return _conflict(image_id, False, "image is referenced in multiple repositories")
        if stopped:
            for c in users:
                if not c.running:
                    return _conflict(
                        image_id, False, f"image is being used by stopped container {short_id(c.id)}"
                    )
        return None

    def untag_all(self, refs: list[Reference]) -> None:
        if not refs:
            return
        self.store.refs.delete_many(refs)
        for ref in refs:
            self.records.append(("Untagged", ref.familiar_string()))

    def delete_image(self, name: str, force: bool, prune: bool) -> None:
        st = self.store
        image_id = st.resolve_image(name)
        repo_refs = self.refs_of(image_id)
        removed_repo_ref = False
        if not _is_id_prefix(image_id, name):
            if not force and _is_single_reference(repo_refs):
                user = next((c for c in st.containers.all() if c.image_id == image_id), None)
                if user is not None:
                    # untagging would leave the image dangling under a container: docker refuses
                    raise Conflict(
                        f'conflict: unable to remove repository reference "{name}" (must force) - container '
                        f"{short_id(user.id)} is using its referenced image {short_id(image_id)}"
                    )
            ref = parse_reference(name).tagged_or_latest()
            if ref not in repo_refs:
                ref = next((r for r in repo_refs if r.store_key() == ref.store_key()), ref)
            gone = [ref]
            repo_refs = [r for r in repo_refs if r.store_key() != ref.store_key()]
            if ref.digest is None and not any(r.digest is None and r.name == ref.name for r in repo_refs):
                # only digest references of that repository remain: they go too
                gone += [r for r in repo_refs if r.digest is not None and r.name == ref.name]
                repo_refs = [r for r in repo_refs if not (r.digest is not None and r.name == ref.name)]
            self.untag_all(gone)  # one rewrite of repositories.json: a crash leaves all or none
            if repo_refs:
                return
            removed_repo_ref = True
        else:
            if _is_single_reference(repo_refs):
                c = self.check(image_id, children=True, running=True, refs=False, stopped=not force)
                if c:
                    raise c
                self.untag_all(repo_refs)
        self.helper(image_id, force=force, prune=prune, quiet=removed_repo_ref)

    def helper(self, image_id: str, *, force: bool, prune: bool, quiet: bool) -> None:
        st = self.store
        c = self.check(image_id, children=True, running=True, refs=not force, stopped=not force)
        if c is not None:
            if quiet and (not self._dangling(image_id) or "container" in str(c)):
                return
            raise c
        parent = st.images.get_parent(image_id)
        self.untag_all(self.refs_of(image_id))
        top = st.images.get(image_id).top_chain
        st.images.delete(image_id)
        self.records.append(("Deleted", image_id))
        if top:
            for chain in st.release_layers(top):
                self.records.append(("Deleted", chain))
        if prune and parent and st.images.exists(parent):
            self.helper(parent, force=False, prune=True, quiet=True)

    def _dangling(self, image_id: str) -> bool:
        return not self.refs_of(image_id) and not self.store.images.children(image_id)


def _is_id_prefix(image_id: str, s: str) -> bool:
    return image_id.startswith(s) or hex_of(image_id).startswith(s)


def _is_single_reference(refs: list[Reference]) -> bool:
    if len(refs) <= 1:
        return len(refs) == 1
    single: Reference | None = None
    canonical: set[str] = set()
    for r in refs:
        if r.digest is not None:
            canonical.add(r.name)
        elif single is None:
            single = r
        else:
            return False
    if single is None:
        single = refs[0]
    return len(canonical) == 1 and single.name in canonical


def remove_images(
    store: Store, names: list[str], *, force: bool = False, prune: bool = True
) -> tuple[list[tuple[str, str]], list[str]]:
    """``docker rmi``: records of what was untagged/deleted, and error messages per failed name."""
    records: list[tuple[str, str]] = []
    errors: list[str] = []
    with store.write_lock():
        for name in names:
            d = _Deleter(store)
            try:
                d.delete_image(name, force, prune)
            except NotFound as e:
                errors.append(str(e))
            except DockyardError as e:
                errors.append(str(e))
            records.extend(d.records)
    return records, errors


# ----------------------------------------------------------------------------- explain
def explain(store: Store, image_id: str) -> dict[str, Any]:
    """The digest -> diffID -> chainID -> cache-id relationship of one image, with paths."""
    cfg = store.images.get(image_id)
    lay = store.layout
    from dockyard.store.distribution import DistributionStore

    dist = DistributionStore(lay)
    layers_out = []
    parent_chain: str | None = None
    for i, (diff_id, chain) in enumerate(zip(cfg.diff_ids, cfg.chain_ids, strict=True)):
        entry: dict[str, Any] = {"index": i, "diff_id": diff_id, "chain_id": chain}
        if parent_chain is None:
            entry["chain_id_formula"] = "chainID[0] = diffID[0]"
        else:
            entry["chain_id_formula"] = f'sha256("{parent_chain} {diff_id}")'
        entry["parent_chain_id"] = parent_chain
        entry["blob_digests"] = dist.digests_for(diff_id)
        try:
            layer = store.layers.get(chain)
        except DockyardError as e:
            entry["error"] = str(e)
            layers_out.append(entry)
            parent_chain = chain
            continue
        entry["layerdb_dir"] = lay.layer_dir(chain)
        entry["cache_id"] = layer.cache_id
        entry["overlay2_dir"] = store.driver.dir(layer.cache_id)
        try:
            link = store.driver.link_of(layer.cache_id)
            entry["link"] = link
            entry["link_path"] = lay.link_path(link)
            entry["link_target"] = os.readlink(lay.link_path(link))
        except OSError as e:
            entry["link_error"] = str(e)
        entry["lower"] = store.driver.lower_of(layer.cache_id)
        entry["size"] = layer.size
        entry["entries"] = _count_entries(store.layers.tar_split_path(chain))
        layers_out.append(entry)
        parent_chain = chain
    refs = store.refs.references_to(image_id)
    return {
        "id": image_id,
        "config_path": lay.image_config(image_id),
        "config_sha256": cfg.id,
        "id_formula": "image ID = sha256(config bytes)",
        "repo_tags": sorted(r.familiar_string() for r in refs if r.tag),
        "repo_digests": sorted(r.familiar_string() for r in refs if r.digest),
        "parent": store.images.get_parent(image_id),
        "platform": cfg.platform(),
        "layers": layers_out,
        "size": sum(x.get("size", 0) for x in layers_out),
    }


def _count_entries(tar_split: str) -> int | None:
    import gzip

    try:
        n = 0
        with gzip.open(tar_split, "rb") as f:
            for line in f:
                if line.startswith(b'{"type":1'):
                    n += 1
        return n
    except OSError:
        return None
