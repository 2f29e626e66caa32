"""Errors of the registry client.

All are :class:`~dockyard.errors.DockyardError` subclasses with a one-line message that names
the registry and, where there is one, the repository, tag or digest
(``127.0.0.1:5000/fx/edge:nope: manifest unknown``).
"""

from __future__ import annotations

from collections.abc import Sequence

from dockyard.errors import DockyardError, NotFound


class RegistryError(DockyardError):
    """A registry answered with an error, or could not be reached.

    ``status`` is the HTTP status (``None`` for connection-level failures); ``codes`` the
    ``errors[].code`` values of the registry's JSON error body (``MANIFEST_UNKNOWN``, ...).
    """

    def __init__(self, message: str, *, status: int | None = None, codes: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.codes = tuple(codes)


class AuthError(RegistryError):
    """401/403: missing or wrong credentials, no access, or an unusable auth challenge."""


class RegistryNotFound(RegistryError, NotFound):
    """404 or an ``*_UNKNOWN`` error code: no such repository, manifest, blob or upload."""


class BlobTransferError(RegistryError):
    """A blob or manifest body arrived broken: early EOF, wrong length or wrong digest."""


class DigestMismatch(BlobTransferError):
    """The content's digest is not the one asked for."""


class ManifestTooLarge(RegistryError):
    """A manifest body is bigger than the 4 MiB that Docker (and dockyard) accept."""


class CredentialError(DockyardError):
    """The docker config file or a ``docker-credential-*`` helper failed."""
