"""Registry credentials, read and written exactly as the docker CLI does.

The config file is ``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``)::

    {"auths": {"localhost:5000": {"auth": "<base64 user:pass>"},
               "https://index.docker.io/v1/": {"identitytoken": "..."}},
     "credsStore": "pass",
     "credHelpers": {"gcr.io": "gcloud"}}

Lookup for a registry (key: ``https://index.docker.io/v1/`` for Docker Hub, else ``host[:port]``):
``credHelpers[key]`` names a helper, else ``credsStore`` does, else ``auths`` is used (exact key,
then any key whose host part -- scheme and path stripped -- is the registry's). A helper is the
program ``docker-credential-<name>``: ``get`` reads the server URL on stdin and prints
``{"ServerURL", "Username", "Secret"}`` (``Username`` ``<token>`` means ``Secret`` is an identity
token); ``store`` reads that JSON; ``erase`` reads the server URL.

Writing (:func:`~dockyard.registry.login.login`, :meth:`CredentialStore.store`, :meth:`CredentialStore.erase`) keeps every
other key of the file, writes ``{"auth": base64("user:pass")}`` (plus ``identitytoken`` when the
registry gave one) as Go's ``json.MarshalIndent(..., "", "\\t")`` would, atomically
(temp file + rename, following a symlinked config.json) with mode 0600. With a helper configured
the secret goes to the helper and the file gets an empty ``{}`` entry, as the docker CLI does.

Not done (unlike the docker CLI): auto-detecting a default ``credsStore`` (secretservice/pass)
when none is configured.

API::

    Credentials(username="", password="", identity_token="")
    CredentialStore(config_dir=None)        .get(registry) / .store(registry, creds) / .erase(registry)
    # login(registry, username, password, ...) is in dockyard.registry.login (it uses the client)
    logout(registry, *, store=None) -> bool                                        # was logged in
    registry_key(registry) -> str
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dockyard.gojson import go_string
from dockyard.registry.errors import CredentialError
from dockyard.registry.transport import _HUB_ALIASES, DOCKER_HUB_AUTH_KEY, strip_scheme

HELPER_PREFIX = "docker-credential-"
HELPER_TIMEOUT = 60.0
TOKEN_USERNAME = "<token>"
_NOT_FOUND = "credentials not found in native keychain"


@dataclass(frozen=True)
class Credentials:
    """A user name and password, or an identity (OAuth refresh) token."""

    username: str = ""
    password: str = ""
    identity_token: str = ""

    def __repr__(self) -> str:  # never print secrets
        return f"Credentials(username={self.username!r}, password=***, identity_token={'***' if self.identity_token else ''!r})"

    @property
    def has_basic(self) -> bool:
        return bool(self.username or self.password)


class CredentialSource(Protocol):
    """Anything that hands out credentials for a registry name (``docker.io``, ``host:port``)."""

    def get(self, registry: str) -> Credentials | None: ...


def registry_key(registry: str) -> str:
    """The config-file key of a registry: ``https://index.docker.io/v1/`` for Docker Hub, else ``host[:port]``."""
    host = strip_scheme(registry)
    if host.lower() in _HUB_ALIASES or registry.strip() == DOCKER_HUB_AUTH_KEY:
        return DOCKER_HUB_AUTH_KEY
    return host


def _same_registry(key: str, registry: str) -> bool:
    return registry_key(key) == registry_key(registry)


def default_config_dir() -> Path:
    d = os.environ.get("DOCKER_CONFIG")
    if d:
        return Path(d)
    return Path.home() / ".docker"


# ----------------------------------------------------------------------------------- Go JSON
def go_marshal_indent(obj: Any, indent: str = "\t") -> str:
    """``json.MarshalIndent(obj, "", indent)`` for dicts (insertion order), lists and scalars."""
    out: list[str] = []
    _indent_encode(obj, out, indent, 0)
    return "".join(out)


def _indent_encode(obj: Any, out: list[str], indent: str, level: int) -> None:
    if isinstance(obj, Mapping):
        if not obj:
            out.append("{}")
            return
        out.append("{")
        first = True
        for k, v in obj.items():
            out.append("\n" if first else ",\n")
            first = False
            out.append(indent * (level + 1) + go_string(str(k)) + ": ")
            _indent_encode(v, out, indent, level + 1)
        out.append("\n" + indent * level + "}")
    elif isinstance(obj, list | tuple):
        if not obj:
            out.append("[]")
            return
        out.append("[")
        for i, v in enumerate(obj):
            out.append("\n" if i == 0 else ",\n")
            out.append(indent * (level + 1))
            _indent_encode(v, out, indent, level + 1)
        out.append("\n" + indent * level + "]")
    elif isinstance(obj, str):
        out.append(go_string(obj))
    elif obj is None or isinstance(obj, bool | int | float):
        out.append(json.dumps(obj))
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


# ----------------------------------------------------------------------------------- the store
class CredentialStore:
    """The docker CLI's credential store: config.json plus credential helpers.

    ``config_dir`` defaults to ``$DOCKER_CONFIG`` or ``~/.docker``. The file is read afresh on
    every call, so changes by a concurrent ``docker login`` are seen.
    """

    def __init__(self, config_dir: str | os.PathLike[str] | None = None) -> None:
        self.config_dir = Path(config_dir) if config_dir is not None else default_config_dir()

    @property
    def config_path(self) -> Path:
        return self.config_dir / "config.json"

    def __repr__(self) -> str:
        return f"CredentialStore({str(self.config_dir)!r})"

    # ---------------------------------------------------------------- reading
    def load(self) -> dict[str, Any]:
        """The parsed config file (``{}`` when it does not exist)."""
        p = self.config_path
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise CredentialError(f"cannot read {p}: {e.strerror}") from None
        if not data.strip():
            return {}
        try:
            cfg = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise CredentialError(f"invalid docker config file {p}: {e}") from None
        if not isinstance(cfg, dict):
            raise CredentialError(f"invalid docker config file {p}: not a JSON object")
        return cfg

    def helper_for(self, registry: str, cfg: Mapping[str, Any] | None = None) -> str | None:
        """The credential helper name used for ``registry`` (credHelpers, then credsStore)."""
        if cfg is None:
            cfg = self.load()
        key = registry_key(registry)
        helpers = cfg.get("credHelpers")
        if isinstance(helpers, dict):
            for k in (key, strip_scheme(registry)):
                h = helpers.get(k)
                if isinstance(h, str) and h:
                    return h
            for k, h in helpers.items():
                if isinstance(h, str) and h and _same_registry(k, registry):
                    return h
        store = cfg.get("credsStore")
        if isinstance(store, str) and store:
            return store
        return None

    def get(self, registry: str) -> Credentials | None:
        """Credentials for ``registry`` (``docker.io``, ``host:port``, a URL), or None."""
        cfg = self.load()
        key = registry_key(registry)
        helper = self.helper_for(registry, cfg)
        if helper is not None:
            return self._helper_get(helper, key)
        entry = self._file_entry(cfg, registry)
        if entry is None:
            return None
        return self._decode_entry(entry, key)

    def _file_entry(self, cfg: Mapping[str, Any], registry: str) -> dict[str, Any] | None:
        auths = cfg.get("auths")
        if not isinstance(auths, dict):
            return None
        key = registry_key(registry)
        e = auths.get(key)
        if isinstance(e, dict):
            return e
        for k, v in auths.items():
            if isinstance(v, dict) and _same_registry(k, registry):
                return v
        return None

    def _decode_entry(self, entry: Mapping[str, Any], key: str) -> Credentials | None:
        username = str(entry.get("username") or "")
        password = str(entry.get("password") or "")
        auth = entry.get("auth")
        if isinstance(auth, str) and auth:
            try:
                decoded = base64.b64decode(auth, validate=False).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise CredentialError(f"invalid auth for {key} in {self.config_path}") from None
            user, sep, pw = decoded.partition(":")
            if not sep:
                raise CredentialError(
                    f"invalid auth for {key} in {self.config_path}: no ':' in the decoded value"
                )
            username, password = user, pw.strip("\x00")
        token = str(entry.get("identitytoken") or "")
        creds = Credentials(username, password, token)
        if not (creds.has_basic or creds.identity_token):
            return None
        return creds

    # ---------------------------------------------------------------- writing
    def store(self, registry: str, creds: Credentials) -> str:
        """Save ``creds`` for ``registry`` (helper or file, as the docker CLI does); returns the key."""
        cfg = self.load()
        key = registry_key(registry)
        helper = self.helper_for(registry, cfg)
        if helper is not None:
            self._helper_store(helper, key, creds)
        auths = cfg.get("auths")
        if not isinstance(auths, dict):
            auths = {}
        old = auths.get(key)
        email = old.get("email") if isinstance(old, dict) else None
        # AuthConfig's field order; with a helper only the (deprecated) email stays in the file
        entry: dict[str, Any] = {}
        if helper is None and creds.has_basic:
            entry["auth"] = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        if isinstance(email, str) and email:
            entry["email"] = email
        if helper is None and creds.identity_token:
            entry["identitytoken"] = creds.identity_token
        auths[key] = entry
        self._save(_with_auths(cfg, auths))
        return key

    def erase(self, registry: str) -> bool:
        """Remove the credentials of ``registry``; True when there were any (file entry or helper)."""
        cfg = self.load()
        key = registry_key(registry)
        helper = self.helper_for(registry, cfg)
        found = False
        if helper is not None:
            found = self._helper_erase(helper, key)
        auths = cfg.get("auths")
        if isinstance(auths, dict):
            doomed = [k for k in auths if k == key or _same_registry(k, registry)]
            if doomed:
                found = True
                for k in doomed:
                    del auths[k]
                self._save(_with_auths(cfg, auths))
        return found

    def _save(self, cfg: Mapping[str, Any]) -> None:
        """Write config.json atomically (mode 0600, through a symlink, keeping the owner)."""
        path = self.config_path
        if path.is_symlink():
            path = Path(os.path.realpath(path))
        d = path.parent
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise CredentialError(f"cannot create {d}: {e.strerror}") from None
        data = go_marshal_indent(cfg).encode("utf-8")
        try:
            old_st: os.stat_result | None = path.stat()
        except OSError:
            old_st = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=path.name, dir=d)  # mode 0600
        except OSError as e:
            raise CredentialError(f"cannot write {path}: {e.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            if old_st is not None and os.geteuid() == 0:
                with contextlib.suppress(OSError):
                    os.chown(tmp, old_st.st_uid, old_st.st_gid)
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise CredentialError(f"cannot write {path}: {e.strerror}") from None

    # ---------------------------------------------------------------- helpers
    def _run_helper(self, helper: str, action: str, stdin: str) -> subprocess.CompletedProcess[str]:
        prog = HELPER_PREFIX + helper
        exe = shutil.which(prog)
        if exe is None:
            raise CredentialError(
                f"credential helper {prog} (configured in {self.config_path}) not found in $PATH"
            )
        try:
            return subprocess.run(
                [exe, action],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=HELPER_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CredentialError(
                f"credential helper {prog} {action} timed out after {HELPER_TIMEOUT:.0f}s"
            ) from None
        except OSError as e:
            raise CredentialError(f"cannot run credential helper {prog}: {e.strerror}") from None

    @staticmethod
    def _helper_message(p: subprocess.CompletedProcess[str]) -> str:
        msg = (p.stdout.strip() or p.stderr.strip() or f"exit status {p.returncode}").splitlines()
        return msg[0] if msg else f"exit status {p.returncode}"

    def _helper_get(self, helper: str, key: str) -> Credentials | None:
        p = self._run_helper(helper, "get", key)
        if p.returncode != 0:
            msg = self._helper_message(p)
            if _NOT_FOUND in (p.stdout + p.stderr):
                return None
            raise CredentialError(f"error getting credentials for {key} from {HELPER_PREFIX}{helper}: {msg}")
        try:
            data = json.loads(p.stdout)
        except ValueError:
            raise CredentialError(
                f"credential helper {HELPER_PREFIX}{helper} printed invalid JSON for {key}"
            ) from None
        if not isinstance(data, dict):
            raise CredentialError(f"credential helper {HELPER_PREFIX}{helper} printed invalid JSON for {key}")
        user = str(data.get("Username") or "")
        secret = str(data.get("Secret") or "")
        if user == TOKEN_USERNAME:
            return Credentials(identity_token=secret) if secret else None
        if not (user or secret):
            return None
        return Credentials(user, secret)

    def _helper_store(self, helper: str, key: str, creds: Credentials) -> None:
        if creds.identity_token:
            payload = {"ServerURL": key, "Username": TOKEN_USERNAME, "Secret": creds.identity_token}
        else:
            payload = {"ServerURL": key, "Username": creds.username, "Secret": creds.password}
        p = self._run_helper(helper, "store", json.dumps(payload))
        if p.returncode != 0:
            raise CredentialError(
                f"error storing credentials for {key} in {HELPER_PREFIX}{helper}: {self._helper_message(p)}"
            )

    def _helper_erase(self, helper: str, key: str) -> bool:
        p = self._run_helper(helper, "erase", key)
        if p.returncode != 0:
            if _NOT_FOUND in (p.stdout + p.stderr):
                return False
            raise CredentialError(
                f"error erasing credentials for {key} from {HELPER_PREFIX}{helper}: {self._helper_message(p)}"
            )
        return True


def _with_auths(cfg: Mapping[str, Any], auths: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with ``auths`` replaced (sorted like a Go map; placed first when new)."""
    sorted_auths = {k: auths[k] for k in sorted(auths)}
    if "auths" in cfg:
        return {k: (sorted_auths if k == "auths" else v) for k, v in cfg.items()}
    return {"auths": sorted_auths, **cfg}


# ----------------------------------------------------------------------------------- logout
def logout(registry: str, *, store: CredentialStore | None = None) -> bool:
    """Forget the credentials of ``registry``; False when none were stored ("Not logged in")."""
    if store is None:
        store = CredentialStore()
    return store.erase(registry)
