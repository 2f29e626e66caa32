"""A synchronous Docker Registry HTTP API v2 client (distribution / OCI distribution spec).

::

    client = RegistryClient("localhost:5000", credentials=CredentialStore())
    m = client.get_manifest("fx/edge", "1", accept=[OCI_MANIFEST, DOCKER_MANIFEST_V2])
    with client.open_blob("fx/edge", digest, size=desc_size) as blob:
        for chunk in blob.iter_bytes(1 << 20):
            ...
    client.upload_blob("fx/copy", digest, size, lambda: read_chunks(path))
    client.put_manifest("fx/copy", "1", m.raw, m.media_type)
    client.close()

API (all methods raise :class:`~dockyard.registry.errors.RegistryError` subclasses with one-line
messages such as ``127.0.0.1:5000/fx/edge:nope: manifest unknown``):

``RegistryClient(registry, *, insecure_registries=(), credentials=None, timeout=60, retries=5,
user_agent="dockyard/<version>", certs_dir="/etc/docker/certs.d", backoff=0.5, backoff_max=10,
retry_budget=120)``
    ``registry`` is ``docker.io`` (served by ``https://registry-1.docker.io``), ``host[:port]``,
    ``[::1]:5000`` ... ``credentials`` is a :class:`~dockyard.registry.credentials.CredentialStore`
    (or anything with ``get(registry) -> Credentials | None``), a fixed
    :class:`~dockyard.registry.credentials.Credentials`, or None (anonymous). Transport rules
    (https, certs.d, plain http for loopback and insecure registries, proxies): see
    :mod:`dockyard.registry.transport`; auth flow: :mod:`dockyard.registry.auth`. The client is
    thread-safe (one connection pool, one token cache) and a context manager.

``get_manifest(repo, reference, accept) -> Manifest``
    ``Manifest(raw, media_type, digest)``; the digest is verified when ``reference`` is one, and
    against ``Docker-Content-Digest``; bodies over 4 MiB are refused (:class:`ManifestTooLarge`).
``head_manifest(repo, reference, accept) -> tuple[str, str] | None``
    (digest, media type), None on 404.
``blob_exists(repo, digest) -> int | None``
    the size (-1 when the registry does not say), None on 404.
``open_blob(repo, digest, *, offset=0, size=None, verify=True) -> BlobResponse``
    a stream (see :class:`BlobResponse`); redirects are followed (``Authorization`` is dropped
    when one leaves the registry's origin); broken connections are resumed with ``Range``.
``mount_blob(repo, digest, from_repo) -> bool``
    cross-repository mount; False (upload session cancelled) when the registry would not mount.
``upload_blob(repo, digest, size, chunks, *, chunk_size=None) -> None``
    ``POST`` then one streamed ``PUT`` (``chunk_size=None``) or ``PATCH`` per ``chunk_size``
    bytes and a closing ``PUT``. ``chunks`` is an iterable of bytes, or a callable returning a
    fresh one -- only then (or for re-iterable inputs such as lists) can a failed upload be
    restarted from the beginning in a new session.
``put_manifest(repo, reference, raw, media_type) -> str``
    the manifest's digest.
``check_login() -> str``
    verifies the credentials (used by :func:`~dockyard.registry.login.login`).
``close()``

Retries: 429/500/502/503/504 and connection failures/timeouts of idempotent requests are
retried ``retries`` times with exponential backoff and jitter (``Retry-After`` honoured) inside
``retry_budget`` seconds of waiting; other 4xx are never retried.
"""

from __future__ import annotations

from dockyard.registry.blobs import DEFAULT_CHUNK, BlobResponse
from dockyard.registry.manifests import (
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST_V1,
    DOCKER_MANIFEST_V1_SIGNED,
    DOCKER_MANIFEST_V2,
    MANIFEST_LIMIT,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
    ManifestAPI,
)
from dockyard.registry.session import RegistrySession, is_digest_reference
from dockyard.registry.uploads import UploadAPI


class RegistryClient(ManifestAPI, UploadAPI):
    """Client for one registry; see the module docstring for the API."""


__all__ = [
    "DEFAULT_CHUNK",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_MANIFEST_V1",
    "DOCKER_MANIFEST_V1_SIGNED",
    "DOCKER_MANIFEST_V2",
    "MANIFEST_LIMIT",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "BlobResponse",
    "Manifest",
    "RegistryClient",
    "RegistrySession",
    "is_digest_reference",
]
