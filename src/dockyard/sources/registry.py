"""A registry as an image source: manifests, platform choice, and resumable layer blobs.

Layer blobs are opened in the extraction workers (one HTTP client per worker; forked processes
must not share one). Each download is mirrored into ``<root>/tmp/dockyard-pull/<digest>.partial``
as it arrives, so an interrupted pull resumes: the next pull replays the partial file and asks the
registry for the rest with an HTTP ``Range`` request.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dockyard.errors import InvalidInput
from dockyard.image.config import ImageConfig
from dockyard.image.platform import Platform, from_descriptor, host_platform
from dockyard.image.reference import Reference
from dockyard.sources.base import LayerBlob, SourceImage

PARTIAL_DIR = "dockyard-pull"
MAX_CONFIG = 8 << 20


def client_for(registry: str, insecure: tuple[str, ...]) -> Any:
    from dockyard.registry import CredentialStore, RegistryClient

    return RegistryClient(registry, insecure_registries=insecure, credentials=CredentialStore())


class ResumableBlob:
    """Reads a blob: first the bytes saved by an earlier attempt, then the rest from the registry
    (appending them to the partial file)."""

    def __init__(self, opener: RegistryBlobOpener) -> None:
        self.o = opener
        self._client: Any = None
        self._resp: Any = None
        self._iter: Any = None
        self._buf = b""
        os.makedirs(os.path.dirname(opener.partial_path), mode=0o700, exist_ok=True)
        self._part = open(opener.partial_path, "a+b")  # noqa: SIM115
        self._part.seek(0)
        self._replay = os.path.getsize(opener.partial_path)
        if self._replay > opener.size:
            self._part.truncate(0)
            self._replay = 0
        self._pos = 0

    def _open_remote(self) -> None:
        self._client = client_for(self.o.registry, self.o.insecure)
        self._resp = self._client.open_blob(
            self.o.repo, self.o.digest, offset=self._pos, size=self.o.size, verify=False
        )
        if self._resp.restarted:
            # the registry ignored Range: skip what we already have
            skip = self._pos
            it = self._resp.iter_bytes(1 << 20)
            while skip > 0:
                chunk = next(it)
                if len(chunk) > skip:
                    self._buf = chunk[skip:]
                    skip = 0
                else:
                    skip -= len(chunk)
            self._iter = it
        else:
            self._iter = self._resp.iter_bytes(1 << 20)

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = 1 << 20
        if self._pos < self._replay:
            data = self._part.read(min(n, self._replay - self._pos))
            self._pos += len(data)
            if self._pos >= self._replay:
                self._part.seek(0, os.SEEK_END)
            return data
        if self._pos >= self.o.size:
            return b""
        if self._iter is None:
            self._open_remote()
        if not self._buf:
            try:
                self._buf = next(self._iter)
            except StopIteration:
                return b""
        data, self._buf = self._buf[:n], self._buf[n:]
        self._part.write(data)
        self._pos += len(data)
        return data

    def close(self) -> None:
        try:
            self._part.flush()
            self._part.close()
        finally:
            if self._resp is not None:
                self._resp.close()
            if self._client is not None:
                self._client.close()


@dataclass(frozen=True)
class RegistryBlobOpener:
    registry: str
    repo: str
    digest: str
    size: int
    partial_path: str
    insecure: tuple[str, ...] = ()

    def open(self) -> ResumableBlob:
        return ResumableBlob(self)

    def forget_partial(self) -> None:
        try:
            os.unlink(self.partial_path)
        except FileNotFoundError:
            pass


ACCEPT = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
)
INDEXES = ACCEPT[:2]
MANIFESTS = ACCEPT[2:4]
SCHEMA1 = ACCEPT[4:]


@dataclass
class PulledManifest:
    image: SourceImage
    top_digest: str
    """Digest of what the reference named (an index, for multi-platform images)."""


def _json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{what} is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise InvalidInput(f"{what} is not a JSON object")
    return obj


def resolve(
    client: Any,
    ref: Reference,
    *,
    platform: Platform | None,
    partial_root: str,
    insecure: tuple[str, ...],
    known_config: Callable[[str], bytes | None] | None = None,
) -> PulledManifest:
    """Resolve ``ref`` to one image. ``known_config(digest)`` returns the config bytes when the image is
    already in the store: then, as ``docker pull`` does, no blob at all is fetched."""
    repo = ref.path
    reference = ref.digest or ref.tag or "latest"
    label = str(ref)
    m = client.get_manifest(repo, reference, ACCEPT)
    top_digest = m.digest
    mt = m.media_type
    if mt in SCHEMA1:
        raise InvalidInput(
            f"{label}: schema 1 manifests are not supported (the image was pushed by a very old client); "
            "re-push it with a current tool"
        )
    if mt in INDEXES:
        index = _json(m.raw, f"{label}: index")
        want = platform or host_platform()
        cands = [d for d in index.get("manifests") or [] if isinstance(d, dict)]
        match = [
            d for d in cands if (p := from_descriptor(d.get("platform"))) is not None and want.matches(p)
        ]
        if not match:
            avail = ", ".join(str(from_descriptor(d.get("platform"))) for d in cands)
            raise InvalidInput(
                f"{label}: no matching manifest for {want} in the manifest list entries (available: {avail})"
            )
        d = match[0]
        m = client.get_manifest(repo, str(d.get("digest")), ACCEPT)
        mt = m.media_type
    if mt not in MANIFESTS:
        raise InvalidInput(f"{label}: unsupported manifest media type {mt!r}")
    man = _json(m.raw, f"{label}: manifest")
    cdesc = man.get("config") or {}
    if not isinstance(cdesc, dict) or not isinstance(cdesc.get("digest"), str):
        raise InvalidInput(f"{label}: manifest has no config")
    from dockyard.digest import validate_digest

    cdigest = validate_digest(cdesc["digest"], f"{label}: config digest")
    size = cdesc.get("size")
    if isinstance(size, int) and size > MAX_CONFIG:
        raise InvalidInput(f"{label}: config is too large ({size} bytes)")
    raw = known_config(cdigest) if known_config is not None else None
    if raw is None:
        with client.open_blob(repo, cdigest, size=size if isinstance(size, int) else None) as r:
            raw = r.read(-1)
    config = ImageConfig(raw)
    if config.id != cdigest:
        raise InvalidInput(f"{label}: config {cdigest}: digest mismatch (got {config.id})")
    config.validate()
    ldescs = man.get("layers") or []
    if not isinstance(ldescs, list) or len(ldescs) != len(config.diff_ids):
        raise InvalidInput(f"{label}: layers from manifest don't match image configuration")
    layers = []
    for ld, diff_id in zip(ldescs, config.diff_ids, strict=True):
        if not isinstance(ld, dict):
            raise InvalidInput(f"{label}: invalid layer descriptor")
        digest = validate_digest(ld.get("digest"), f"{label}: layer digest")
        lsize = ld.get("size")
        if not isinstance(lsize, int) or lsize < 0:
            raise InvalidInput(f"{label}: layer {digest} has no valid size")
        mtl = str(ld.get("mediaType") or "")
        if "foreign" in mtl or "nondistributable" in mtl:
            raise InvalidInput(
                f"{label}: layer {digest} is a foreign (non-distributable) layer; not supported"
            )
        partial = os.path.join(partial_root, digest[7:] + ".partial")
        layers.append(
            LayerBlob(
                opener=RegistryBlobOpener(ref.domain, repo, digest, lsize, partial, insecure),
                diff_id=diff_id,
                digest=digest,
                size=lsize,
                media_type=mtl,
                description=f"{ref.familiar_name}: layer {digest}",
            )
        )
    image = SourceImage(config=config, layers=layers, names=[], manifest_digest=m.digest, description=label)
    return PulledManifest(image, top_digest)
