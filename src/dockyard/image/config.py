"""Image configs: kept as the exact bytes (the image ID is their sha256), parsed for reading."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from dockyard.digest import chain_ids, is_digest
from dockyard.errors import InvalidInput


@dataclass(frozen=True)
class ImageConfig:
    raw: bytes

    @cached_property
    def id(self) -> str:
        return "sha256:" + hashlib.sha256(self.raw).hexdigest()

    @cached_property
    def data(self) -> dict[str, Any]:
        try:
            obj = json.loads(self.raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidInput(f"image config is not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise InvalidInput("image config is not a JSON object")
        return obj

    def validate(self) -> ImageConfig:
        """Docker's checks on create: a rootfs with digest diff_ids; history not longer than layers."""
        d = self.data
        rootfs = d.get("rootfs")
        if not isinstance(rootfs, dict):
            raise InvalidInput("invalid image JSON, no RootFS key")
        ids = rootfs.get("diff_ids") or []
        if not isinstance(ids, list) or not all(isinstance(x, str) and is_digest(x) for x in ids):
            raise InvalidInput("image config has invalid rootfs.diff_ids")
        hist = d.get("history") or []
        if not isinstance(hist, list):
            raise InvalidInput("image config has an invalid history")
        nonempty = sum(1 for h in hist if isinstance(h, dict) and not h.get("empty_layer"))
        if hist and nonempty > len(ids):
            raise InvalidInput(
                f"too many non-empty layers in History section ({nonempty} history entries, {len(ids)} layers)"
            )
        return self

    @property
    def diff_ids(self) -> list[str]:
        rootfs = self.data.get("rootfs") or {}
        return list(rootfs.get("diff_ids") or [])

    @cached_property
    def chain_ids(self) -> list[str]:
        return chain_ids(self.diff_ids)

    @property
    def top_chain(self) -> str | None:
        c = self.chain_ids
        return c[-1] if c else None

    @property
    def history(self) -> list[dict[str, Any]]:
        h = self.data.get("history") or []
        return [x for x in h if isinstance(x, dict)]

    @property
    def created(self) -> str:
        return str(self.data.get("created") or "")

    @property
    def architecture(self) -> str:
        return str(self.data.get("architecture") or "")

    @property
    def os(self) -> str:
        return str(self.data.get("os") or "")

    @property
    def variant(self) -> str:
        return str(self.data.get("variant") or "")

    @property
    def container_config(self) -> dict[str, Any]:
        c = self.data.get("config")
        return c if isinstance(c, dict) else {}

    def platform(self) -> str:
        p = f"{self.os or 'linux'}/{self.architecture or 'amd64'}"
        if self.variant:
            p += "/" + self.variant
        return p
