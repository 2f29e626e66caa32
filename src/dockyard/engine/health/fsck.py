# mypy: disable-error-code="misc"
# (repair actions bind loop variables with lambda defaults, which mypy cannot type)
"""fsck: check a data-root (dockyard's or Docker's) and repair what can be rebuilt without loss.

Each problem is a :class:`Finding`: a path, a one-line explanation, a severity, and -- when it can
be fixed without losing anything -- a repair action. What cannot be rebuilt (a layer whose files
are gone or changed, a config that does not hash to its ID) is reported with the images it
breaks, and never deleted silently.

Checks, in order of the store's dependency chain:

- ``repositories.json`` -> imagedb: every reference resolves to an image that exists;
- imagedb: names are digests, content hashes to its name, configs parse, their diff_ids give
  chainIDs that exist, ``parent`` metadata points at an image;
- layerdb: ``cache-id``/``diff``/``size``/``parent``/``tar-split.json.gz`` present and valid,
  the chainID recomputes from parent + diff, parents exist; staging leftovers and
  ``*-removing`` dirs;
- overlay2: each layer's dir with ``diff/``, ``link``, ``l/<link>`` pointing back, ``lower``
  matching the parent chain, ``work/``, ``committed`` in parents; orphan dirs, dangling or
  unreferenced ``l/`` links, stale mounts;
- containers: ``layerdb/mounts/<id>`` <-> ``containers/<id>`` <-> ``overlay2/<mount-id>{,-init}``;
- ``--deep``: every layer reassembled through tar-split hashes to its diffID.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dockyard.digest import chain_id, is_digest, is_hex64, random_link
from dockyard.errors import DockyardError
from dockyard.image.config import ImageConfig
from dockyard.image.reference import InvalidReference, parse_reference
from dockyard.store import Store
from dockyard.store.atomic import write_plain

ERROR = "error"
WARNING = "warning"

_LINK_RE = re.compile(r"^[A-Z2-7]{26}$")


@dataclass
class Finding:
    severity: str
    code: str
    path: str
    message: str
    repair: str | None = None
    """What --repair does, in words (None: cannot be repaired without loss)."""
    action: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    needs_confirmation: bool = False
    """Repairs that delete data nothing refers to (orphans) ask first unless --yes."""
    images: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "path": self.path,
            "message": self.message,
            "repairable": self.action is not None,
        }
        if self.repair:
            d["repair"] = self.repair
        if self.images:
            d["affected_images"] = self.images
        return d


@dataclass
class Report:
    root: str
    findings: list[Finding] = field(default_factory=list)
    images_checked: int = 0
    layers_checked: int = 0
    damaged_images: dict[str, list[str]] = field(default_factory=dict)

    def add(self, f: Finding) -> None:
        self.findings.append(f)

    @property
    def clean(self) -> bool:
        return not self.findings


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _rel(store: Store, path: str) -> str:
    root = store.root
    return path[len(root) + 1 :] if path.startswith(root + "/") else path


class Checker:
    def __init__(
        self,
        store: Store,
        *,
        deep: bool = False,
        progress: Callable[[str, int, int | None], None] | None = None,
    ) -> None:
        self.store = store
        self.deep = deep
        self.progress = progress
        self.report = Report(store.root)
        self.layers: dict[str, dict[str, Any]] = {}  # chain hex -> info
        self.bad_layers: dict[str, str] = {}  # chain id -> why it is unusable
        self.uncertain_usage = False  # a config or a parent link could not be read
        self.missing_cache_ids: list[str] = []  # chains whose cache-id is unreadable
        self.missing_diffs: list[str] = []  # chains whose diff file is unreadable
        self.configs: dict[str, ImageConfig] = {}
        self.cache_ids: dict[str, str] = {}  # cache id -> owner description

    def f(
        self,
        severity: str,
        code: str,
        path: str,
        message: str,
        repair: str | None = None,
        action: Callable[[], None] | None = None,
        confirm: bool = False,
    ) -> Finding:
        fd = Finding(severity, code, _rel(self.store, path), message, repair, action, confirm)
        self.report.add(fd)
        return fd

    def tmp_leftover(self, path: str) -> None:
        """A ``.tmp-*`` file that an interrupted atomic write left behind: safe to remove."""
        self.f(
            WARNING,
            "tmp-leftover",
            path,
            "leftover of an interrupted write",
            "remove it",
            lambda: os.unlink(path),
        )

    # ------------------------------------------------------------------ run
    def run(self) -> Report:
        self.check_layerdb()
        self.check_overlay2_layers()
        self.check_containers()
        self.check_images()
        self.check_references()
        self.check_distribution()
        self.recover_layer_files()
        self.check_orphans()
        if self.deep:
            self.check_deep()
        self.collect_damage()
        return self.report

    # ------------------------------------------------------------------ layerdb
    def check_layerdb(self) -> None:
        lay = self.store.layout
        for name in _listdir(lay.layerdb_tmp):
            p = os.path.join(lay.layerdb_tmp, name)
            self.f(
                WARNING,
                "staging-leftover",
                p,
                "leftover of an interrupted layer registration",
                "remove it and the overlay2 dir it names",
                lambda p=p: self.store.layers._drop_staged(p),
            )
        for name in _listdir(lay.layerdb_sha256):
            p = os.path.join(lay.layerdb_sha256, name)
            if name.endswith("-removing"):
                self.f(
                    WARNING,
                    "removal-leftover",
                    p,
                    "leftover of an interrupted layer deletion",
                    "finish the deletion",
                    lambda p=p: self.store.layers._drop_staged(p),
                )
                continue
            if not is_hex64(name):
                self.f(WARNING, "stray-entry", p, "not a layer (name is not a sha256 hex digest)")
                continue
            self._check_layer_dir(name, p)
        # parents, after every layer was read
        for hexid, info in self.layers.items():
            parent = info.get("parent")
            if parent and parent[7:] not in self.layers:
                self.uncertain_usage = True
                self._bad(f"sha256:{hexid}", f"its parent layer {parent} is missing")
                self.f(
                    ERROR,
                    "parent-missing",
                    os.path.join(lay.layerdb_sha256, hexid, "parent"),
                    f"parent layer {parent} does not exist",
                )
        self._propagate()  # a layer whose parent is unusable is unusable

    def _bad(self, chain: str, why: str) -> None:
        self.bad_layers.setdefault(chain, why)

    def _check_layer_dir(self, hexid: str, p: str) -> None:
        chain = f"sha256:{hexid}"
        info: dict[str, Any] = {}
        self.layers[hexid] = info
        self.report.layers_checked += 1
        if not os.path.isdir(p):
            self.f(ERROR, "layer-not-dir", p, "layer entry is not a directory")
            self._bad(chain, "its layerdb entry is not a directory")
            return
        required = ("diff", "size", "cache-id")
        for fname in (*required, "parent", "tar-split.json.gz"):
            data = _read(os.path.join(p, fname))
            fp = os.path.join(p, fname)
            if data is None:
                if fname in required:
                    self.f(
                        ERROR,
                        "layer-file-missing",
                        fp,
                        f"{fname} is missing: dockerd skips this layer and every image on it",
                    )
                    self._bad(chain, f"its {fname} file is missing")
                elif fname == "tar-split.json.gz":
                    self.f(
                        ERROR,
                        "tar-split-missing",
                        fp,
                        "tar-split data is missing: the layer cannot be saved or pushed (its files are still there)",
                    )
                    self._bad(chain, "its tar-split data is missing")
                continue
            if not data and fname == "size":
                info["size_bad"] = True
                self.f(
                    ERROR,
                    "layer-size-invalid",
                    fp,
                    "size is empty (truncated): dockerd would drop this layer",
                    "recompute it from the layer's files",
                    lambda h=hexid: self._repair_size(h),
                )
                continue
            if not data and fname != "parent":
                self.f(ERROR, "layer-file-empty", fp, f"{fname} is empty (truncated)")
                self._bad(chain, f"its {fname} file is empty")
                continue
            text = data.decode("utf-8", "replace")
            if fname == "diff":
                if not is_digest(text):
                    self.f(ERROR, "layer-file-invalid", fp, f"diff is not a sha256 digest: {text[:80]!r}")
                    self._bad(chain, "its diff file is invalid")
                else:
                    info["diff"] = text
            elif fname == "size":
                try:
                    int(text)
                    info["size"] = int(text)
                    if text != text.strip():
                        raise ValueError
                except ValueError:
                    info["size_bad"] = True
                    self.f(
                        ERROR,
                        "layer-size-invalid",
                        fp,
                        f"size is not a number ({text[:40]!r}): dockerd would drop this layer",
                        "recompute it from the layer's files",
                        lambda h=hexid: self._repair_size(h),
                    )
            elif fname == "cache-id":
                cid = text.strip()
                if not is_hex64(cid):
                    self.f(ERROR, "layer-file-invalid", fp, f"cache-id is not 64 hex digits: {text[:80]!r}")
                    self._bad(chain, "its cache-id file is invalid")
                else:
                    info["cache_id"] = cid
                    self.cache_ids[cid] = f"layer {chain}"
            elif fname == "parent":
                if not is_digest(text.strip()):
                    self.uncertain_usage = True
                    self.f(ERROR, "layer-file-invalid", fp, f"parent is not a sha256 digest: {text[:80]!r}")
                    self._bad(chain, "its parent file is invalid")
                else:
                    info["parent"] = text.strip()
            elif fname == "tar-split.json.gz":
                try:
                    with gzip.open(fp, "rb") as g:
                        while g.read(1 << 20):
                            pass
                except (OSError, EOFError) as e:
                    self.f(
                        ERROR,
                        "tar-split-damaged",
                        fp,
                        f"tar-split data is damaged ({e}): the layer cannot be saved or pushed",
                    )
                    self._bad(chain, "its tar-split data is damaged")
        if "diff" not in info:
            self.missing_diffs.append(chain)
            self.uncertain_usage = True  # a damaged record may have lost its parent link too
        if "cache_id" not in info:
            self.missing_cache_ids.append(chain)
        if "diff" in info and ("parent" in info or _read(os.path.join(p, "parent")) is None):
            want = chain_id(info.get("parent"), info["diff"])
            if want != chain:
                self.f(
                    ERROR,
                    "chain-id-mismatch",
                    p,
                    f"chainID does not recompute from parent + diff (got {want})",
                )
                self._bad(chain, "its chainID does not match its parent and diff")

    def _repair_size(self, hexid: str) -> None:
        info = self.layers[hexid]
        cache_id = info.get("cache_id")
        if not cache_id:
            return
        size = diff_dir_size(self.store.driver.diff_path(cache_id))
        from dockyard.store.atomic import atomic_write

        atomic_write(os.path.join(self.store.layout.layerdb_sha256, hexid, "size"), str(size).encode(), 0o644)

    # ------------------------------------------------------------------ overlay2 (layers)
    def check_overlay2_layers(self) -> None:
        lay = self.store.layout
        drv = self.store.driver
        links_of: dict[str, str] = {}
        for hexid, info in self.layers.items():
            cid = info.get("cache_id")
            if not cid:
                continue
            chain = f"sha256:{hexid}"
            d = drv.dir(cid)
            if not os.path.isdir(d):
                self.f(
                    ERROR,
                    "driver-dir-missing",
                    d,
                    f"overlay2 dir of layer {chain} is missing: its files are gone",
                )
                self._bad(chain, "its overlay2 directory is missing")
                continue
            if not os.path.isdir(os.path.join(d, "diff")):
                self.f(
                    ERROR,
                    "driver-diff-missing",
                    os.path.join(d, "diff"),
                    f"diff/ of layer {chain} is missing: its files are gone",
                )
                self._bad(chain, "its diff directory is missing")
                continue
            link = (_read(os.path.join(d, "link")) or b"").decode("utf-8", "replace").strip()
            if not _LINK_RE.match(link):
                what = "missing" if _read(os.path.join(d, "link")) is None else f"invalid ({link[:40]!r})"
                self.f(
                    ERROR,
                    "link-file-bad",
                    os.path.join(d, "link"),
                    f"link file is {what}: mounts of this layer and its children fail",
                    "make a new short link (and rewrite the children's lower files)",
                    lambda c=cid: self._repair_link(c),
                )
                continue
            links_of[cid] = link
            lp = lay.link_path(link)
            try:
                target = os.readlink(lp)
            except FileNotFoundError:
                self.f(
                    ERROR,
                    "short-link-missing",
                    lp,
                    f"l/{link} of layer {chain} is missing: mounts fail",
                    "recreate the symlink",
                    lambda lp=lp, c=cid: _relink(lp, c),
                )
                continue
            except OSError:
                self.f(
                    ERROR,
                    "short-link-bad",
                    lp,
                    f"l/{link} is not a symlink",
                    "replace it with the right symlink",
                    lambda lp=lp, c=cid: _relink(lp, c),
                )
                continue
            if target != f"../{cid}/diff":
                self.f(
                    ERROR,
                    "short-link-wrong",
                    lp,
                    f"l/{link} points to {target!r}, not ../{cid}/diff",
                    "point it back",
                    lambda lp=lp, c=cid: _relink(lp, c),
                )
        # lower files and work dirs, now that every link is known
        for hexid, info in self.layers.items():
            cid = info.get("cache_id")
            parent = info.get("parent")
            if not cid or not os.path.isdir(drv.dir(cid)):
                continue
            d = drv.dir(cid)
            lower_p = os.path.join(d, "lower")
            work_p = os.path.join(d, "work")
            want = self._expected_lower(hexid)
            got = drv.lower_of(cid)
            if parent is None:
                if got is not None:
                    self.f(
                        WARNING,
                        "lower-unexpected",
                        lower_p,
                        "bottom layer has a lower file",
                        "remove it",
                        lambda p=lower_p: os.unlink(p),
                    )
                continue
            if want is None:
                continue
            if got != want:
                self.f(
                    ERROR,
                    "lower-wrong",
                    lower_p,
                    f"lower is {'missing' if got is None else repr(got)}, expected {want!r}: mounts fail",
                    "rewrite it from the parent chain",
                    lambda p=lower_p, w=want: write_plain(p, w.encode(), 0o644),
                )
            if not os.path.isdir(work_p):
                self.f(
                    WARNING,
                    "work-missing",
                    work_p,
                    "work/ is missing",
                    "create it",
                    lambda p=work_p: _mkdir(p, 0o700),
                )
            pinfo = self.layers.get(parent[7:], {})
            pcid = pinfo.get("cache_id")
            committed = os.path.join(drv.dir(pcid), "committed") if pcid else ""
            if pcid and os.path.isdir(drv.dir(pcid)) and not os.path.exists(committed):
                self.f(
                    WARNING,
                    "committed-missing",
                    committed,
                    "parent layer lacks its committed marker (dockerd would mount it read-write)",
                    "create it",
                    lambda p=committed: write_plain(p, b"", 0o600),
                )
        self._links_of = links_of

    def _expected_lower(self, hexid: str) -> str | None:
        parts = []
        cur = self.layers.get(hexid, {}).get("parent")
        depth = 0
        while cur:
            info = self.layers.get(cur[7:])
            if not info or not info.get("cache_id"):
                return None
            link = (
                (_read(os.path.join(self.store.driver.dir(info["cache_id"]), "link")) or b"")
                .decode("utf-8", "replace")
                .strip()
            )
            if not _LINK_RE.match(link):
                return None
            parts.append("l/" + link)
            cur = info.get("parent")
            depth += 1
            if depth > 200:
                return None
        return ":".join(parts) if parts else None

    def _repair_link(self, cache_id: str) -> None:
        drv = self.store.driver
        d = drv.dir(cache_id)
        old = (_read(os.path.join(d, "link")) or b"").decode("utf-8", "replace").strip()
        # The l/ symlink that still points here names the link every lower file uses: keep it.
        for name in _listdir(self.store.layout.overlay2_links):
            lp = self.store.layout.link_path(name)
            if _LINK_RE.match(name) and os.path.islink(lp) and os.readlink(lp) == f"../{cache_id}/diff":
                write_plain(os.path.join(d, "link"), name.encode(), 0o644)
                return
        link = random_link()
        os.symlink(f"../{cache_id}/diff", self.store.layout.link_path(link))
        write_plain(os.path.join(d, "link"), link.encode(), 0o644)
        if _LINK_RE.match(old):
            lp = self.store.layout.link_path(old)
            if os.path.islink(lp) and os.readlink(lp) == f"../{cache_id}/diff":
                os.unlink(lp)
        # children and containers name this layer in their lower files: rebuild those
        rewrite_all_lowers(self.store)

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

    def _drop_staged_container(self, cid: str, path: str) -> None:
        from dockyard.containers.removal import release_container_layers

        if not os.path.isdir(self.store.layout.container_dir(cid)):
            release_container_layers(self.store, cid)
        _rmtree(path)

    def _finish_container_removal(self, cid: str) -> None:
        from dockyard.containers.removal import release_container_layers

        release_container_layers(self.store, cid)
        _rmtree(self.store.layout.container_dir(cid) + "-removing")

    def _drop_mount(self, cid: str) -> None:
        md = self.store.layout.mount_dir(cid)
        for key in ("mount-id", "init-id"):
            v = (_read(os.path.join(md, key)) or b"").decode("utf-8", "replace").strip()
            if re.match(r"^[a-f0-9]{64}(-init)?$", v):
                self.store.driver.remove(v)
        from dockyard.archive.fsutil import remove_tree

        remove_tree(md)

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

    # ------------------------------------------------------------------ recoverable layer files
    def _finding_at(self, path: str) -> Finding | None:
        rel = _rel(self.store, path)
        for f in self.report.findings:
            if f.path == rel and f.action is None:
                return f
        return None

    def recover_layer_files(self) -> None:
        """A lost ``diff`` comes back from the image configs, a lost ``cache-id`` from the overlay2
        dir whose files rebuild the layer (found through the children's ``lower`` links or the
        expected ``lower`` of an orphan dir, and verified through tar-split)."""
        lay = self.store.layout
        for chain in list(self.missing_diffs):
            info = self.layers.get(chain[7:], {})
            diff = None
            for cfg in self.configs.values():
                chains = cfg.chain_ids
                if chain in chains:
                    diff = cfg.diff_ids[chains.index(chain)]
                    break
            if diff is None or chain_id(info.get("parent"), diff) != chain:
                continue
            f = self._finding_at(os.path.join(lay.layer_dir(chain), "diff"))
            if f is None:
                continue
            f.repair = "restore it from the image configs that use this layer"
            f.action = lambda c=chain, d=diff: _atomic(
                os.path.join(self.store.layout.layer_dir(c), "diff"), d
            )
            info["diff"] = diff
            self.missing_diffs.remove(chain)
            if self.bad_layers.get(chain, "").startswith("its diff"):
                del self.bad_layers[chain]
        for chain in list(self.missing_cache_ids):
            info = self.layers.get(chain[7:], {})
            cand = self._find_driver_dir(chain, info)
            if cand is None:
                continue
            f = self._finding_at(os.path.join(lay.layer_dir(chain), "cache-id"))
            if f is None:
                continue
            f.repair = f"restore it: overlay2/{cand} holds this layer's files (verified)"
            f.action = lambda c=chain, v=cand: _atomic(
                os.path.join(self.store.layout.layer_dir(c), "cache-id"), v
            )
            info["cache_id"] = cand
            self.cache_ids[cand] = f"layer {chain}"
            self.missing_cache_ids.remove(chain)
            if self.bad_layers.get(chain, "").startswith("its cache-id"):
                del self.bad_layers[chain]
        self._propagate()

    def _propagate(self) -> None:
        for k in [k for k, v in self.bad_layers.items() if v.startswith("it sits on")]:
            del self.bad_layers[k]
        changed = True
        while changed:
            changed = False
            for hexid, info in self.layers.items():
                cid = f"sha256:{hexid}"
                parent = info.get("parent")
                if cid not in self.bad_layers and parent and parent in self.bad_layers:
                    self.bad_layers[cid] = f"it sits on damaged layer {parent}"
                    changed = True

    def _find_driver_dir(self, chain: str, info: dict[str, Any]) -> str | None:
        lay = self.store.layout
        cands: list[str] = []
        # a child (layer or container init layer) names this layer first in its lower file
        for d in _listdir(lay.overlay2):
            if d == "l":
                continue
            lower = (_read(os.path.join(lay.overlay2, d, "lower")) or b"").decode("utf-8", "replace")
            first = lower.split(":", 1)[0]
            if not first.startswith("l/"):
                continue
            try:
                target = os.readlink(os.path.join(lay.overlay2, first))
            except OSError:
                continue
            m = re.match(r"^\.\./([a-f0-9]{64})/diff$", target)
            if not m or m.group(1) in self.cache_ids:
                continue
            # is the child one of ours? (its own record says its parent is this chain)
            child_is_ours = any(
                x.get("parent") == chain and x.get("cache_id") == d for x in self.layers.values()
            ) or d.endswith("-init")
            if child_is_ours and m.group(1) not in cands:
                cands.append(m.group(1))
        if not cands:
            parent = info.get("parent")
            want = expected_lower(self.store, parent) if parent else None
            for d in _listdir(lay.overlay2):
                if d == "l" or not is_hex64(d) or d in self.cache_ids:
                    continue
                if self.store.driver.lower_of(d) == want:
                    cands.append(d)
        verified = [c for c in cands if self._rebuilds(chain, info, c)]
        return verified[0] if len(verified) == 1 else None

    def _rebuilds(self, chain: str, info: dict[str, Any], cache_id: str) -> bool:
        diff = info.get("diff")
        if not diff or not os.path.isdir(self.store.driver.diff_path(cache_id)):
            return False
        from dockyard.store.layers import Layer
        from dockyard.store.layertar import write_layer_tar

        try:
            write_layer_tar(self.store, Layer(chain, diff, info.get("parent"), 0, cache_id), lambda b: None)
            return True
        except DockyardError:
            return False

    # ------------------------------------------------------------------ orphans
    def check_orphans(self) -> None:
        lay = self.store.layout
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

    # ------------------------------------------------------------------ deep
    def check_deep(self) -> None:
        from dockyard.store.layertar import write_layer_tar

        total = len(self.layers)
        for n, (hexid, info) in enumerate(sorted(self.layers.items()), 1):
            chain = f"sha256:{hexid}"
            if chain in self.bad_layers or "diff" not in info or "cache_id" not in info:
                continue
            if self.progress:
                self.progress("fsck", n, total)
            try:
                from dockyard.store.layers import Layer

                layer = Layer(chain, info["diff"], info.get("parent"), 0, info["cache_id"])
                write_layer_tar(self.store, layer, lambda b: None)
            except DockyardError as e:
                self.f(
                    ERROR,
                    "layer-content-corrupt",
                    self.store.driver.diff_path(info["cache_id"]),
                    f"layer {chain}: {str(e).split(': ', 1)[-1]}",
                )
                self._bad(chain, "its files do not match its diffID")

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


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _mkdir(p: str, mode: int) -> None:
    os.mkdir(p, mode)
    os.chmod(p, mode)


def _rmtree(p: str) -> None:
    from dockyard.archive.fsutil import remove_tree

    remove_tree(p)


def _relink(lp: str, cache_id: str) -> None:
    if os.path.lexists(lp):
        if os.path.isdir(lp) and not os.path.islink(lp):
            _rmtree(lp)
        else:
            os.unlink(lp)
    os.symlink(f"../{cache_id}/diff", lp)


def _atomic(path: str, value: str) -> None:
    from dockyard.store.atomic import atomic_write

    atomic_write(path, value.encode(), 0o644)


def _drop_ref(store: Store, repo: str, key: str) -> None:
    repos = store.refs.load()
    if repo in repos:
        repos[repo].pop(key, None)
        store.refs.save(repos)


def _release(store: Store, chain: str) -> None:
    if store.layers.exists(chain):
        store.release_layers(chain)


def _unmount(path: str) -> None:
    store_driver_unmount(path)


def store_driver_unmount(path: str) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2(os.fsencode(path), 2)
    try:
        os.rmdir(path)
    except OSError:
        pass


def expected_lower(store: Store, parent: str | None) -> str | None:
    """``lower`` of a layer on ``parent``, from the short links of the whole parent chain."""
    parts = []
    cur = parent
    while cur:
        try:
            layer = store.layers.get(cur)
            parts.append("l/" + store.driver.link_of(layer.cache_id))
        except (DockyardError, OSError):
            return None
        cur = layer.parent
        if len(parts) > 200:
            return None
    return ":".join(parts) if parts else None


def rewrite_all_lowers(store: Store) -> None:
    """Rewrite every layer's (and container layer's) ``lower`` file from the links of its chain."""
    for chain in store.layers.ids():
        try:
            layer = store.layers.get(chain)
        except DockyardError:
            continue
        if layer.parent is None or not store.driver.exists(layer.cache_id):
            continue
        want = expected_lower(store, layer.parent)
        if want is None:
            continue
        p = os.path.join(store.driver.dir(layer.cache_id), "lower")
        if store.driver.lower_of(layer.cache_id) != want:
            write_plain(p, want.encode(), 0o644)
    # container layers: <mid>-init sits on the image's top layer, <mid> on its init layer
    for cid in _listdir(store.layout.layerdb_mounts):
        md = store.layout.mount_dir(cid)
        mid = (_read(os.path.join(md, "mount-id")) or b"").decode("utf-8", "replace").strip()
        parent = (_read(os.path.join(md, "parent")) or b"").decode("utf-8", "replace").strip() or None
        if not is_hex64(mid):
            continue
        init = mid + "-init"
        if store.driver.exists(init):
            want = expected_lower(store, parent)
            p = os.path.join(store.driver.dir(init), "lower")
            if want is not None and store.driver.lower_of(init) != want:
                write_plain(p, want.encode(), 0o644)
            try:
                rw_want = "l/" + store.driver.link_of(init) + (":" + want if want else "")
            except OSError:
                continue
            p = os.path.join(store.driver.dir(mid), "lower")
            if store.driver.exists(mid) and store.driver.lower_of(mid) != rw_want:
                write_plain(p, rw_want.encode(), 0o644)


def diff_dir_size(path: str) -> int:
    """Docker's ``directory.Size``: st_size of non-directories, each inode once, no following."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [path]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                    continue
                if st.st_size <= 0:
                    continue
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1:
                    if key in seen:
                        continue
                    seen.add(key)
                total += st.st_size
    return total


def fsck(
    store: Store, *, deep: bool = False, progress: Callable[[str, int, int | None], None] | None = None
) -> Report:
    return Checker(store, deep=deep, progress=progress).run()


def repair(store: Store, report: Report, *, include_confirmed: bool) -> list[Finding]:
    """Apply the repairs of ``report`` under the write lock; returns what was repaired."""
    done = []
    with store._lock:  # not write_lock(): recovery is what we are about to do, step by step
        for f in report.findings:
            if f.action is None or (f.needs_confirmation and not include_confirmed):
                continue
            try:
                f.action()
                done.append(f)
            except FileNotFoundError:
                done.append(f)  # already gone (an earlier repair took it with it)
    return done
