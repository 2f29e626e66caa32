"""Human rendering of ``dockyard explain``."""

from __future__ import annotations

from typing import Any

import click

from dockyard.cli.output import human_size


def _rel(path: str, root: str) -> str:
    return path[len(root) + 1 :] if path.startswith(root + "/") else path


def print_explain(info: dict[str, Any], root: str) -> None:
    e = click.echo
    e(f"Image {info['id']}")
    tags = ", ".join(info["repo_tags"]) or "<none>"
    e(f"  tags:      {tags}")
    if info["repo_digests"]:
        e(f"  digests:   {', '.join(info['repo_digests'])}")
    e(f"  platform:  {info['platform']}")
    e(f"  config:    {_rel(info['config_path'], root)}")
    e(f"             image ID = sha256(config bytes) = {info['config_sha256']}")
    if info.get("parent"):
        e(f"  parent:    {info['parent']}")
    e(f"  size:      {human_size(info['size'])} ({info['size']} bytes) in {len(info['layers'])} layers")
    e("")
    for layer in info["layers"]:
        i = layer["index"]
        e(f"Layer {i}")
        digests = layer.get("blob_digests") or []
        e(f"  blob digest:  {', '.join(digests) if digests else '(not known: loaded, not pulled)'}")
        e(f"  diffID:       {layer['diff_id']}   sha256 of the uncompressed tar")
        e(f"  chainID:      {layer['chain_id']}")
        if layer["parent_chain_id"] is None:
            e("                = diffID (bottom layer)")
        else:
            e(f'                = sha256("<chainID[{i - 1}]> <diffID[{i}]>")')
            e(f"                  chainID[{i - 1}] = {layer['parent_chain_id']}")
        if "error" in layer:
            e(f"  PROBLEM:      {layer['error']}")
            e("")
            continue
        e(f"  layerdb:      {_rel(layer['layerdb_dir'], root)}/")
        e(f"  cache-id:     {layer['cache_id']}   (random, not derived from any digest)")
        e(f"  overlay2 dir: {_rel(layer['overlay2_dir'], root)}/diff")
        if "link" in layer:
            e(f"  short link:   {_rel(layer['link_path'], root)} -> {layer['link_target']}")
        if layer.get("lower"):
            e(f"  lower:        {layer['lower']}")
        n = layer.get("entries")
        e(
            f"  size:         {human_size(layer['size'])} ({layer['size']} bytes), {n if n is not None else '?'} tar entries"
        )
        e("")
