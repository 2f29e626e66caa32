"""The session with one registry: endpoint choice, ping, auth, sending with retries, errors.

:class:`RegistrySession` is the base of :class:`~dockyard.registry.client.RegistryClient`: it
picks the endpoint (:mod:`dockyard.registry.transport`), pings ``/v2/``, runs the challenge
flow (:mod:`dockyard.registry.auth`, to which it is the :class:`~dockyard.registry.auth.
TokenTransport`), sends requests with retries and backoff, and turns responses into one-line
:class:`~dockyard.registry.errors.RegistryError` messages. The API on top of it lives in
:mod:`~dockyard.registry.manifests`, :mod:`~dockyard.registry.blobs` and
:mod:`~dockyard.registry.uploads`.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from dockyard import __version__
from dockyard.registry.auth import Authenticator, parse_challenges, scope_for
from dockyard.registry.credentials import Credentials, CredentialSource
from dockyard.registry.errors import (
    AuthError,
    RegistryError,
    RegistryNotFound,
)
from dockyard.registry.transport import (
    DEFAULT_CERTS_DIR,
    RETRY_STATUSES,
    Backoff,
    Endpoint,
    RegistryHost,
    candidate_endpoints,
    certs_dir_for,
    make_ssl_context,
    parse_registry,
    parse_retry_after,
)

MAX_REDIRECTS = 10
_ERROR_BODY_LIMIT = 64 << 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

_REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")





ContentSource = bytes | Callable[[], Iterable[bytes]] | None


def _hasher(digest: str) -> Any:
    m = _DIGEST_RE.match(digest)
    algo = m.group(1) if m else ""
    if algo not in ("sha256", "sha384", "sha512"):
        return None
    return hashlib.new(algo)


def is_digest_reference(reference: str) -> bool:
    return ":" in reference and bool(_DIGEST_RE.match(reference))


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    port = url.port
    if port is None:
        port = 443 if url.scheme == "https" else 80
    return url.scheme, url.host, port



class RegistrySession:
    """The session with one registry (see :mod:`dockyard.registry.client` for the API)."""

    def __init__(
        self,
        registry: str,
        *,
        insecure_registries: Sequence[str] = (),
        credentials: CredentialSource | Credentials | None = None,
        timeout: float = 60,
        retries: int = 5,
        user_agent: str | None = None,
        certs_dir: str | None = DEFAULT_CERTS_DIR,
        backoff: float = 0.5,
        backoff_max: float = 10.0,
        retry_budget: float = 120.0,
    ) -> None:
        self.registry: RegistryHost = parse_registry(registry)
        self.name = self.registry.name
        self.insecure_registries = tuple(insecure_registries)
        self.timeout = timeout
        self.retries = max(0, retries)
        self.user_agent = user_agent or f"dockyard/{__version__}"
        self.certs_dir = certs_dir
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.retry_budget = retry_budget
        self._credentials_source = credentials
        self._auth: Authenticator | None = None
        self._endpoint: Endpoint | None = None
        self._http: httpx.Client | None = None
        self._ready_lock = threading.Lock()
        self._push_repos: set[str] = set()
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self.name!r})"

    def close(self) -> None:
        """Close the connection pool (the client cannot be used afterwards)."""
        self._closed = True
        if self._http is not None:
            self._http.close()
            self._http = None

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint in use (resolved by the first request)."""
        self._ensure_ready()
        assert self._endpoint is not None
        return self._endpoint

    @property
    def base_url(self) -> str:
        return self.endpoint.base_url

    # ------------------------------------------------------------------ set-up: endpoint, ping, auth
    def _new_backoff(self) -> Backoff:
        return Backoff(self.retries, self.backoff, self.backoff_max, self.retry_budget)

    def _resolve_credentials(self) -> Credentials | None:
        src = self._credentials_source
        if src is None or isinstance(src, Credentials):
            return src
        return src.get(self.name)

    def _make_http(self, ep: Endpoint) -> httpx.Client:
        certs = certs_dir_for(self.registry, self.certs_dir) if ep.scheme == "https" and ep.verify else None
        ctx = make_ssl_context(ep.verify, certs)
        # like Go's ProxyFromEnvironment: never proxy loopback hosts
        no_proxy: dict[str, httpx.BaseTransport | None] = {
            "all://localhost": None,
            "all://127.0.0.1": None,
            "all://[::1]": None,
        }
        if self.registry.is_loopback:
            h = self.registry.host
            no_proxy[f"all://[{h}]" if ":" in h else f"all://{h}"] = None
        return httpx.Client(
            mounts=no_proxy,
            verify=ctx,
            timeout=httpx.Timeout(self.timeout),
            trust_env=True,
            http1=True,
            http2=False,
            follow_redirects=False,
            headers={"User-Agent": self.user_agent},
        )

    def _ensure_ready(self) -> None:
        if self._closed:
            raise RegistryError(f"{self.name}: the registry client is closed")
        if self._endpoint is not None:
            return
        with self._ready_lock:
            if self._endpoint is None:
                self._setup()

    def _setup(self) -> None:
        """Find a working endpoint with ``GET /v2/`` and learn the auth challenge from it."""
        creds = self._resolve_credentials()
        auth = Authenticator(self, creds)
        self._auth = auth
        candidates = candidate_endpoints(self.registry, self.insecure_registries, self.certs_dir)
        backoff = self._new_backoff()
        while True:
            failures: list[tuple[Endpoint, httpx.TransportError]] = []
            for i, ep in enumerate(candidates):
                http = self._make_http(ep)
                url = ep.base_url + "/v2/"
                try:
                    resp = http.send(http.build_request("GET", url), stream=True)
                    resp.read()
                except httpx.TransportError as e:
                    http.close()
                    failures.append((ep, e))
                    continue
                status = resp.status_code
                if ep.scheme == "http" and status == 400 and i + 1 < len(candidates):
                    http.close()  # plain HTTP sent to a TLS port: try https next
                    continue
                if status in RETRY_STATUSES:
                    delay = backoff.next_delay(parse_retry_after(resp.headers.get("Retry-After")))
                    if delay is None:
                        http.close()
                        raise self._error(resp, self.name)
                    http.close()
                    candidates = [ep]  # it answered: stay with it
                    time.sleep(delay)
                    break
                if status == 401:
                    challenges = parse_challenges(resp.headers.get_list("www-authenticate"))
                    if not auth.set_challenges(challenges):
                        http.close()
                        raise AuthError(
                            f"{self.name}: {url} returned 401 Unauthorized {_no_challenge(challenges)}",
                            status=401,
                        )
                elif not 200 <= status < 300:
                    http.close()
                    raise RegistryError(
                        f"{self.name}: {url} returned HTTP {status} {resp.reason_phrase}: "
                        "not a Docker registry (v2 API)",
                        status=status,
                    )
                self._http = http
                self._endpoint = ep
                return
            else:
                if not failures:
                    raise RegistryError(f"{self.name}: no endpoint answered as a registry")
                if not all(_retryable(e) for _, e in failures) or not backoff.sleep():
                    # the first candidate's failure is the telling one (TLS problem, refused, ...)
                    ep, err = failures[0]
                    raise self._transport_error(err, self.name, ep.base_url + "/v2/")

    # ------------------------------------------------------------------ sending
    def _url(self, path: str) -> str:
        return self.base_url + path

    def _scopes(self, repo: str, *, push: bool = False) -> list[str]:
        if push:
            self._push_repos.add(repo)
        actions = ["pull", "push"] if push or repo in self._push_repos else ["pull"]
        return [scope_for(repo, actions)]

    def _send_once(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        headers: dict[str, str] | None = None,
        content: ContentSource = None,
        params: Sequence[tuple[str, str]] | None = None,
        data: dict[str, str] | None = None,
        scopes: Sequence[str] | None = None,
        follow: bool = False,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One request (following redirects if asked), streamed; raises httpx errors as they are."""
        self._ensure_ready()
        http = self._http
        auth = self._auth
        assert http is not None and auth is not None
        hdrs = dict(headers or {})
        if scopes is not None:
            authz = auth.authorization(scopes)
            if authz:
                hdrs["Authorization"] = authz
        target = httpx.URL(url)
        first = _origin(target)
        body: Any = content() if callable(content) else content
        for _ in range(MAX_REDIRECTS + 1):
            req = http.build_request(
                method,
                target,
                headers=hdrs,
                content=body,
                params=list(params) if params else None,
                data=data,
                timeout=httpx.Timeout(timeout) if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
            resp = http.send(req, stream=True)
            location = resp.headers.get("location")
            if follow and resp.status_code in _REDIRECTS and location:
                resp.close()
                target = req.url.join(location)
                params = None
                if _origin(target) != first:
                    hdrs.pop("Authorization", None)
                if resp.status_code == 303:
                    method = "GET" if method != "HEAD" else "HEAD"
                continue
            return resp
        raise RegistryError(f"{self.name}: too many redirects for {url}")

    def _send(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        what: str,
        headers: dict[str, str] | None = None,
        content: ContentSource = None,
        params: Sequence[tuple[str, str]] | None = None,
        data: dict[str, str] | None = None,
        scopes: Sequence[str] | None = None,
        follow: bool = False,
        retry: bool = True,
        backoff: Backoff | None = None,
    ) -> httpx.Response:
        """A request with auth renewal and retries; returns the final response, whatever its status."""
        if backoff is None:
            backoff = self._new_backoff()
        reauthed = False
        while True:
            try:
                resp = self._send_once(
                    method,
                    url,
                    headers=headers,
                    content=content,
                    params=params,
                    data=data,
                    scopes=scopes,
                    follow=follow,
                )
            except httpx.TransportError as e:
                if retry and _retryable(e) and backoff.sleep():
                    continue
                raise self._transport_error(e, what, str(url)) from None
            if resp.status_code == 401 and scopes is not None and not reauthed and self._reauth(resp, scopes):
                resp.close()
                reauthed = True
                continue
            if retry and resp.status_code in RETRY_STATUSES:
                delay = backoff.next_delay(parse_retry_after(resp.headers.get("Retry-After")))
                if delay is not None:
                    resp.close()
                    time.sleep(delay)
                    continue
            return resp

    def _reauth(self, resp: httpx.Response, scopes: Sequence[str]) -> bool:
        """Adopt a 401's challenge; True when retrying with new credentials/token may help."""
        auth = self._auth
        assert auth is not None
        challenges = parse_challenges(resp.headers.get_list("www-authenticate"))
        old = auth.challenge
        if not auth.set_challenges(challenges):
            return False
        new = auth.challenge
        assert new is not None
        if new.scheme == "bearer":
            auth.invalidate(scopes)
            return True
        # Basic: helps only if we did not send credentials before and have some now
        return (
            (old is None or old.scheme != "basic")
            and auth.credentials is not None
            and auth.credentials.has_basic
        )

    def token_request(
        self,
        method: str,
        url: str,
        *,
        params: Sequence[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
    ) -> httpx.Response:
        """A request to a token server (used by :class:`~dockyard.registry.auth.Authenticator`)."""
        return self._send(
            method,
            url,
            what=f"{self.name}: token server {url}",
            params=params,
            headers=headers,
            data=data,
            follow=True,
        )

    # ------------------------------------------------------------------ errors
    def _transport_error(self, e: httpx.TransportError, what: str, url: str = "") -> RegistryError:
        where = f" ({url})" if url else ""
        reason = str(e) or type(e).__name__
        cause = e.__cause__ or e.__context__
        if isinstance(e, httpx.TimeoutException):
            return RegistryError(f"{what}: timed out after {self.timeout:g}s talking to {self.name}{where}")
        if isinstance(e, httpx.ConnectError):
            if isinstance(cause, ssl.SSLError) or "SSL" in reason or "CERTIFICATE" in reason:
                hint = ""
                if "CERTIFICATE_VERIFY_FAILED" in reason:
                    hint = (
                        f"; add the registry's CA certificate to {self.certs_dir or DEFAULT_CERTS_DIR}/"
                        f"{self.registry.name}/ca.crt or list it as an insecure registry"
                    )
                return RegistryError(f"{what}: TLS handshake with {self.name} failed{where}: {reason}{hint}")
            return RegistryError(f"{what}: cannot connect to {self.name}{where}: {reason}")
        return RegistryError(f"{what}: connection to {self.name} failed{where}: {reason}")

    def _error(self, resp: httpx.Response, what: str) -> RegistryError:
        """The error for a failed response (reads at most 64 KiB of its body, closes it)."""
        status = resp.status_code
        body = b""
        try:
            if resp.is_stream_consumed:
                body = resp.content
            else:
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) >= _ERROR_BODY_LIMIT:
                        break
        except (httpx.HTTPError, httpx.StreamError):
            pass
        finally:
            resp.close()
        codes: list[str] = []
        parts: list[str] = []
        try:
            doc = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError):
            doc = None
        errs = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errs, list):
            for err in errs:
                if not isinstance(err, dict):
                    continue
                code = str(err.get("code") or "")
                message = str(err.get("message") or "")
                codes.append(code.upper())
                parts.append(_format_registry_error(code, message, err.get("detail")))
        auth = self._auth
        sent_creds = auth is not None and auth.sends_credentials
        if status == 401:
            challenges = parse_challenges(resp.headers.get_list("www-authenticate"))
            usable = [c for c in challenges if c.scheme == "basic" or (c.scheme == "bearer" and c.realm)]
            if not usable and (auth is None or auth.challenge is None):
                text = f"the registry returned 401 Unauthorized {_no_challenge(challenges)}"
                return AuthError(f"{what}: {text}", status=status, codes=codes)
            basic = auth is not None and auth.challenge is not None and auth.challenge.scheme == "basic"
            if sent_creds and basic:
                text = "unauthorized: incorrect username or password"
            else:
                text = "; ".join(parts) or "unauthorized: authentication required"
                if not sent_creds:
                    text += f"; not logged in to {self.name}"
            return AuthError(f"{what}: {text}", status=status, codes=codes)
        if not parts:
            text = f"HTTP {status} {resp.reason_phrase}".rstrip()
            snippet = body.decode("utf-8", "replace").strip().splitlines()[0][:200] if body.strip() else ""
            if snippet and not snippet.startswith("<"):
                text += f": {snippet}"
            if status == 404:
                text = "not found (HTTP 404)"
        else:
            text = "; ".join(parts)
        cls: type[RegistryError] = RegistryError
        if status == 403 or any(c in ("UNAUTHORIZED", "DENIED") for c in codes):
            cls = AuthError
        elif status == 404 or any(c.endswith("_UNKNOWN") for c in codes):
            cls = RegistryNotFound
        return cls(f"{what}: {text}", status=status, codes=codes)

    # ------------------------------------------------------------------ validation
    def _check_repo(self, repo: str) -> None:
        if not _REPO_RE.match(repo) or len(repo) > 255:
            raise RegistryError(f"{self.name}: invalid repository name {repo!r}")

    def _check_digest(self, repo: str, digest: str) -> None:
        if not _DIGEST_RE.match(digest):
            raise RegistryError(f"{self.name}/{repo}: invalid digest {digest!r}")

    def _check_reference(self, repo: str, reference: str) -> str:
        """``:tag`` or ``@digest`` suffix for messages; raises on a malformed reference."""
        self._check_repo(repo)
        if is_digest_reference(reference):
            return f"{self.name}/{repo}@{reference}"
        if not _TAG_RE.match(reference):
            raise RegistryError(f"{self.name}/{repo}: invalid tag or digest {reference!r}")
        return f"{self.name}/{repo}:{reference}"

    # ------------------------------------------------------------------ login
    def check_login(self) -> str:
        """Verify the credentials (``GET /v2/`` with the challenge flow).

        Returns an identity token when the token server handed one out (else ``""``); raises
        :class:`AuthError` ("unauthorized: incorrect username or password") when they are wrong.
        """
        self._ensure_ready()
        auth = self._auth
        assert auth is not None
        if auth.challenge is None:
            return ""  # the registry needs no authentication
        identity = auth.check_login()
        what = self.name
        resp = self._send("GET", self._url("/v2/"), what=what, scopes=[])
        try:
            if resp.status_code != 200:
                raise self._error(resp, what)
        finally:
            resp.close()
        return identity



def _retryable(e: httpx.TransportError) -> bool:
    """Transport failures worth retrying: not a certificate that failed verification."""
    return not (isinstance(e, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(e))


def _no_challenge(challenges: Sequence[Any]) -> str:
    if not challenges:
        return "without an authentication challenge"
    names = ", ".join(sorted({c.scheme.capitalize() for c in challenges}))
    return f"without a usable authentication challenge (WWW-Authenticate: {names})"


def _format_registry_error(code: str, message: str, detail: object) -> str:
    """``manifest unknown: <message>`` from a registry JSON error (Docker's errcode format)."""
    code_text = code.lower().replace("_", " ").strip()
    msg = message.strip()
    if not code_text:
        text = msg or "unknown error"
    elif not msg or msg.lower() == code_text:
        text = code_text
    else:
        text = f"{code_text}: {msg}"
    if isinstance(detail, str) and detail and detail not in text and len(detail) <= 200:
        text += f" ({detail})"
    elif isinstance(detail, list):
        needed = []
        for d in detail:
            if isinstance(d, dict) and d.get("Action"):
                needed.append(f"{d.get('Type', 'repository')}:{d.get('Name', '')}:{d.get('Action')}")
        if needed:
            text += f" (needs {', '.join(needed)})"
    return text

