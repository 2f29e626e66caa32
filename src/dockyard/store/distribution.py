"""distribution/: which compressed blob digests belong to which diffIDs (pull/push metadata).

- ``diffid-by-digest/sha256/<blob digest>``: the diffID, as ``sha256:<hex>``, no newline;
- ``v2metadata-by-diffid/sha256/<diffID>``: compact JSON list of
  ``{"Digest","SourceRepository","HMAC"}``, newest last, deduplicated, at most 50.
"""

from __future__ import annotations

import json
import os
from typing import Any

from dockyard.digest import is_digest
from dockyard.gojson import marshal
from dockyard.store.atomic import atomic_write, makedirs, read_text
from dockyard.store.layout import Layout

MAX_METADATA = 50


class DistributionStore:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def diff_id_for(self, digest: str) -> str | None:
        try:
            v = read_text(self.layout.diffid_by_digest(digest)).strip()
        except (OSError, UnicodeDecodeError):
            return None
        return v if is_digest(v) else None

    def metadata_for(self, diff_id: str) -> list[dict[str, Any]]:
        try:
            with open(self.layout.v2metadata_by_diffid(diff_id), "rb") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return []
        return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []

    def digests_for(self, diff_id: str) -> list[str]:
        out: list[str] = []
        for m in self.metadata_for(diff_id):
            d = m.get("Digest")
            if isinstance(d, str) and d not in out:
                out.append(d)
        return out

    def add(self, diff_id: str, digest: str, source_repository: str, hmac: str = "") -> None:
        """Record a pulled/pushed blob (both maps), as dockerd's ``V2MetadataService.Add``."""
        makedirs(self.layout.distribution, 0o700)
        p1 = self.layout.diffid_by_digest(digest)
        makedirs(os.path.dirname(p1), 0o755)
        atomic_write(p1, diff_id.encode(), 0o644)
        entry = {"Digest": digest, "SourceRepository": source_repository, "HMAC": hmac}
        meta = [m for m in self.metadata_for(diff_id) if m != entry]
        meta.append(entry)
        meta = meta[-MAX_METADATA:]
        p2 = self.layout.v2metadata_by_diffid(diff_id)
        makedirs(os.path.dirname(p2), 0o755)
        atomic_write(p2, marshal(meta).encode(), 0o644)
