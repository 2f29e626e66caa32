"""Manifests: get (digest-verified, size-limited), head and put, with media-type sniffing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from dockyard.registry.errors import DigestMismatch, ManifestTooLarge, RegistryError
from dockyard.registry.session import RegistrySession, _hasher, is_digest_reference

MANIFEST_LIMIT = 4 << 20

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
_GENERIC_TYPES = frozenset({"", "application/json", "text/plain", "application/octet-stream"})


@dataclass(frozen=True)
class Manifest:
    """A manifest (or index) exactly as the registry served it."""

    raw: bytes
    media_type: str
    digest: str



def _sniff_media_type(header: str, raw: bytes) -> str:
    """Media type from ``Content-Type``, or from the body when the header is generic."""
    mt = header.split(";", 1)[0].strip().lower()
    if mt not in _GENERIC_TYPES:
        return mt
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return mt or "application/octet-stream"
    if not isinstance(doc, dict):
        return mt
    body_mt = doc.get("mediaType")
    if isinstance(body_mt, str) and body_mt:
        return body_mt
    if doc.get("schemaVersion") == 1:
        return DOCKER_MANIFEST_V1_SIGNED if "signatures" in doc else DOCKER_MANIFEST_V1
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    return mt



class ManifestAPI(RegistrySession):
    """Manifest requests of :class:`~dockyard.registry.client.RegistryClient`."""

    def get_manifest(self, repo: str, reference: str, accept: Sequence[str]) -> Manifest:
        """GET a manifest or index (by tag or digest), verified and at most 4 MiB."""
        what = self._check_reference(repo, reference)
        url = self._url(f"/v2/{repo}/manifests/{reference}")
        headers = {"Accept": ", ".join(accept)} if accept else {}
        backoff = self._new_backoff()
        while True:
            resp = self._send(
                "GET",
                url,
                what=what,
                headers=headers,
                scopes=self._scopes(repo),
                follow=True,
                backoff=backoff,
            )
            if resp.status_code != 200:
                raise self._error(resp, what)
            try:
                raw = self._read_limited(resp, what)
            except httpx.TransportError as e:
                resp.close()
                if backoff.sleep():
                    continue
                raise self._transport_error(e, what, url) from None
            break
        media_type = _sniff_media_type(resp.headers.get("content-type", ""), raw)
        digest = self._verify_manifest_digest(raw, reference, resp.headers.get("docker-content-digest"), what)
        return Manifest(raw, media_type, digest)

    def _read_limited(self, resp: httpx.Response, what: str) -> bytes:
        try:
            cl = resp.headers.get("content-length")
            if cl is not None and cl.isdigit() and int(cl) > MANIFEST_LIMIT:
                raise ManifestTooLarge(f"{what}: manifest too large ({int(cl)} bytes, the limit is 4 MiB)")
            buf = bytearray()
            for chunk in resp.iter_bytes():
                buf += chunk
                if len(buf) > MANIFEST_LIMIT:
                    raise ManifestTooLarge(f"{what}: manifest too large (more than 4 MiB)")
            return bytes(buf)
        finally:
            resp.close()

    def _verify_manifest_digest(self, raw: bytes, reference: str, header: str | None, what: str) -> str:
        computed = "sha256:" + hashlib.sha256(raw).hexdigest()
        if is_digest_reference(reference):
            h = _hasher(reference)
            if h is None:
                raise RegistryError(f"{what}: unsupported digest algorithm")
            h.update(raw)
            got = reference.split(":", 1)[0] + ":" + h.hexdigest()
            if got != reference:
                raise DigestMismatch(
                    f"{what}: manifest digest mismatch: the registry sent content with digest {got}"
                )
            return reference
        if header and header.startswith("sha256:") and header.strip() != computed:
            raise DigestMismatch(
                f"{what}: manifest digest mismatch: Docker-Content-Digest is {header.strip()}, content is {computed}"
            )
        return computed

    def head_manifest(self, repo: str, reference: str, accept: Sequence[str]) -> tuple[str, str] | None:
        """(digest, media type) of a manifest, or None when the registry does not have it."""
        what = self._check_reference(repo, reference)
        url = self._url(f"/v2/{repo}/manifests/{reference}")
        headers = {"Accept": ", ".join(accept)} if accept else {}
        resp = self._send("HEAD", url, what=what, headers=headers, scopes=self._scopes(repo), follow=True)
        try:
            if resp.status_code == 404:
                return None
            if resp.status_code != 200:
                raise self._error(resp, what)
            digest = (resp.headers.get("docker-content-digest") or "").strip()
            media_type = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        finally:
            resp.close()
        if is_digest_reference(reference) and not digest:
            digest = reference
        if not digest or media_type in _GENERIC_TYPES:
            m = self.get_manifest(repo, reference, accept)
            return m.digest, m.media_type
        if is_digest_reference(reference) and digest != reference:
            raise DigestMismatch(f"{what}: registry reports digest {digest}")
        return digest, media_type

    def put_manifest(self, repo: str, reference: str, raw: bytes, media_type: str) -> str:
        """PUT a manifest under a tag or its digest; returns its digest."""
        what = self._check_reference(repo, reference)
        computed = "sha256:" + hashlib.sha256(raw).hexdigest()
        if is_digest_reference(reference) and reference.startswith("sha256:") and reference != computed:
            raise DigestMismatch(f"{what}: the manifest's digest is {computed}")
        url = self._url(f"/v2/{repo}/manifests/{reference}")
        resp = self._send(
            "PUT",
            url,
            what=what,
            headers={"Content-Type": media_type},
            content=bytes(raw),
            scopes=self._scopes(repo, push=True),
        )
        try:
            if resp.status_code not in (200, 201, 202, 204):
                raise self._error(resp, what)
            header = (resp.headers.get("docker-content-digest") or "").strip()
        finally:
            resp.close()
        if header.startswith("sha256:") and header != computed:
            raise DigestMismatch(
                f"{what}: the registry stored the manifest as {header}, its digest is {computed}"
            )
        return computed

