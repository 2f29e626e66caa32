"""``docker login``: check the credentials against the registry, then store them.

It sits above the client (which it uses to check) and the credential store (where it saves),
so that neither of those needs the other.
"""

from __future__ import annotations

from typing import Any

from dockyard.registry.client import RegistryClient
from dockyard.registry.credentials import Credentials, CredentialStore


def login(
    registry: str,
    username: str,
    password: str,
    *,
    store: CredentialStore | None = None,
    **client_options: Any,
) -> str:
    """Check ``username``/``password`` against ``registry`` (``GET /v2/`` with the challenge
    flow), then save them like ``docker login``. Returns the key they were stored under.

    ``client_options`` go to :class:`~dockyard.registry.client.RegistryClient`
    (``insecure_registries``, ``certs_dir``, ``timeout``, ...). When the token server hands out a
    refresh token, that identity token is stored instead of the password (as docker does).
    """
    if store is None:
        store = CredentialStore()
    creds = Credentials(username, password)
    client = RegistryClient(registry, credentials=creds, **client_options)
    try:
        identity_token = client.check_login()
    finally:
        client.close()
    if identity_token:
        creds = Credentials(username, "", identity_token)
    return store.store(registry, creds)
