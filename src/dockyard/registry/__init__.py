"""Registry HTTP client (Docker Registry HTTP API v2 / OCI distribution), credentials and login.

- :mod:`dockyard.registry.client` -- :class:`RegistryClient` (manifests, blobs, uploads, mounts),
  built from :mod:`~dockyard.registry.session`, :mod:`~dockyard.registry.manifests`,
  :mod:`~dockyard.registry.blobs` and :mod:`~dockyard.registry.uploads`;
- :mod:`dockyard.registry.auth` -- challenges, Basic and Bearer token auth;
- :mod:`dockyard.registry.credentials` -- docker's ``config.json`` and credential helpers,
  :func:`logout`; :mod:`dockyard.registry.login` -- :func:`login` (checks, then stores);
- :mod:`dockyard.registry.transport` -- endpoints (https, certs.d, insecure/loopback http), retry timing;
- :mod:`dockyard.registry.errors` -- :class:`RegistryError` and its subclasses.
"""

from dockyard.registry.client import (
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST_V2,
    MANIFEST_LIMIT,
    OCI_INDEX,
    OCI_MANIFEST,
    BlobResponse,
    Manifest,
    RegistryClient,
)
from dockyard.registry.credentials import (
    Credentials,
    CredentialSource,
    CredentialStore,
    logout,
    registry_key,
)
from dockyard.registry.errors import (
    AuthError,
    BlobTransferError,
    CredentialError,
    DigestMismatch,
    ManifestTooLarge,
    RegistryError,
    RegistryNotFound,
)
from dockyard.registry.login import login
from dockyard.registry.transport import RegistryHost, parse_registry

__all__ = [
    "DOCKER_MANIFEST_LIST",
    "DOCKER_MANIFEST_V2",
    "MANIFEST_LIMIT",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "AuthError",
    "BlobResponse",
    "BlobTransferError",
    "CredentialError",
    "CredentialSource",
    "CredentialStore",
    "Credentials",
    "DigestMismatch",
    "Manifest",
    "ManifestTooLarge",
    "RegistryClient",
    "RegistryError",
    "RegistryHost",
    "RegistryNotFound",
    "login",
    "logout",
    "parse_registry",
    "registry_key",
]
