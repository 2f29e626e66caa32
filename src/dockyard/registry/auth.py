"""Registry authentication: ``WWW-Authenticate`` challenges, HTTP Basic and Bearer tokens.

The flow is Docker's: ``GET /v2/`` tells the scheme. With ``Basic`` every request carries the
user's credentials. With ``Bearer realm=...,service=...`` a token is fetched from the realm for
the scopes a request needs (``repository:<repo>:pull`` or ``pull,push``; a cross-repository
mount asks for both repositories) -- with the user's credentials as HTTP Basic when there are any,
or by the OAuth2 refresh-token POST when the credentials are an identity token -- and cached per
scope set until it expires. The token server's JSON may name it ``token`` or ``access_token``.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from dockyard.registry.credentials import Credentials
from dockyard.registry.errors import AuthError

MIN_TOKEN_LIFETIME = 60
CLIENT_ID = "dockyard"


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: scheme (lower case) and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scopes(self) -> list[str]:
        s = self.params.get("scope", "")
        return [x for x in s.split(" ") if x]


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN68 = r"[A-Za-z0-9\-._~+/]+=*"
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_RE_SCHEME = re.compile(rf"\s*({_TOKEN})")
_RE_PARAM = re.compile(rf"\s*({_TOKEN})\s*=\s*(?:{_QUOTED}|({_TOKEN}))")
_RE_TOKEN68 = re.compile(rf"\s*({_TOKEN68})\s*(?=,|$)")
_RE_COMMA = re.compile(r"\s*,")


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` header values (RFC 7235; several challenges per value allowed)."""
    out: list[Challenge] = []
    for value in values:
        pos = 0
        n = len(value)
        while pos < n:
            m = _RE_COMMA.match(value, pos)
            if m:
                pos = m.end()
                continue
            m = _RE_SCHEME.match(value, pos)
            if not m:
                break
            scheme = m.group(1).lower()
            pos = m.end()
            params: dict[str, str] = {}
            m68 = _RE_TOKEN68.match(value, pos)
            pm = _RE_PARAM.match(value, pos)
            if m68 and not pm:
                pos = m68.end()
            else:
                while True:
                    pm = _RE_PARAM.match(value, pos)
                    if not pm:
                        break
                    key = pm.group(1).lower()
                    val = pm.group(2) if pm.group(2) is not None else pm.group(3)
                    if pm.group(2) is not None:
                        val = re.sub(r"\\(.)", r"\1", val)
                    params[key] = val
                    pos = pm.end()
                    cm = _RE_COMMA.match(value, pos)
                    if not cm:
                        break
                    # a comma may separate params or start the next challenge
                    if not _RE_PARAM.match(value, cm.end()):
                        pos = cm.end()
                        break
                    pos = cm.end()
            out.append(Challenge(scheme, params))
            if pos < n and not _RE_COMMA.match(value, pos) and not _RE_SCHEME.match(value, pos):
                break
    return out


def scope_for(repo: str, actions: Sequence[str]) -> str:
    return f"repository:{repo}:{','.join(actions)}"


class TokenTransport(Protocol):
    """What the auth flow needs of the session it serves: its registry's name for messages
    and a way to send a request to a token server
    (:class:`~dockyard.registry.session.RegistrySession` is one)."""

    @property
    def name(self) -> str: ...

    def token_request(
        self,
        method: str,
        url: str,
        *,
        params: Sequence[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
    ) -> httpx.Response: ...


@dataclass
class _Token:
    value: str
    expires: float  # time.monotonic()


class Authenticator:
    """Adds ``Authorization`` headers for one registry; thread-safe.

    ``challenge`` is set from the ping (``GET /v2/``) or from a later 401.
    """

    def __init__(self, client: TokenTransport, credentials: Credentials | None) -> None:
        self._client = client
        self.credentials = credentials
        self.challenge: Challenge | None = None
        self._tokens: dict[tuple[str, str, tuple[str, ...]], _Token] = {}
        self._lock = threading.Lock()
        self.refresh_token = ""

    # ------------------------------------------------------------------ challenges
    def set_challenges(self, challenges: Sequence[Challenge]) -> bool:
        """Adopt the first usable challenge (Bearer preferred); False if none is usable."""
        usable = [c for c in challenges if c.scheme == "bearer" and c.realm] or [
            c for c in challenges if c.scheme == "basic"
        ]
        if not usable:
            return False
        with self._lock:
            self.challenge = usable[0]
        return True

    @property
    def sends_credentials(self) -> bool:
        """True when requests (or token requests) carry the user's credentials."""
        c = self.credentials
        return c is not None and (c.has_basic or bool(c.identity_token))

    # ------------------------------------------------------------------ headers
    def authorization(self, scopes: Sequence[str]) -> str | None:
        """The ``Authorization`` value for a request needing ``scopes`` (None: send none)."""
        ch = self.challenge
        if ch is None:
            return None
        if ch.scheme == "basic":
            return self._basic()
        return "Bearer " + self.token(scopes)

    def _basic(self) -> str | None:
        c = self.credentials
        if c is None or not c.has_basic:
            return None
        return "Basic " + base64.b64encode(f"{c.username}:{c.password}".encode()).decode()

    def invalidate(self, scopes: Sequence[str]) -> None:
        ch = self.challenge
        if ch is None:
            return
        with self._lock:
            self._tokens.pop((ch.realm, ch.service, tuple(sorted(set(scopes)))), None)

    def token(self, scopes: Sequence[str], *, offline: bool = False) -> str:
        """A (cached) bearer token for ``scopes`` from the current challenge's realm."""
        ch = self.challenge
        assert ch is not None and ch.scheme == "bearer"
        key = (ch.realm, ch.service, tuple(sorted(set(scopes))))
        with self._lock:
            tok = self._tokens.get(key)
            if tok is not None and tok.expires > time.monotonic():
                return tok.value
        value, lifetime = self._fetch_token(ch, list(key[2]), offline=offline)
        with self._lock:
            self._tokens[key] = _Token(value, time.monotonic() + lifetime * 0.9)
        return value

    # ------------------------------------------------------------------ token server
    def _fetch_token(self, ch: Challenge, scopes: list[str], *, offline: bool) -> tuple[str, float]:
        c = self.credentials
        realm = ch.realm
        try:
            url = httpx.URL(realm)
        except (httpx.InvalidURL, TypeError):
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise AuthError(
                f"{self._client.name}: invalid token realm {realm!r} in the authentication challenge"
            )
        if c is not None and c.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": c.identity_token,
                "client_id": CLIENT_ID,
                "access_type": "offline" if offline else "online",
            }
            if ch.service:
                form["service"] = ch.service
            if scopes:
                form["scope"] = " ".join(scopes)
            resp = self._client.token_request("POST", realm, data=form)
            if resp.status_code != 404:
                return self._token_from(resp, realm, sent_credentials=True)
            resp.close()
        params: list[tuple[str, str]] = []
        if ch.service:
            params.append(("service", ch.service))
        params += [("scope", s) for s in scopes]
        headers = {}
        sent = False
        if c is not None and c.has_basic:
            headers["Authorization"] = (
                "Basic " + base64.b64encode(f"{c.username}:{c.password}".encode()).decode()
            )
            sent = True
            if offline:
                params += [("offline_token", "true"), ("client_id", CLIENT_ID)]
        resp = self._client.token_request("GET", realm, params=params, headers=headers)
        return self._token_from(resp, realm, sent_credentials=sent)

    def _token_from(self, resp: httpx.Response, realm: str, *, sent_credentials: bool) -> tuple[str, float]:
        name = self._client.name
        try:
            body = resp.read()
        finally:
            resp.close()
        if resp.status_code in (401, 403):
            if sent_credentials:
                detail = _token_error_detail(body) or "incorrect username or password"
                raise AuthError(f"{name}: unauthorized: {detail}", status=resp.status_code)
            detail = _token_error_detail(body) or "authentication required"
            raise AuthError(
                f"{name}: unauthorized: {detail}; not logged in to {name}", status=resp.status_code
            )
        if resp.status_code != 200:
            detail = _token_error_detail(body)
            raise AuthError(
                f"{name}: token server {realm} returned HTTP {resp.status_code}"
                + (f": {detail}" if detail else ""),
                status=resp.status_code,
            )
        try:
            data: Any = resp.json()
        except ValueError:
            raise AuthError(f"{name}: token server {realm} returned invalid JSON") from None
        if not isinstance(data, dict):
            raise AuthError(f"{name}: token server {realm} returned invalid JSON")
        value = data.get("token") or data.get("access_token")
        if not isinstance(value, str) or not value:
            raise AuthError(f"{name}: token server {realm} returned no token")
        refresh = data.get("refresh_token")
        if isinstance(refresh, str) and refresh:
            self.refresh_token = refresh
        try:
            lifetime = float(data.get("expires_in") or MIN_TOKEN_LIFETIME)
        except (TypeError, ValueError):
            lifetime = MIN_TOKEN_LIFETIME
        return value, max(lifetime, MIN_TOKEN_LIFETIME)

    def check_login(self) -> str:
        """Verify the credentials against the current challenge; returns an identity token or ''."""
        ch = self.challenge
        if ch is None or ch.scheme != "bearer":
            return ""
        self.token([], offline=True)
        return self.refresh_token


def _token_error_detail(body: bytes) -> str:
    """The message of a token server's JSON error (``details``, ``error_description``, ``errors``)."""
    import json

    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace").strip()
        return text.splitlines()[0][:200] if text and "<" not in text[:1] else ""
    if not isinstance(data, dict):
        return ""
    for k in ("details", "error_description", "message"):
        v = data.get(k)
        if isinstance(v, str) and v:
            return v
    errs = data.get("errors")
    if isinstance(errs, list):
        msgs = [str(e.get("message")) for e in errs if isinstance(e, dict) and e.get("message")]
        if msgs:
            return "; ".join(msgs)
    v = data.get("error")
    return v if isinstance(v, str) else ""


__all__ = ["Authenticator", "Challenge", "TokenTransport", "parse_challenges", "scope_for"]
