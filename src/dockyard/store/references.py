"""repositories.json: tags and digest references (``reference/store.go``).

``{"Repositories":{"<familiar name>":{"<familiar ref>":"sha256:<image id>"}}}``, compact, keys
sorted, no trailing newline, 0600, rewritten whole and atomically on every change.
"""

from __future__ import annotations

import json
import os
from typing import Any

from dockyard.errors import InvalidInput, StoreCorrupt
from dockyard.gojson import marshal
from dockyard.image.reference import Reference, parse_reference
from dockyard.store.atomic import atomic_write, makedirs
from dockyard.store.layout import Layout


class ReferenceStore:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def load(self) -> dict[str, dict[str, str]]:
        try:
            with open(self.layout.repositories_json, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return {}
        if not raw.strip():
            return {}
        try:
            obj: Any = json.loads(raw)
        except ValueError as e:
            raise StoreCorrupt(f"{self.layout.repositories_json} is not valid JSON: {e}") from None
        repos = obj.get("Repositories") if isinstance(obj, dict) else None
        if not isinstance(repos, dict):
            return {}
        return {
            str(k): {str(a): str(b) for a, b in v.items()} for k, v in repos.items() if isinstance(v, dict)
        }

    def ensure(self) -> None:
        """dockerd writes an empty store on first start; so do we."""
        if not os.path.exists(self.layout.repositories_json):
            self.save({})

    def save(self, repos: dict[str, dict[str, str]]) -> None:
        makedirs(self.layout.image_root, 0o700)
        clean = {k: v for k, v in repos.items() if v}
        data = marshal({"Repositories": clean}, sort_all=True).encode()
        atomic_write(self.layout.repositories_json, data, 0o600)

    def all(self) -> list[tuple[Reference, str]]:
        out = []
        for _name, refs in sorted(self.load().items()):
            for key, image_id in sorted(refs.items()):
                try:
                    out.append((parse_reference(key), image_id))
                except Exception:
                    continue
        return out

    def references_to(self, image_id: str) -> list[Reference]:
        return [r for r, i in self.all() if i == image_id]

    def get(self, ref: Reference) -> str | None:
        repos = self.load()
        return repos.get(ref.familiar_name, {}).get(ref.store_key())

    def add(
        self,
        ref: Reference,
        image_id: str,
        *,
        force: bool = True,
        repos: dict[str, dict[str, str]] | None = None,
    ) -> str | None:
        """Point ``ref`` at ``image_id``; returns the image it pointed to before (if other)."""
        if ref.familiar_name == "sha256":
            raise InvalidInput("refusing to create an ambiguous tag using digest algorithm as name")
        own = repos is None
        data = self.load() if repos is None else repos
        key = ref.store_key()
        repo = data.setdefault(ref.familiar_name, {})
        old = repo.get(key)
        if old is not None and old != image_id and ref.digest and not force:
            raise InvalidInput(f"Cannot overwrite digest {ref.digest}")
        repo[key] = image_id
        if own:
            self.save(data)
        return old if old != image_id else None

    def delete_many(self, refs: list[Reference]) -> None:
        """Remove several references in one atomic rewrite."""
        data = self.load()
        for ref in refs:
            name = ref.familiar_name
            data.get(name, {}).pop(ref.store_key(), None)
            if name in data and not data[name]:
                data.pop(name)
        self.save(data)
