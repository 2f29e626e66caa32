"""``docker save`` archives: the legacy layout of Docker <= 24 and the OCI-hybrid one of 25+.

Both are driven by ``manifest.json``: ``[{"Config": path, "RepoTags": [...], "Layers": [paths],
"Parent": id?, "LayerSources": {...}?}]``. Legacy saves keep ``<v1id>/layer.tar`` (possibly a
symlink to an identical layer elsewhere in the archive); 25+ saves keep ``blobs/sha256/<hex>``.
Layers may be compressed (``docker load`` detects gzip, bzip2, xz, zstd).
"""

from __future__ import annotations

import json
from typing import Any

from dockyard.digest import is_digest
from dockyard.errors import InvalidInput
from dockyard.image.config import ImageConfig
from dockyard.image.reference import InvalidReference, Reference, parse_reference
from dockyard.sources.base import LayerBlob, SourceImage, Tree, safe_relpath

MAX_JSON = 16 << 20


def _blob_digest(path: str) -> str | None:
    """``blobs/sha256/<hex>`` names its own digest (OCI-hybrid saves)."""
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == "blobs" and parts[1] == "sha256":
        d = "sha256:" + parts[2]
        return d if is_digest(d) else None
    return None


def parse_repo_tag(tag: Any, label: str) -> Reference:
    if not isinstance(tag, str):
        raise InvalidInput(f"{label}: invalid RepoTag {tag!r}")
    try:
        ref = parse_reference(tag)
    except InvalidReference as e:
        raise InvalidInput(f"{label}: invalid RepoTag {tag!r}: {e}") from None
    if ref.digest is not None or ref.tag is None:
        raise InvalidInput(f"{label}: invalid tag {tag!r}: a RepoTag needs name:tag")
    return ref


def read_docker_save(tree: Tree) -> list[SourceImage]:
    label = tree.label
    raw = tree.read("manifest.json", MAX_JSON)
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{label}: manifest.json is not valid JSON: {e}") from None
    if not isinstance(manifest, list):
        raise InvalidInput(f"{label}: manifest.json is not a list of images")
    images = []
    for n, item in enumerate(manifest):
        if not isinstance(item, dict):
            raise InvalidInput(f"{label}: manifest.json entry {n} is not an object")
        cfg_path = safe_relpath(item.get("Config"), "Config", label)
        cfg_raw = tree.read(cfg_path, MAX_JSON)
        config = ImageConfig(cfg_raw)
        want = _blob_digest(cfg_path)
        if want and config.id != want:
            raise InvalidInput(f"{label}: config {cfg_path} does not match its digest (got {config.id})")
        config.validate()
        layers = item.get("Layers") or []
        if not isinstance(layers, list):
            raise InvalidInput(f"{label}: manifest.json entry {n}: Layers is not a list")
        diff_ids = config.diff_ids
        if len(layers) != len(diff_ids):
            raise InvalidInput(
                f"{label}: invalid manifest, layers length mismatch: expected {len(layers)}, got {len(diff_ids)}"
            )
        tags = item.get("RepoTags") or []
        if not isinstance(tags, list):
            raise InvalidInput(f"{label}: RepoTags is not a list")
        names = [parse_repo_tag(t, label) for t in tags]
        blobs = []
        for i, lp in enumerate(layers):
            path = safe_relpath(lp, "layer", label)
            opener, size = tree.opener(path)
            blob_digest = _blob_digest(path)
            blobs.append(
                LayerBlob(
                    opener=opener,
                    diff_id=diff_ids[i],
                    digest=blob_digest,
                    size=size if blob_digest else None,
                    description=f"{label}:{path}",
                )
            )
        parent = item.get("Parent")
        images.append(
            SourceImage(
                config=config,
                layers=blobs,
                names=names,
                parent=parent if isinstance(parent, str) and is_digest(parent) else None,
                description=f"{label} image {n + 1}",
            )
        )
    return images
