"""Legacy V1 image JSON and IDs, which ``docker save`` (legacy format) still writes.

For layer *i* of an image, Docker takes a V1Image (for lower layers only ``created`` =
the epoch; for the top layer the image's own V1 fields), marshals it without ``id``, adds
``layer_id`` = chainID[i] and (for i > 0) ``parent`` = ``sha256:<v1id[i-1]>``, sorts the keys,
and hashes that: the v1 ID. The ``<v1id>/json`` file is the V1Image with ``id``, ``parent``
(bare hex) and ``os`` filled in.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from dockyard import gojson
from dockyard.image.config import ImageConfig
from dockyard.image.container_config import container_config

EPOCH = "1970-01-01T00:00:00Z"


def _go_time(s: Any) -> str:
    try:
        return gojson.format_rfc3339nano(gojson.parse_rfc3339(str(s)))
    except ValueError:
        return gojson.ZERO_TIME


def v1_image(cfg: ImageConfig | None) -> dict[str, Any]:
    """The V1Image fields of a config, in Go struct order with Go's omitempty rules."""
    d = cfg.data if cfg is not None else {}
    out: dict[str, Any] = {}
    out["comment"] = d.get("comment") or ""
    out["created"] = (
        _go_time(d["created"])
        if cfg is not None and d.get("created")
        else (EPOCH if cfg is None else gojson.ZERO_TIME)
    )
    out["container"] = d.get("container") or ""
    out["container_config"] = container_config(d.get("container_config") or {})
    out["docker_version"] = d.get("docker_version") or ""
    out["author"] = d.get("author") or ""
    out["config"] = container_config(d.get("config")) if d.get("config") is not None else None
    out["architecture"] = d.get("architecture") or ""
    out["variant"] = d.get("variant") or ""
    out["os"] = d.get("os") or ""
    size = d.get("Size")
    out["Size"] = size if isinstance(size, int) else 0
    return out


def _marshal_v1(v: dict[str, Any], id_: str = "", parent: str = "") -> dict[str, Any]:
    """Apply omitempty and struct order: id, parent, comment, created, container, ..."""
    o: dict[str, Any] = {}
    if id_:
        o["id"] = id_
    if parent:
        o["parent"] = parent
    if v["comment"]:
        o["comment"] = v["comment"]
    o["created"] = v["created"]
    if v["container"]:
        o["container"] = v["container"]
    o["container_config"] = v["container_config"]
    if v["docker_version"]:
        o["docker_version"] = v["docker_version"]
    if v["author"]:
        o["author"] = v["author"]
    if v["config"] is not None:
        o["config"] = v["config"]
    for k in ("architecture", "variant", "os"):
        if v[k]:
            o[k] = v[k]
    if v["Size"]:
        o["Size"] = v["Size"]
    return o


def v1_ids_and_json(cfg: ImageConfig) -> list[tuple[str, bytes]]:
    """(v1id hex, ``json`` file bytes) for each layer of the image, bottom first."""
    chains = cfg.chain_ids
    out: list[tuple[str, bytes]] = []
    parent = ""
    n = len(chains)
    for i, chain in enumerate(chains):
        top = i == n - 1
        v = v1_image(cfg if top else None)
        if not top:
            v["os"] = ""
        # CreateID: marshal without id, round-trip through a map, add layer_id/parent, sort.
        as_map = json.loads(gojson.marshal(_marshal_v1(v)))
        as_map["layer_id"] = chain
        if parent:
            as_map["parent"] = "sha256:" + parent
        id_json = gojson.marshal(as_map, sort_keys=True)
        v1id = hashlib.sha256(id_json.encode()).hexdigest()
        v["os"] = cfg.os
        body = gojson.marshal(_marshal_v1(v, id_=v1id, parent=parent)).encode()
        out.append((v1id, body))
        parent = v1id
    return out
