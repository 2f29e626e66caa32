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
    verifies the credentials (used by :func:`~dockyard.registry.credentials.login`).
``close()``

Retries: 429/500/502/503/504 and connection failures/timeouts of idempotent requests are
retried ``retries`` times with exponential backoff and jitter (``Retry-After`` honoured) inside
``retry_budget`` seconds of waiting; other 4xx are never retried.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from dockyard import __version__
from dockyard.registry.auth import Authenticator, parse_challenges, scope_for
from dockyard.registry.credentials import Credentials, CredentialSource
from dockyard.registry.errors import (
    AuthError,
    BlobTransferError,
    DigestMismatch,
    ManifestTooLarge,
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

MANIFEST_LIMIT = 4 << 20
DEFAULT_CHUNK = 1 << 20
MAX_REDIRECTS = 10
_ERROR_BODY_LIMIT = 64 << 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
_GENERIC_TYPES = frozenset({"", "application/json", "text/plain", "application/octet-stream"})

_REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_UNSATISFIED_RANGE_RE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$")

ContentSource = bytes | Callable[[], Iterable[bytes]] | None


@dataclass(frozen=True)
class Manifest:
    """A manifest (or index) exactly as the registry served it."""

    raw: bytes
    media_type: str
    digest: str


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


class _Transient(Exception):
    """An upload step failed in a way that a new upload session might fix."""

    def __init__(self, error: RegistryError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class _UploadSource:
    """The bytes of a blob to upload; restartable when given a factory or a re-iterable."""

    def __init__(self, chunks: Iterable[bytes] | Callable[[], Iterable[bytes]]) -> None:
        self._factory: Callable[[], Iterable[bytes]] | None = None
        self._iterable: Iterable[bytes] | None = None
        if callable(chunks) and not isinstance(chunks, Iterable):
            self._factory = chunks
        else:
            self._iterable = chunks
        self.started = False

    @property
    def can_restart(self) -> bool:
        if not self.started or self._factory is not None:
            return True
        it = self._iterable
        return it is not None and iter(it) is not it

    def iterate(self) -> Iterator[bytes]:
        self.started = True
        src = self._factory() if self._factory is not None else self._iterable
        assert src is not None
        for chunk in src:
            if chunk:
                yield bytes(chunk) if not isinstance(chunk, bytes) else chunk


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Regroup a byte stream into pieces of exactly ``size`` bytes (the last may be shorter)."""
    buf = bytearray()
    for c in chunks:
        buf += c
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


class RegistryClient:
    """Client for one registry; see the module docstring for the API."""

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
    def __enter__(self) -> RegistryClient:
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

    def _token_request(
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

    # ------------------------------------------------------------------ manifests
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

    # ------------------------------------------------------------------ blobs: read
    def blob_exists(self, repo: str, digest: str) -> int | None:
        """Size of the blob in ``repo`` (-1 when not told), or None when it is not there."""
        self._check_repo(repo)
        self._check_digest(repo, digest)
        what = f"{self.name}/{repo}@{digest}"
        resp = self._send(
            "HEAD",
            self._url(f"/v2/{repo}/blobs/{digest}"),
            what=what,
            headers={"Accept-Encoding": "identity"},
            scopes=self._scopes(repo),
            follow=True,
        )
        try:
            if resp.status_code == 404:
                return None
            if resp.status_code != 200:
                raise self._error(resp, what)
            cl = resp.headers.get("content-length")
            return int(cl) if cl is not None and cl.isdigit() else -1
        finally:
            resp.close()

    def open_blob(
        self, repo: str, digest: str, *, offset: int = 0, size: int | None = None, verify: bool = True
    ) -> BlobResponse:
        """Open a blob for streaming from ``offset`` (see :class:`BlobResponse`).

        ``size`` (from the descriptor) is checked against what the registry reports. ``verify``
        checks the digest at the end of the stream when it starts at byte 0.
        """
        self._check_repo(repo)
        self._check_digest(repo, digest)
        if offset < 0 or (size is not None and offset > size):
            raise RegistryError(f"{self.name}/{repo}@{digest}: invalid offset {offset}")
        backoff = self._new_backoff()
        resp, start, total = self._blob_request(repo, digest, offset, backoff)
        what = f"{self.name}/{repo}@{digest}"
        if size is not None and total is not None and total != size:
            resp.close()
            raise BlobTransferError(f"{what}: the registry reports {total} bytes, expected {size}")
        return BlobResponse(
            self,
            repo,
            digest,
            resp,
            start=start,
            requested=offset,
            size=total if total is not None else size,
            verify=verify,
            backoff=backoff,
        )

    def _blob_request(
        self, repo: str, digest: str, offset: int, backoff: Backoff
    ) -> tuple[httpx.Response, int, int | None]:
        """GET a blob from ``offset``: (response, first byte position, total size or None)."""
        what = f"{self.name}/{repo}@{digest}"
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        url = self._url(f"/v2/{repo}/blobs/{digest}")
        resp = self._send(
            "GET", url, what=what, headers=headers, scopes=self._scopes(repo), follow=True, backoff=backoff
        )
        cl = resp.headers.get("content-length")
        length = int(cl) if cl is not None and cl.isdigit() else None
        if resp.status_code == 200:
            return resp, 0, length
        if resp.status_code == 206 and offset:
            m = _CONTENT_RANGE_RE.match(resp.headers.get("content-range", ""))
            if not m:
                resp.close()
                raise BlobTransferError(
                    f"{what}: the registry answered a range request with a bad Content-Range "
                    f"{resp.headers.get('content-range')!r}"
                )
            start, end = int(m.group(1)), int(m.group(2))
            total = int(m.group(3)) if m.group(3) != "*" else None
            if start != offset:
                resp.close()
                raise BlobTransferError(
                    f"{what}: asked for bytes from {offset}, the registry sent them from {start}"
                )
            if length is not None and length != end - start + 1:
                resp.close()
                raise BlobTransferError(
                    f"{what}: Content-Length {length} does not match Content-Range bytes {start}-{end}"
                )
            return (
                resp,
                start,
                total if total is not None else (end + 1 if length is None else start + length),
            )
        if resp.status_code == 416 and offset:
            m = _UNSATISFIED_RANGE_RE.match(resp.headers.get("content-range", ""))
            if m and int(m.group(1)) == offset:
                return resp, offset, offset  # nothing left to read (the stream yields nothing)
        raise self._error(resp, what)

    # ------------------------------------------------------------------ blobs: write
    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Mount ``digest`` from ``from_repo`` into ``repo``; False if the registry will not."""
        self._check_repo(repo)
        self._check_repo(from_repo)
        self._check_digest(repo, digest)
        what = f"{self.name}/{repo}@{digest}"
        scopes = [*self._scopes(repo, push=True), scope_for(from_repo, ["pull"])]
        resp = self._send(
            "POST",
            self._url(f"/v2/{repo}/blobs/uploads/"),
            what=what,
            params=[("mount", digest), ("from", from_repo)],
            headers={"Content-Length": "0"},
            content=b"",
            scopes=scopes,
        )
        try:
            if resp.status_code == 201:
                got = (resp.headers.get("docker-content-digest") or "").strip()
                if got and got != digest:
                    raise DigestMismatch(f"{what}: the registry mounted {got}")
                return True
            if resp.status_code == 202:
                location = resp.headers.get("location")
                if location:
                    self._cancel_upload(resp.request.url.join(location), repo)
                return False
            raise self._error(resp, f"{what}: mount from {from_repo}")
        finally:
            resp.close()

    def upload_blob(
        self,
        repo: str,
        digest: str,
        size: int,
        chunks: Iterable[bytes] | Callable[[], Iterable[bytes]],
        *,
        chunk_size: int | None = None,
    ) -> None:
        """Upload a blob of ``size`` bytes (monolithic PUT, or chunked PATCHes when ``chunk_size``)."""
        self._check_repo(repo)
        self._check_digest(repo, digest)
        if size < 0:
            raise RegistryError(f"{self.name}/{repo}@{digest}: invalid size {size}")
        if chunk_size is not None and chunk_size <= 0:
            raise RegistryError(f"{self.name}/{repo}@{digest}: invalid chunk size {chunk_size}")
        what = f"{self.name}/{repo}@{digest}"
        source = _UploadSource(chunks)
        backoff = self._new_backoff()
        while True:
            location = self._start_upload(repo, what, backoff)
            try:
                if chunk_size is None:
                    self._put_monolithic(repo, location, digest, size, source, what)
                else:
                    self._put_chunked(repo, location, digest, size, source, chunk_size, what, backoff)
                return
            except _Transient as t:
                self._cancel_upload(location, repo)
                if not source.can_restart:
                    raise RegistryError(
                        f"{t.error} (the blob's source cannot be read again to retry)",
                        status=t.error.status,
                        codes=t.error.codes,
                    ) from None
                if not backoff.sleep(t.retry_after):
                    raise t.error from None
            except BaseException:
                self._cancel_upload(location, repo)
                raise

    def _start_upload(self, repo: str, what: str, backoff: Backoff) -> httpx.URL:
        url = self._url(f"/v2/{repo}/blobs/uploads/")
        resp = self._send(
            "POST",
            url,
            what=what,
            headers={"Content-Length": "0"},
            content=b"",
            scopes=self._scopes(repo, push=True),
            backoff=backoff,
        )
        try:
            if resp.status_code != 202:
                raise self._error(resp, f"{what}: starting the upload")
            location = resp.headers.get("location")
            if not location:
                raise RegistryError(f"{what}: the registry started an upload without a Location")
            return resp.request.url.join(location)
        finally:
            resp.close()

    def _cancel_upload(self, location: httpx.URL, repo: str) -> None:
        """DELETE an upload session; failures are ignored."""
        try:
            resp = self._send_once(
                "DELETE", location, scopes=self._scopes(repo, push=True), timeout=min(self.timeout, 10.0)
            )
            resp.close()
        except (httpx.HTTPError, RegistryError):
            pass

    def _transient_from(self, resp: httpx.Response, what: str) -> _Transient:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        return _Transient(self._error(resp, what), retry_after)

    def _put_monolithic(
        self, repo: str, location: httpx.URL, digest: str, size: int, source: _UploadSource, what: str
    ) -> None:
        def body() -> Generator[bytes, None, None]:
            n = 0
            for chunk in source.iterate():
                n += len(chunk)
                if n > size:
                    raise BlobTransferError(f"{what}: the blob has more than the {size} bytes declared")
                yield chunk
            if n != size:
                raise BlobTransferError(f"{what}: the blob has {n} bytes, {size} declared")

        url = location.copy_merge_params({"digest": digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        gen = body()
        try:
            resp = self._send_once(
                "PUT", url, headers=headers, content=lambda: gen, scopes=self._scopes(repo, push=True)
            )
        except httpx.TransportError as e:
            raise _Transient(self._transport_error(e, what)) from None
        finally:
            gen.close()
        self._finish_upload(resp, digest, what)

    def _finish_upload(self, resp: httpx.Response, digest: str, what: str) -> None:
        try:
            if resp.status_code in RETRY_STATUSES:
                raise self._transient_from(resp, what)
            if resp.status_code not in (201, 204):
                raise self._error(resp, what)
            got = (resp.headers.get("docker-content-digest") or "").strip()
            if got and got != digest:
                raise DigestMismatch(f"{what}: the registry stored the blob as {got}")
        finally:
            resp.close()

    def _put_chunked(
        self,
        repo: str,
        location: httpx.URL,
        digest: str,
        size: int,
        source: _UploadSource,
        chunk_size: int,
        what: str,
        backoff: Backoff,
    ) -> None:
        offset = 0
        for piece in _rechunk(source.iterate(), chunk_size):
            if offset + len(piece) > size:
                raise BlobTransferError(f"{what}: the blob has more than the {size} bytes declared")
            location = self._patch_chunk(repo, location, piece, offset, what, backoff)
            offset += len(piece)
        if offset != size:
            raise BlobTransferError(f"{what}: the blob has {offset} bytes, {size} declared")
        url = location.copy_merge_params({"digest": digest})
        try:
            resp = self._send(
                "PUT",
                url,
                what=what,
                headers={"Content-Length": "0"},
                content=b"",
                scopes=self._scopes(repo, push=True),
                backoff=backoff,
            )
        except RegistryError as e:  # the connection failed, retries included
            if self.blob_exists(repo, digest) == size:
                return  # an earlier PUT went through; its answer was lost
            raise _Transient(e) from None
        if resp.status_code == 404 and self.blob_exists(repo, digest) == size:
            resp.close()  # a retried PUT after one whose answer was lost: the session is gone, the blob is there
            return
        self._finish_upload(resp, digest, what)

    def _patch_chunk(
        self, repo: str, location: httpx.URL, piece: bytes, offset: int, what: str, backoff: Backoff
    ) -> httpx.URL:
        """PATCH one chunk; on a transient failure ask the upload's status and resend or move on."""
        end = offset + len(piece)
        reauthed = False
        while True:
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{end - 1}",
                "Content-Length": str(len(piece)),
            }
            failure: _Transient
            try:
                resp = self._send_once(
                    "PATCH", location, headers=headers, content=piece, scopes=self._scopes(repo, push=True)
                )
            except httpx.TransportError as e:
                failure = _Transient(self._transport_error(e, what))
            else:
                if resp.status_code == 202:
                    loc = resp.headers.get("location")
                    resp.close()
                    return resp.request.url.join(loc) if loc else location
                scopes = self._scopes(repo, push=True)
                if resp.status_code == 401 and not reauthed and self._reauth(resp, scopes):
                    resp.close()  # e.g. the token expired between two chunks: resend with a new one
                    reauthed = True
                    continue
                if resp.status_code not in RETRY_STATUSES:
                    raise self._error(resp, f"{what}: uploading bytes {offset}-{end - 1}")
                failure = self._transient_from(resp, what)
            if not backoff.sleep(failure.retry_after):
                raise failure.error
            stored, location = self._upload_status(repo, location, offset, what, failure)
            if stored == end:
                return location  # the chunk arrived; only the answer was lost
            if stored != offset:
                raise failure

    def _upload_status(
        self, repo: str, location: httpx.URL, offset: int, what: str, failure: _Transient
    ) -> tuple[int, httpx.URL]:
        """Bytes stored so far in an upload session (from ``GET <location>``'s ``Range``)."""
        try:
            resp = self._send_once("GET", location, scopes=self._scopes(repo, push=True))
        except httpx.TransportError:
            raise failure from None
        try:
            if resp.status_code not in (200, 204):
                raise failure
            rng = resp.headers.get("range", "")
            m = re.match(r"^\s*(?:bytes=)?(\d+)-(\d+)\s*$", rng)
            stored = int(m.group(2)) + 1 if m else 0
            if stored == 1 and offset == 0:
                stored = 0  # distribution says "0-0" for an empty upload as well as for one byte
            loc = resp.headers.get("location")
            return stored, (resp.request.url.join(loc) if loc else location)
        finally:
            resp.close()

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


class BlobResponse:
    """A blob being downloaded; iterate with :meth:`iter_bytes` (or :meth:`read`), then close.

    Attributes:

    ``size``
        total size of the blob (from ``Content-Length``/``Content-Range``, else the caller's
        ``size``), or None when neither tells.
    ``offset``
        the blob position of the first byte this stream yields: the requested offset, or 0 when
        the registry ignored the ``Range`` request (``restarted`` is then True and the caller
        must start over).
    ``restarted``
        True when an ``offset > 0`` was asked for and the registry sent the whole blob.
    ``resumes``
        how many times a broken connection was resumed (``Range`` from the current position;
        when the registry ignores the range, the bytes already yielded are skipped).
    ``position``
        blob position after the bytes yielded so far.

    A stream that cannot be resumed (retries used up) raises :class:`BlobTransferError` naming
    how many bytes arrived; more data than ``size`` or a wrong digest also raise.
    """

    def __init__(
        self,
        client: RegistryClient,
        repo: str,
        digest: str,
        resp: httpx.Response,
        *,
        start: int,
        requested: int,
        size: int | None,
        verify: bool,
        backoff: Backoff,
    ) -> None:
        self._client = client
        self.repo = repo
        self.digest = digest
        self._resp: httpx.Response | None = resp
        self.offset = start
        self.restarted = requested > 0 and start == 0
        self.size = size
        self.position = start
        self.resumes = 0
        self.url = str(resp.url)
        self._verify = verify and start == 0
        self._backoff = backoff
        self._iter: Iterator[bytes] | None = None
        self._buf = b""
        self._what = f"{client.name}/{repo}@{digest}"

    def __enter__(self) -> BlobResponse:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[bytes]:
        return self.iter_bytes()

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None

    def iter_bytes(self, chunk_size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
        """Yield the blob's bytes from :attr:`offset` on, in chunks of ``chunk_size`` (the last one shorter)."""
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        if self._iter is not None:
            raise RegistryError(f"{self._what}: the blob stream was already consumed")
        self._iter = self._generate(chunk_size)
        return self._iter

    def read(self, n: int = -1) -> bytes:
        """File-like read (``n < 0``: everything left -- avoid for large blobs)."""
        if self._iter is None:
            self._iter = self._generate(0)
        out = [self._buf]
        have = len(self._buf)
        while n < 0 or have < n:
            try:
                chunk = next(self._iter)
            except StopIteration:
                break
            out.append(chunk)
            have += len(chunk)
        data = b"".join(out)
        if n < 0:
            self._buf = b""
            return data
        self._buf = data[n:]
        return data[:n]

    def _generate(self, chunk_size: int) -> Iterator[bytes]:
        hasher = _hasher(self.digest) if self._verify else None
        size = self.size
        skip = 0
        received = self.position  # bytes arrived (yielded + buffered); a resume starts here
        buf = bytearray()
        try:
            while True:
                resp = self._resp
                if resp is None:
                    raise RegistryError(f"{self._what}: the blob stream is closed")
                if size is not None and received >= size and not skip:
                    break
                try:
                    for raw in resp.iter_raw():
                        if skip:
                            if len(raw) <= skip:
                                skip -= len(raw)
                                continue
                            raw = raw[skip:]
                            skip = 0
                        if not raw:
                            continue
                        if size is not None and received + len(raw) > size:
                            raise BlobTransferError(
                                f"{self._what}: the registry sent more than the {size} bytes"
                            )
                        received += len(raw)
                        if hasher is not None:
                            hasher.update(raw)
                        if chunk_size <= 0 and not buf:  # read(): hand out what arrived
                            self.position += len(raw)
                            yield raw
                            continue
                        buf += raw
                        while len(buf) >= chunk_size:
                            out = bytes(buf[:chunk_size])
                            del buf[:chunk_size]
                            self.position += len(out)
                            yield out
                    if skip:
                        raise httpx.ReadError(f"the stream ended while skipping to byte {received}")
                    if size is not None and received < size:
                        raise httpx.ReadError(f"the body ended after {received} of {size} bytes")
                    break
                except httpx.TransportError as e:
                    self.close()
                    got = f"{received} of {size}" if size is not None else f"{received}"
                    if not self._backoff.sleep():
                        if buf:  # hand out what did arrive, so the caller can resume after it
                            self.position += len(buf)
                            yield bytes(buf)
                            buf.clear()
                        raise BlobTransferError(
                            f"{self._what}: download broken after {got} bytes: {e or type(e).__name__}"
                        ) from None
                    resp, start, total = self._client._blob_request(
                        self.repo, self.digest, received, self._backoff
                    )
                    self._resp = resp
                    self.resumes += 1
                    if size is not None and total is not None and total != size:
                        resp.close()
                        raise BlobTransferError(
                            f"{self._what}: the blob's size changed from {size} to {total} bytes while resuming"
                        ) from None
                    skip = received - start
            if buf:
                self.position += len(buf)
                yield bytes(buf)
                buf.clear()
            if hasher is not None:
                got_digest = self.digest.split(":", 1)[0] + ":" + hasher.hexdigest()
                if got_digest != self.digest:
                    raise DigestMismatch(f"{self._what}: downloaded content has digest {got_digest}")
        finally:
            self.close()
