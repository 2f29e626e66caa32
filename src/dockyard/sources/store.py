"""The store as an image source: images by name, layer tars rebuilt through tar-split.

A layer's tar is reassembled from ``tar-split.json.gz`` and the files of its ``diff/``; its
sha256 is checked against the diffID while it streams (Docker's ``verifiedReadCloser``), so a
damaged layer is never passed on silently.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dockyard.archive.tarsplit import AssemblyError, assemble
from dockyard.errors import DockyardError, InvalidInput, LayerError, NotFound, StoreCorrupt
from dockyard.image.reference import InvalidReference, Reference, parse_reference
from dockyard.store import Store
from dockyard.store.layers import Layer


@dataclass
class SelectedImage:
    image_id: str
    refs: list[Reference] = field(default_factory=list)


def select_images(store: Store, names: list[str]) -> list[SelectedImage]:
    """docker save's reading of names: a tag, a repository (all its tags), or an ID."""
    out: dict[str, SelectedImage] = {}

    def add(image_id: str, ref: Reference | None) -> None:
        sel = out.setdefault(image_id, SelectedImage(image_id))
        if ref is not None and ref.tag and ref not in sel.refs:
            sel.refs.append(ref)

    for name in names:
        ref: Reference | None
        try:
            ref = parse_reference(name)
        except InvalidReference:
            ref = None
        if ref is not None and ref.tag is None and ref.digest is None:
            tagged = [(r, i) for r, i in store.refs.all() if r.name == ref.name]
            if tagged:
                for r, i in tagged:
                    add(i, r)
                continue
            add(store.resolve_image(name), None)
            continue
        image_id = store.resolve_image(name)
        if ref is not None and store.refs.get(ref) == image_id:
            add(image_id, ref)
        else:
            add(image_id, None)
    return list(out.values())


def layer_tar_size(tar_split_path: str) -> int:
    """Length of the tar a tar-split file rebuilds (segments plus file sizes)."""
    total = 0
    try:
        with gzip.open(tar_split_path, "rb") as f:
            for line in f:
                obj: Any = json.loads(line)
                if obj.get("type") == 2:
                    p = obj.get("payload")
                    if p:
                        total += len(base64.b64decode(p))
                else:
                    total += int(obj.get("size", 0) or 0)
    except FileNotFoundError:
        raise StoreCorrupt(f"{tar_split_path} is missing: the layer cannot be exported") from None
    except (OSError, ValueError, EOFError) as e:
        raise StoreCorrupt(f"{tar_split_path} is damaged: {e}") from None
    return total


def write_layer_tar(store: Store, layer: Layer, write: Callable[[bytes | memoryview], Any]) -> int:
    """Stream the layer's tar to ``write``, checking its sha256 against the diffID."""
    h = hashlib.sha256()

    def out(b: bytes | memoryview) -> None:
        h.update(b)
        write(b)

    path = store.layers.tar_split_path(layer.chain_id)
    try:
        with gzip.open(path, "rb") as ts:
            n = assemble(ts, store.driver.diff_path(layer.cache_id), out)  # type: ignore[arg-type]
    except FileNotFoundError:
        raise StoreCorrupt(
            f"layer {layer.chain_id}: tar-split data is missing; it cannot be exported"
        ) from None
    except AssemblyError as e:
        raise StoreCorrupt(f"layer {layer.chain_id}: {e}") from None
    except (OSError, EOFError) as e:
        raise StoreCorrupt(f"layer {layer.chain_id}: cannot read tar-split data: {e}") from None
    got = "sha256:" + h.hexdigest()
    if got != layer.diff_id:
        raise StoreCorrupt(
            f"layer {layer.chain_id}: reassembled tar does not match its diffID "
            f"(expected {layer.diff_id}, got {got}): the layer's files were changed or damaged"
        )
    return n


__all__ = [
    "DockyardError",
    "InvalidInput",
    "LayerError",
    "NotFound",
    "SelectedImage",
    "layer_tar_size",
    "select_images",
    "write_layer_tar",
]
