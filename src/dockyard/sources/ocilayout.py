"""OCI image layouts (a directory, or a tar of one): ``oci-layout``, ``index.json``, ``blobs/``.

Every manifest the index names is an image; nested indexes are followed. Where an index lists
several platforms, the one matching the host (or ``--platform``) is chosen. Descriptors are
checked before use: digest syntax before any path is built, then size and digest of every blob.
"""

from __future__ import annotations

import json
import os
from typing import Any

from dockyard.digest import hex_of, validate_digest
from dockyard.errors import InvalidInput
from dockyard.image.config import ImageConfig
from dockyard.image.platform import Platform, from_descriptor, host_platform
from dockyard.image.reference import InvalidReference, Reference, is_valid_tag, parse_reference
from dockyard.sources.base import LayerBlob, SourceImage, Tree

MAX_JSON = 8 << 20

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)
MANIFEST_TYPES = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


def _blob_path(digest: str) -> str:
    return "blobs/sha256/" + hex_of(digest)


def read_blob(tree: Tree, desc: dict[str, Any], what: str, limit: int = MAX_JSON) -> bytes:
    digest = validate_digest(desc.get("digest"), f"{tree.label}: {what} digest")
    size = desc.get("size")
    path = _blob_path(digest)
    if not tree.exists(path):
        raise InvalidInput(f"{tree.label}: {what} blob {digest} is missing")
    data = tree.read(path, limit)
    if isinstance(size, int) and size != len(data):
        raise InvalidInput(
            f"{tree.label}: {what} {digest}: size mismatch: descriptor says {size}, blob has {len(data)}"
        )
    import hashlib

    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != digest:
        raise InvalidInput(f"{tree.label}: {what} {digest}: digest mismatch (got {got})")
    return data


def _json(data: bytes, what: str, label: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{label}: {what} is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise InvalidInput(f"{label}: {what} is not a JSON object")
    return obj


def default_repository(label_path: str) -> str:
    """Repository for bare-tag ref names: the layout's name up to its first dot."""
    base = os.path.basename(os.path.normpath(label_path)) or "image"
    name = base.split(".", 1)[0].lower()
    cleaned = "".join(c if (c.isalnum() or c in "._-") else "-" for c in name).strip("._-")
    return cleaned or "image"


def _names_for(desc: dict[str, Any], repo: str, label: str) -> list[Reference]:
    ann = desc.get("annotations") or {}
    if not isinstance(ann, dict):
        return []
    full = ann.get(CONTAINERD_NAME)
    if isinstance(full, str) and full:
        try:
            r = parse_reference(full)
            if r.digest is None:
                return [r.tagged_or_latest()]
        except InvalidReference:
            pass
    ref = ann.get(REF_NAME)
    if not isinstance(ref, str) or not ref:
        return []
    if "/" in ref or ":" in ref:
        try:
            r = parse_reference(ref)
        except InvalidReference as e:
            raise InvalidInput(f"{label}: invalid reference name {ref!r}: {e}") from None
        if r.digest is not None:
            return []
        return [r.tagged_or_latest()]
    if not is_valid_tag(ref):
        raise InvalidInput(f"{label}: invalid reference name {ref!r}")
    try:
        return [parse_reference(f"{repo}:{ref}")]
    except InvalidReference as e:
        raise InvalidInput(f"{label}: cannot make a reference from {repo}:{ref}: {e}") from None


def read_oci_layout(
    tree: Tree, *, platform: Platform | None = None, repo_hint: str = ""
) -> list[SourceImage]:
    label = tree.label
    if tree.exists("oci-layout"):
        layout = _json(tree.read("oci-layout", 4096), "oci-layout", label)
        if layout.get("imageLayoutVersion") not in ("1.0.0", "1.0.1", "1.1.0"):
            raise InvalidInput(
                f"{label}: unsupported imageLayoutVersion {layout.get('imageLayoutVersion')!r}"
            )
    index = _json(tree.read("index.json", MAX_JSON), "index.json", label)
    want = platform or host_platform()
    explicit = platform is not None
    repo = repo_hint or default_repository(label)
    images: list[SourceImage] = []
    seen: set[str] = set()

    def visit(desc: dict[str, Any], names: list[Reference], depth: int) -> None:
        if depth > 8:
            raise InvalidInput(f"{label}: index nesting too deep")
        mt = desc.get("mediaType")
        if mt in INDEX_TYPES:
            sub = _json(read_blob(tree, desc, "index"), "index", label)
            choose(sub.get("manifests") or [], names, depth + 1)
        elif mt in MANIFEST_TYPES or mt is None:
            images.append(_image(tree, desc, names))
        else:
            raise InvalidInput(f"{label}: unsupported manifest media type {mt!r}")

    def choose(manifests: list[Any], names: list[Reference], depth: int) -> None:
        descs = [d for d in manifests if isinstance(d, dict)]
        with_platform = [d for d in descs if from_descriptor(d.get("platform")) is not None]
        if len(with_platform) > 1 or (explicit and with_platform):
            match = [d for d in with_platform if want.matches(from_descriptor(d.get("platform")))]  # type: ignore[arg-type]
            if not match:
                avail = ", ".join(str(from_descriptor(d.get("platform"))) for d in with_platform)
                raise InvalidInput(f"{label}: no image for platform {want} (available: {avail})")
            descs = [match[0]] + [d for d in descs if d not in with_platform]
        for d in descs:
            visit(d, names, depth)

    top = index.get("manifests")
    if not isinstance(top, list) or not top:
        raise InvalidInput(f"{label}: index.json lists no manifests")
    # Top-level entries are distinct images (or indexes) each with its own name.
    for d in top:
        if not isinstance(d, dict):
            raise InvalidInput(f"{label}: invalid descriptor in index.json")
        names = _names_for(d, repo, label)
        if d.get("mediaType") in INDEX_TYPES:
            visit(d, names, 0)
        else:
            key = str(d.get("digest"))
            before = len(images)
            visit(d, names, 0)
            if key in seen:
                # same manifest named twice: merge the names into the first image
                img = images.pop(before)
                for im in images:
                    if im.manifest_digest == img.manifest_digest:
                        im.names.extend(n for n in img.names if n not in im.names)
            seen.add(key)
    if explicit and images:
        for im in images:
            got = Platform(im.config.os or "linux", im.config.architecture or "amd64", im.config.variant)
            if not want.matches(got) and len(images) == 1:
                raise InvalidInput(f"{label}: image platform {got} does not match --platform {want}")
    return images


def _image(tree: Tree, desc: dict[str, Any], names: list[Reference]) -> SourceImage:
    label = tree.label
    raw = read_blob(tree, desc, "manifest")
    man = _json(raw, "manifest", label)
    if man.get("schemaVersion") == 1:
        raise InvalidInput(f"{label}: schema 1 manifests are not supported")
    cdesc = man.get("config")
    if not isinstance(cdesc, dict):
        raise InvalidInput(f"{label}: manifest has no config")
    config = ImageConfig(read_blob(tree, cdesc, "config"))
    config.validate()
    ldescs = man.get("layers") or []
    if not isinstance(ldescs, list):
        raise InvalidInput(f"{label}: manifest layers is not a list")
    diff_ids = config.diff_ids
    if len(ldescs) != len(diff_ids):
        raise InvalidInput(
            f"{label}: layers from manifest don't match image configuration "
            f"({len(ldescs)} layers, {len(diff_ids)} diff_ids)"
        )
    layers = []
    for i, ld in enumerate(ldescs):
        if not isinstance(ld, dict):
            raise InvalidInput(f"{label}: invalid layer descriptor")
        digest = validate_digest(ld.get("digest"), f"{label}: layer digest")
        size = ld.get("size")
        if not isinstance(size, int) or size < 0:
            raise InvalidInput(f"{label}: layer {digest} has an invalid size")
        path = _blob_path(digest)
        if not tree.exists(path):
            raise InvalidInput(f"{label}: layer blob {digest} is missing")
        opener, _actual = tree.opener(path)
        mt = ld.get("mediaType") if isinstance(ld.get("mediaType"), str) else None
        layers.append(
            LayerBlob(
                opener=opener,
                diff_id=diff_ids[i],
                digest=digest,
                size=size,
                media_type=mt,
                compression=None,  # detected from the bytes, as docker does
                description=f"{label}: layer {digest}",
            )
        )
    return SourceImage(
        config=config,
        layers=layers,
        names=list(names),
        manifest_digest=str(desc.get("digest")),
        description=f"{label} manifest {desc.get('digest')}",
    )
