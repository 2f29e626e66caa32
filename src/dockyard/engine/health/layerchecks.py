# mypy: disable-error-code="misc"
# (repair actions bind loop variables with lambda defaults, which mypy cannot type)
"""fsck's layer checks: layerdb records, the overlay2 dirs behind them (``diff/``, ``link``,
``l/``, ``lower``, ``work/``, ``committed``), layer files that can be recovered, and ``--deep``
(every layer reassembled through tar-split hashes to its diffID)."""


from __future__ import annotations

import gzip
import os
import re
from typing import Any

from dockyard.digest import chain_id, is_digest, is_hex64
from dockyard.engine.health.findings import _LINK_RE, ERROR, WARNING, Finding, _read, _rel
from dockyard.engine.health.repairs import (
    Repairs,
    _atomic,
    _listdir,
    _mkdir,
    _relink,
    expected_lower,
)
from dockyard.errors import DockyardError
from dockyard.store.atomic import write_plain


class LayerChecks(Repairs):
    """Checks of layerdb and of the overlay2 layer dirs."""

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
