# mypy: disable-error-code="misc"
# (repair actions bind loop variables with lambda defaults, which mypy cannot type)
"""fsck's store checks: containers (mount records, container dirs, their layers), images
(imagedb), references (repositories.json, distribution/), orphans, and the damage summary."""


from __future__ import annotations

import json
import os
import re

from dockyard.digest import is_digest, is_hex64
from dockyard.engine.health.findings import _LINK_RE, ERROR, WARNING, _read
from dockyard.engine.health.layerchecks import LayerChecks
from dockyard.engine.health.repairs import (
    _drop_ref,
    _listdir,
    _release,
    _rmtree,
    _unmount,
)
from dockyard.errors import DockyardError
from dockyard.image.config import ImageConfig
from dockyard.image.reference import InvalidReference, parse_reference
from dockyard.sources.registry import PARTIAL_DIR
from dockyard.store import Store


class StoreChecks(LayerChecks):
    """Checks of containers, images, references and orphans."""

    # ------------------------------------------------------------------ containers
    def check_containers(self) -> None:
        lay = self.store.layout
        mounts = set(_listdir(lay.layerdb_mounts))
        containers = {c for c in _listdir(lay.containers) if is_hex64(c)}
        removing = {c[:64] for c in _listdir(lay.containers) if c.endswith("-removing") and is_hex64(c[:64])}
        for name in _listdir(lay.containers):
            if name.startswith(".tmp-") and is_hex64(name[5:]):
                removing.add(name[5:])
                p = os.path.join(lay.containers, name)
                self.f(
                    WARNING,
                    "container-create-leftover",
                    p,
                    f"leftover of an interrupted creation of container {name[5:17]}",
                    "remove it and the layers made for it",
                    lambda c=name[5:], p=p: self._drop_staged_container(c, p),
                )
        for cid in sorted(removing):
            p = lay.container_dir(cid) + "-removing"
            self.f(
                WARNING,
                "container-removal-leftover",
                p,
                f"leftover of an interrupted removal of container {cid[:12]}",
                "finish the removal",
                lambda c=cid: self._finish_container_removal(c),
            )
        for cid in sorted(mounts):
            md = lay.mount_dir(cid)
            if cid in removing:
                # the rest of an interrupted removal: finishing the removal repairs it
                for key in ("mount-id", "init-id"):
                    v = (_read(os.path.join(md, key)) or b"").decode("utf-8", "replace").strip()
                    if v:
                        self.cache_ids[v] = f"container {cid[:12]} (being removed)"
                continue
            mount_id = (_read(os.path.join(md, "mount-id")) or b"").decode("utf-8", "replace").strip()
            init_id = (_read(os.path.join(md, "init-id")) or b"").decode("utf-8", "replace").strip()
            parent = (_read(os.path.join(md, "parent")) or b"").decode("utf-8", "replace").strip()
            if not is_hex64(mount_id):
                self.f(
                    ERROR,
                    "mount-id-invalid",
                    os.path.join(md, "mount-id"),
                    "mount-id is missing or invalid: dockerd cannot load this container",
                )
            else:
                self.cache_ids[mount_id] = f"container {cid[:12]}"
                if not os.path.isdir(self.store.driver.dir(mount_id)):
                    self.f(
                        ERROR,
                        "rw-layer-missing",
                        self.store.driver.dir(mount_id),
                        f"read-write layer of container {cid[:12]} is missing",
                    )
            if init_id:
                self.cache_ids[init_id] = f"container {cid[:12]} (init)"
                if not os.path.isdir(self.store.driver.dir(init_id)):
                    self.f(
                        ERROR,
                        "init-layer-missing",
                        self.store.driver.dir(init_id),
                        f"init layer of container {cid[:12]} is missing",
                    )
            if parent and (not is_digest(parent) or parent[7:] not in self.layers):
                self.f(
                    ERROR,
                    "mount-parent-missing",
                    os.path.join(md, "parent"),
                    f"container {cid[:12]} sits on missing layer {parent}",
                )
            if cid in removing:
                continue
            if cid not in containers:
                self.f(
                    WARNING,
                    "mount-without-container",
                    md,
                    f"layer mount of a container {cid[:12]} that no longer exists",
                    "remove the mount record and its layers",
                    lambda c=cid: self._drop_mount(c),
                    confirm=True,
                )
        for cid in sorted(containers):
            if cid not in mounts:
                self.f(
                    ERROR,
                    "container-without-mount",
                    lay.container_dir(cid),
                    f"container {cid[:12]} has no layerdb/mounts entry: dockerd will not load it",
                )
            cfg = _read(os.path.join(lay.container_dir(cid), "config.v2.json"))
            if cfg is None:
                self.f(
                    ERROR,
                    "container-config-missing",
                    lay.container_dir(cid),
                    f"container {cid[:12]} has no config.v2.json",
                )
            else:
                try:
                    json.loads(cfg)
                except ValueError:
                    self.f(
                        ERROR,
                        "container-config-invalid",
                        os.path.join(lay.container_dir(cid), "config.v2.json"),
                        f"config.v2.json of container {cid[:12]} is not valid JSON",
                    )

    # ------------------------------------------------------------------ images
    def check_images(self) -> None:
        lay = self.store.layout
        self.image_tops: dict[str, str | None] = {}
        for name in _listdir(lay.imagedb_content):
            p = os.path.join(lay.imagedb_content, name)
            if name.startswith(".tmp-"):
                self.tmp_leftover(p)
                continue
            if not is_hex64(name):
                self.f(WARNING, "stray-entry", p, "not an image config (name is not a sha256 hex digest)")
                continue
            image_id = f"sha256:{name}"
            self.report.images_checked += 1
            raw = _read(p)
            if raw is None:
                continue
            cfg = ImageConfig(raw)
            if cfg.id != image_id:
                self.uncertain_usage = True
                self.f(
                    ERROR,
                    "config-hash-mismatch",
                    p,
                    f"config does not hash to its ID (got {cfg.id}): the image is damaged",
                )
                self.report.damaged_images[image_id] = ["its config file is damaged"]
                self.image_tops[image_id] = None
                continue
            try:
                cfg.validate()
            except DockyardError as e:
                self.uncertain_usage = True
                self.f(ERROR, "config-invalid", p, f"config is not a valid image config: {e}")
                self.report.damaged_images[image_id] = ["its config is invalid"]
                self.image_tops[image_id] = None
                continue
            top = cfg.top_chain
            self.image_tops[image_id] = top
            self.configs[image_id] = cfg
            if top and top[7:] not in self.layers:
                self.f(ERROR, "image-layer-missing", p, f"image needs layer {top}, which does not exist")
                self.report.damaged_images.setdefault(image_id, []).append(f"layer {top} is missing")
        for name in _listdir(lay.imagedb_metadata):
            md = os.path.join(lay.imagedb_metadata, name)
            if not is_hex64(name):
                continue
            image_id = f"sha256:{name}"
            if image_id not in self.image_tops:
                self.f(
                    WARNING,
                    "metadata-orphan",
                    md,
                    "metadata of an image that does not exist",
                    "remove it",
                    lambda md=md: _rmtree(md),
                )
                continue
            for fname in _listdir(md):
                fp = os.path.join(md, fname)
                if fname.startswith(".tmp-"):
                    self.tmp_leftover(fp)
                elif fname == "parent":
                    val = (_read(fp) or b"").decode("utf-8", "replace").strip()
                    if not is_digest(val) or val not in self.image_tops:
                        self.f(
                            WARNING,
                            "parent-image-missing",
                            fp,
                            f"parent image {val[:80]!r} does not exist",
                            "remove the parent link",
                            lambda fp=fp: os.unlink(fp),
                        )

    # ------------------------------------------------------------------ references
    def check_distribution(self) -> None:
        """Interrupted atomic writes leave ``.tmp-*`` files in ``distribution/``."""
        root = self.store.layout.distribution
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                if name.startswith(".tmp-"):
                    self.tmp_leftover(os.path.join(dirpath, name))

    def check_references(self) -> None:
        lay = self.store.layout
        for name in _listdir(lay.image_root):
            if name.startswith(".tmp-"):
                self.tmp_leftover(os.path.join(lay.image_root, name))
        raw = _read(lay.repositories_json)
        if raw is None:
            return
        if not raw.strip():
            self.f(
                ERROR,
                "repositories-invalid",
                lay.repositories_json,
                "repositories.json is empty (truncated): dockerd fails to start",
                "rewrite it as an empty store (the tags it held are lost)",
                lambda: self.store.refs.save({}),
            )
            return
        try:
            obj = json.loads(raw)
        except ValueError as e:
            self.f(
                ERROR,
                "repositories-invalid",
                lay.repositories_json,
                f"repositories.json is not valid JSON ({e}): dockerd fails to start",
                "rebuild it from the references that can be read (others are dropped)",
                lambda: self.store.refs.save({}),
            )
            return
        repos = obj.get("Repositories") if isinstance(obj, dict) else None
        if not isinstance(repos, dict):
            self.f(
                ERROR,
                "repositories-invalid",
                lay.repositories_json,
                "repositories.json has no Repositories map",
                "rewrite it empty",
                lambda: self.store.refs.save({}),
            )
            return
        for repo, refs in repos.items():
            if not isinstance(refs, dict):
                continue
            for key, image_id in refs.items():
                try:
                    parse_reference(key)
                except InvalidReference:
                    self.f(
                        WARNING,
                        "reference-invalid",
                        lay.repositories_json,
                        f"reference {key!r} is not valid",
                        "remove it",
                        lambda r=repo, k=key: _drop_ref(self.store, r, k),
                    )
                    continue
                if image_id not in self.image_tops:
                    self.f(
                        ERROR,
                        "reference-dangling",
                        lay.repositories_json,
                        f"{key} points to image {image_id}, which does not exist",
                        "remove the reference",
                        lambda r=repo, k=key: _drop_ref(self.store, r, k),
                    )

    # ------------------------------------------------------------------ orphans
    def check_orphans(self) -> None:
        lay = self.store.layout
        for p, size in partial_pull_blobs(self.store):
            self.partial_pull_blob(p, size)
        drv = self.store.driver
        referenced: set[str] = set(self.cache_ids)
        # staging dirs name their driver dirs too
        for name in _listdir(lay.layerdb_tmp) + [
            n for n in _listdir(lay.layerdb_sha256) if n.endswith("-removing")
        ]:
            base = lay.layerdb_tmp if name.startswith("write-set-") else lay.layerdb_sha256
            c = (_read(os.path.join(base, name, "cache-id")) or b"").decode("utf-8", "replace").strip()
            if c:
                referenced.add(c)
        all_links: set[str] = set()
        for name in _listdir(lay.overlay2):
            p = os.path.join(lay.overlay2, name)
            if name == "l":
                continue
            if name in referenced:
                ln = (_read(os.path.join(p, "link")) or b"").decode("utf-8", "replace").strip()
                if ln:
                    all_links.add(ln)
                merged = os.path.join(p, "merged")
                if os.path.ismount(merged) and not self._mount_in_use(name):
                    self.f(
                        WARNING,
                        "stale-mount",
                        merged,
                        "overlay mount left behind by a dead process",
                        "unmount it",
                        lambda m=merged: _unmount(m),
                    )
                continue
            if self.missing_cache_ids:
                self.f(
                    WARNING,
                    "orphan-driver-dir",
                    p,
                    "overlay2 dir that no layer or container names; kept: it may hold the files of a layer "
                    "whose cache-id is damaged",
                )
                continue
            self.f(
                WARNING,
                "orphan-driver-dir",
                p,
                "overlay2 dir that no layer or container uses",
                "delete it",
                lambda n=name: drv.remove(n),
                confirm=True,
            )
        for name in _listdir(lay.overlay2_links):
            lp = os.path.join(lay.overlay2_links, name)
            try:
                target = os.readlink(lp)
            except OSError:
                self.f(
                    WARNING, "short-link-stray", lp, "not a symlink", "remove it", lambda lp=lp: os.unlink(lp)
                )
                continue
            m = re.match(r"^\.\./([a-f0-9]{64}(?:-init)?)/diff$", target)
            if not m or not os.path.isdir(os.path.join(lay.overlay2, m.group(1))):
                self.f(
                    WARNING,
                    "short-link-dangling",
                    lp,
                    f"short link points to a missing layer ({target})",
                    "remove it",
                    lambda lp=lp: os.unlink(lp),
                )
            elif (
                name not in all_links
                and m.group(1) in referenced
                # a layer whose link file is damaged adopts this link when repaired
                and _LINK_RE.match(
                    (_read(os.path.join(lay.overlay2, m.group(1), "link")) or b"")
                    .decode("utf-8", "replace")
                    .strip()
                )
            ):
                self.f(
                    WARNING,
                    "short-link-unused",
                    lp,
                    "short link that its layer no longer names",
                    "remove it",
                    lambda lp=lp: os.unlink(lp),
                )
        # top layers that no image, child layer or container uses
        used: set[str] = set()
        for top in self.image_tops.values():
            if top:
                used.add(top)
        for info in self.layers.values():
            if info.get("parent"):
                used.add(info["parent"])
        for p in self.store.mount_parents():
            used.add(p)
        # Usage is only certain when every config and every layer's parent link could be read;
        # otherwise an "unused" layer may be one a damaged record still needs: never delete it then.
        if self.uncertain_usage:
            return  # a layer that looks unused may be one a damaged record needs: say nothing, touch nothing
        for hexid in self.layers:
            chain = f"sha256:{hexid}"
            if chain not in used:
                self.f(
                    WARNING,
                    "unused-layer",
                    os.path.join(lay.layerdb_sha256, hexid),
                    "layer that no image or container uses (left by an interrupted load or rmi)",
                    "delete it (and its unused parents)",
                    lambda c=chain: _release(self.store, c),
                    confirm=True,
                )

    def _mount_in_use(self, cache_id: str) -> bool:
        # A container mount is in use while its container runs (issue: containers); image layers
        # are only mounted transiently.
        for c in self.store.containers.all():
            if c.running:
                md = self.store.layout.mount_dir(c.id)
                if (_read(os.path.join(md, "mount-id")) or b"").decode().strip() == cache_id:
                    return True
        return False

    # ------------------------------------------------------------------ damage summary
    def collect_damage(self) -> None:
        """Per image, the damaged layers of its chain (root causes, not what sits on them)."""
        for image_id, top in self.image_tops.items():
            cur = top
            seen = 0
            while cur and seen < 200:
                why = self.bad_layers.get(cur)
                if why and not why.startswith("it sits on"):
                    self.report.damaged_images.setdefault(image_id, []).append(
                        f"layer {cur} is unusable: {why}"
                    )
                info = self.layers.get(cur[7:])
                if info is None:
                    break
                cur = info.get("parent")
                seen += 1


def partial_pull_blobs(store: Store) -> list[tuple[str, int]]:
    """(path, size) of every ``*.partial`` blob that an interrupted pull left in ``tmp/dockyard-pull/``."""
    d = os.path.join(store.layout.tmp, PARTIAL_DIR)
    out = []
    for name in sorted(_listdir(d)):
        p = os.path.join(d, name)
        if name.endswith(".partial"):
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if not os.path.islink(p) and os.path.isfile(p):
                out.append((p, st.st_size))
    return out
