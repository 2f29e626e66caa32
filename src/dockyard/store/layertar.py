"""Layer tars rebuilt from the store through tar-split (dockerd's layer ``TarStream``).

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
from typing import Any

from dockyard.archive.tarsplit import AssemblyError, assemble
from dockyard.errors import StoreCorrupt
from dockyard.store import Store
from dockyard.store.layers import Layer


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
