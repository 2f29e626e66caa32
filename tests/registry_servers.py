"""Servers for tests/test_registry_client.py: a real docker-registry, a JWT token service, and fakes.

* :class:`DockerRegistry` -- ``docker-registry`` (distribution 2.8) on a free 127.0.0.1 port with a temp
  storage root, config from ``shared/fixtures/registry/config.yml`` (plus an ``auth:`` section for htpasswd
  or token auth); stopped by the PID it started.
* :class:`JWTTokenServer` -- a Docker token service whose RS256 JWTs (signed with ``openssl``, ``x5c`` header)
  the real registry verifies; users, anonymous pull of ``public/*``, refresh tokens.
* :class:`FakeServer` -- a threaded stdlib HTTP/1.1 server (optionally TLS) running an ``app(req)``.
* :class:`FakeRegistry` -- an in-memory registry app with fault injection (status sequences, truncated blobs,
  ignored ranges, blob redirects to another host, basic/bearer auth, 401 without challenge, huge manifests).
* helpers: free_port, need (peer skip/fail), htpasswd_line, openssl certificates, OCI test image.

Everything listens on loopback only and is stopped by the tests' fixtures.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# The skip/fail rule for missing peers lives in peers.py; one definition for every test module.
from peers import _missing as missing
from peers import find_fixtures, fixture_candidates, need

FIXTURES = find_fixtures() or fixture_candidates()[0]
REGISTRY_CONFIG_TEMPLATE = FIXTURES / "registry" / "config.yml"
_FALLBACK_CONFIG = """version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: /tmp/fxregistry/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:5000
  headers:
    X-Content-Type-Options: [nosniff]
"""


# ------------------------------------------------------------------------------------------- peers


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM our child by its PID, then SIGKILL; reap it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


# ------------------------------------------------------------------------------------------- htpasswd / openssl
def htpasswd_line(user: str, password: str) -> str:
    """``user:$2y$...`` (bcrypt, as distribution requires): htpasswd(1), else Python bcrypt, else crypt(3)."""
    exe = shutil.which("htpasswd")
    if exe:
        p = subprocess.run([exe, "-nbB", user, password], capture_output=True, text=True, check=True)
        return p.stdout.strip().splitlines()[0]
    try:
        import bcrypt  # type: ignore[import-not-found]

        return "%s:%s" % (user, bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode())
    except ImportError:
        pass
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # glibc/libxcrypt supports bcrypt ($2b$)

            h = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 5))
            if h and h.startswith("$2"):
                return "%s:%s" % (user, h)
        except (ImportError, AttributeError, ValueError):
            pass
    missing("no bcrypt htpasswd generator (install apache2-utils for htpasswd, or Python bcrypt)")
    raise AssertionError("unreachable")


def openssl(*args: str, cwd: str | os.PathLike[str] | None = None) -> str:
    exe = need("openssl")
    p = subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), p.stderr))
    return p.stdout


@dataclass
class CertSet:
    """A test CA with a server certificate (127.0.0.1, localhost) and a client certificate."""

    dir: Path
    ca_crt: Path
    ca_key: Path
    server_crt: Path
    server_key: Path
    client_crt: Path
    client_key: Path


def self_signed(d: Path, name: str, cn: str, *extra: str) -> None:
    """A self-signed RSA certificate valid for two days: ``<name>.key`` and ``<name>.crt`` in ``d``."""
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt",
        "-days", "2", "-subj", f"/CN={cn}", *extra, cwd=d,
    )  # fmt: skip


def make_certs(d: Path) -> CertSet:
    d.mkdir(parents=True, exist_ok=True)
    self_signed(
        d,
        "ca",
        "dockyard test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    for name, cn, ext in (
        ("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "dockyard-client", "extendedKeyUsage=clientAuth\n"),
    ):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            name + ".key",
            "-out",
            name + ".csr",
            "-subj",
            "/CN=" + cn,
            cwd=d,
        )
        (d / (name + ".ext")).write_text("basicConstraints=CA:FALSE\n" + ext)
        openssl(
            "x509",
            "-req",
            "-in",
            name + ".csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            name + ".crt",
            "-days",
            "2",
            "-extfile",
            name + ".ext",
            cwd=d,
        )
    return CertSet(
        d, d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key"
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ------------------------------------------------------------------------------------------- fake HTTP server
class Request:
    """One request seen by a fake app; the app answers with :meth:`respond`, :meth:`raw` or :meth:`drop`."""

    def __init__(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        self.handler = handler
        self.method = handler.command
        parsed = urllib.parse.urlsplit(handler.path)
        self.path = urllib.parse.unquote(parsed.path)
        self.query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        self.headers = handler.headers
        self.body = body
        self.answered = False

    def q(self, name: str) -> str | None:
        v = self.query.get(name)
        return v[0] if v else None

    def respond(
        self,
        status: int,
        body: bytes | str | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        *,
        content_length: int | None = None,
        content_type: str | None = None,
    ) -> None:
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            content_type = content_type or "application/json"
        elif isinstance(body, str):
            body = body.encode()
        body = body or b""
        h = self.handler
        h.send_response(status)
        hdrs = dict(headers or {})
        if content_type:
            hdrs.setdefault("Content-Type", content_type)
        hdrs.setdefault("Content-Length", str(len(body) if content_length is None else content_length))
        for k, v in hdrs.items():
            h.send_header(k, v)
        h.end_headers()
        if self.method != "HEAD":
            h.wfile.write(body)
        h.wfile.flush()
        self.answered = True

    def error(
        self, status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        self.respond(status, {"errors": [{"code": code, "message": message, "detail": detail}]}, headers)

    def raw(self, data: bytes) -> None:
        """Write raw bytes (status line and headers included) to the socket."""
        self.handler.wfile.write(data)
        self.handler.wfile.flush()
        self.answered = True

    def drop(self) -> None:
        """Close the connection now (after whatever was written)."""
        h = self.handler
        h.close_connection = True
        with contextlib.suppress(OSError):
            h.wfile.flush()
        with contextlib.suppress(OSError):
            h.connection.shutdown(socket.SHUT_RDWR)
        self.answered = True


App = Callable[[Request], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                line = self.rfile.readline()
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _dispatch(self) -> None:
        body = self._body()
        req = Request(self, body)
        self.server.owner.log.append(req)
        try:
            self.server.owner.app(req)
        except (ConnectionError, ssl.SSLError):  # the client hung up (often on purpose)
            self.close_connection = True
            return
        except Exception as e:  # a bug in a test app: answer 500 and remember it
            self.server.owner.app_errors.append(e)
            if not req.answered:
                req.respond(500, str(e))
        if not req.answered:
            req.respond(500, "app did not answer")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: FakeServer

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet (clients hang up on purpose)
        pass


class FakeServer:
    """``app`` served over HTTP/1.1 (TLS with ``ssl_context``) on ``host``:free port, in a thread."""

    def __init__(
        self, app: App, *, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.app = app
        self.host = host
        self.ssl_context = ssl_context
        self.log: list[Request] = []
        self.app_errors: list[BaseException] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeServer:
        srv = _Server((self.host, 0), _Handler)
        srv.owner = self
        if self.ssl_context is not None:
            srv.socket = self.ssl_context.wrap_socket(srv.socket, server_side=True)
        self._server = srv
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def addr(self) -> str:
        return "%s:%d" % (self.host, self.port)

    @property
    def url(self) -> str:
        return "%s://%s" % ("https" if self.ssl_context else "http", self.addr)

    def requests(self, method: str | None = None, path_re: str = "") -> list[Request]:
        return [r for r in self.log if (method is None or r.method == method) and re.search(path_re, r.path)]


# ------------------------------------------------------------------------------------------- fake registry
def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Fault:
    """Intercepts matching requests ``times`` times (-1: always); ``action(req)`` answers them."""

    method: str
    path_re: str
    action: Callable[[Request], None]
    times: int = 1
    hits: int = 0


_MANIFEST_RE = re.compile(r"^/v2/(.+)/manifests/([^/]+)$")
_BLOB_RE = re.compile(r"^/v2/(.+)/blobs/(sha256:[a-f0-9]{64})$")
_UPLOADS_RE = re.compile(r"^/v2/(.+)/blobs/uploads/([^/]*)$")


@dataclass
class FakeRegistry:
    """An in-memory Docker registry app for :class:`FakeServer`, with knobs for misbehaviour.

    ``auth``: None, ``"basic"`` (``users``), ``"bearer"`` (tokens from :class:`OpaqueTokenServer`
    ``token_server``) or ``"no-challenge"`` (401 without WWW-Authenticate).
    """

    auth: str | None = None
    users: dict[str, str] = field(default_factory=dict)
    token_server: OpaqueTokenServer | None = None
    ignore_range: bool = False
    blob_redirect: str | None = None  # base URL of a storage server to 307 blob GETs/HEADs to
    relative_locations: bool = True
    faults: list[Fault] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    repo_blobs: dict[str, set[str]] = field(default_factory=dict)
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    uploads: dict[str, bytearray] = field(default_factory=dict)
    server: FakeServer | None = None

    # ---- knobs
    def fail(
        self,
        method: str,
        path_re: str,
        status: int,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> Fault:
        def act(req: Request) -> None:
            req.respond(
                status,
                body if body is not None else {"errors": [{"code": "UNAVAILABLE", "message": "try again"}]},
                headers,
            )

        f = Fault(method, path_re, act, times)
        self.faults.append(f)
        return f

    def add_fault(
        self, method: str, path_re: str, action: Callable[[Request], None], times: int = 1
    ) -> Fault:
        f = Fault(method, path_re, action, times)
        self.faults.append(f)
        return f

    def put_blob(self, repo: str, data: bytes) -> str:
        d = sha256(data)
        self.blobs[d] = data
        self.repo_blobs.setdefault(repo, set()).add(d)
        return d

    def put_manifest(self, repo: str, ref: str, raw: bytes, media_type: str) -> str:
        d = sha256(raw)
        self.manifests[(repo, ref)] = (raw, media_type)
        self.manifests[(repo, d)] = (raw, media_type)
        return d

    # ---- the app
    def __call__(self, req: Request) -> None:
        for f in self.faults:
            if (
                (f.times < 0 or f.hits < f.times)
                and f.method in (req.method, "*")
                and re.search(f.path_re, req.path)
            ):
                f.hits += 1
                f.action(req)
                return
        if not self._authorized(req):
            return
        p = req.path
        if p == "/v2/" or p == "/v2":
            req.respond(200, {})
            return
        m = _UPLOADS_RE.match(p)
        if m:
            self._uploads(req, m.group(1), m.group(2))
            return
        m = _BLOB_RE.match(p)
        if m:
            self._blob(req, m.group(1), m.group(2))
            return
        m = _MANIFEST_RE.match(p)
        if m:
            self._manifest(req, m.group(1), m.group(2))
            return
        req.error(404, "NOT_FOUND", "no route")

    def _authorized(self, req: Request) -> bool:
        if self.auth is None:
            return True
        authz = req.headers.get("Authorization", "")
        if self.auth == "no-challenge":
            req.error(401, "UNAUTHORIZED", "authentication required")
            return False
        if self.auth == "basic":
            if authz.startswith("Basic "):
                user, _, pw = base64.b64decode(authz[6:]).decode().partition(":")
                if self.users.get(user) == pw:
                    return True
            req.error(
                401,
                "UNAUTHORIZED",
                "authentication required",
                headers={"WWW-Authenticate": 'Basic realm="fake registry"'},
            )
            return False
        assert self.auth == "bearer" and self.token_server is not None
        ts = self.token_server
        need = self._needed_scope(req)
        if authz.startswith("Bearer "):
            granted = ts.tokens.get(authz[7:])
            if granted is not None and granted[1] > time.time():
                if need is None or _scope_ok(granted[0], need):
                    return True
                req.error(
                    401,
                    "UNAUTHORIZED",
                    "authentication required",
                    headers={
                        "WWW-Authenticate": 'Bearer realm="%s/token",service="fake",scope="%s",error="insufficient_scope"'
                        % (ts.server.url if ts.server else "", need)
                    },
                )
                return False
        challenge = 'Bearer realm="%s/token",service="fake"' % (ts.server.url if ts.server else "")
        if need:
            challenge += ',scope="%s"' % need
        req.error(401, "UNAUTHORIZED", "authentication required", headers={"WWW-Authenticate": challenge})
        return False

    @staticmethod
    def _needed_scope(req: Request) -> str | None:
        m = re.match(r"^/v2/(.+)/(?:manifests|blobs)/", req.path)
        if not m:
            return None
        write = req.method in ("POST", "PUT", "PATCH", "DELETE")
        return "repository:%s:%s" % (m.group(1), "pull,push" if write else "pull")

    def _loc(self, path: str) -> str:
        if self.relative_locations or self.server is None:
            return path
        return self.server.url + path

    def _manifest(self, req: Request, repo: str, ref: str) -> None:
        if req.method in ("GET", "HEAD"):
            got = self.manifests.get((repo, ref))
            if got is None:
                req.error(404, "MANIFEST_UNKNOWN", "manifest unknown", {"Tag": ref})
                return
            raw, mt = got
            req.respond(200, raw, {"Docker-Content-Digest": sha256(raw), "Content-Type": mt})
        elif req.method == "PUT":
            d = self.put_manifest(repo, ref, req.body, req.headers.get("Content-Type", ""))
            req.respond(201, b"", {"Docker-Content-Digest": d, "Location": "/v2/%s/manifests/%s" % (repo, d)})
        else:
            req.error(405, "UNSUPPORTED", "method not allowed")

    def _blob(self, req: Request, repo: str, digest: str) -> None:
        data = self.blobs.get(digest)
        if data is None or digest not in self.repo_blobs.get(repo, set()):
            req.error(404, "BLOB_UNKNOWN", "blob unknown to registry", digest)
            return
        if req.method not in ("GET", "HEAD"):
            req.error(405, "UNSUPPORTED", "method not allowed")
            return
        if self.blob_redirect:
            req.respond(307, b"", {"Location": "%s/storage/%s?sig=abc" % (self.blob_redirect, digest)})
            return
        serve_bytes(req, data, ignore_range=self.ignore_range, extra={"Docker-Content-Digest": digest})

    def _uploads(self, req: Request, repo: str, uid: str) -> None:
        if req.method == "POST" and not uid:
            mount, frm = req.q("mount"), req.q("from")
            if mount and frm and mount in self.repo_blobs.get(frm, set()):
                self.repo_blobs.setdefault(repo, set()).add(mount)
                req.respond(
                    201, b"", {"Docker-Content-Digest": mount, "Location": "/v2/%s/blobs/%s" % (repo, mount)}
                )
                return
            uid = secrets.token_hex(8)
            self.uploads[uid] = bytearray()
            req.respond(
                202,
                b"",
                {
                    "Location": self._loc("/v2/%s/blobs/uploads/%s?_state=s%s" % (repo, uid, uid)),
                    "Docker-Upload-UUID": uid,
                    "Range": "0-0",
                },
            )
            return
        buf = self.uploads.get(uid)
        if buf is None:
            req.error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry")
            return
        loc = self._loc("/v2/%s/blobs/uploads/%s?_state=s%s%d" % (repo, uid, uid, len(buf)))
        if req.method == "PATCH":
            cr = req.headers.get("Content-Range")
            if cr:
                start = int(cr.split("-")[0])
                if start != len(buf):
                    req.error(416, "BLOB_UPLOAD_INVALID", "wrong offset")
                    return
            buf += req.body
            req.respond(
                202,
                b"",
                {
                    "Location": self._loc(
                        "/v2/%s/blobs/uploads/%s?_state=s%s%d" % (repo, uid, uid, len(buf))
                    ),
                    "Range": "0-%d" % (len(buf) - 1),
                },
            )
        elif req.method == "GET":
            # distribution answers "0-0" for an empty upload too
            req.respond(
                204, b"", {"Location": loc, "Docker-Upload-UUID": uid, "Range": "0-%d" % max(len(buf) - 1, 0)}
            )
        elif req.method == "DELETE":
            del self.uploads[uid]
            req.respond(204)
        elif req.method == "PUT":
            buf += req.body
            digest = req.q("digest") or ""
            if sha256(bytes(buf)) != digest:
                req.error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
                return
            del self.uploads[uid]
            self.blobs[digest] = bytes(buf)
            self.repo_blobs.setdefault(repo, set()).add(digest)
            req.respond(
                201, b"", {"Docker-Content-Digest": digest, "Location": "/v2/%s/blobs/%s" % (repo, digest)}
            )
        else:
            req.error(405, "UNSUPPORTED", "method not allowed")


def _scope_ok(granted: list[str], need: str) -> bool:
    _, name, actions = need.split(":", 2)
    for g in granted:
        _, gname, gactions = g.split(":", 2)
        if gname == name and set(actions.split(",")) <= set(gactions.split(",")):
            return True
    return False


def serve_bytes(
    req: Request,
    data: bytes,
    *,
    ignore_range: bool = False,
    extra: dict[str, str] | None = None,
    truncate_at: int | None = None,
) -> None:
    """Answer with ``data`` (206 for ``Range: bytes=N-`` unless ``ignore_range``); ``truncate_at`` sends the
    full Content-Length but only that many bytes, then drops the connection."""
    headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", **(extra or {})}
    rng = req.headers.get("Range")
    status, body = 200, data
    if rng and not ignore_range:
        m = re.match(r"^bytes=(\d+)-$", rng.strip())
        assert m, rng
        start = int(m.group(1))
        if start >= len(data):
            req.respond(416, b"", {"Content-Range": "bytes */%d" % len(data)})
            return
        status, body = 206, data[start:]
        headers["Content-Range"] = "bytes %d-%d/%d" % (start, len(data) - 1, len(data))
    if truncate_at is None or req.method == "HEAD":
        req.respond(status, body, headers)
        return
    h = req.handler
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body[:truncate_at])
    req.drop()


# ------------------------------------------------------------------------------------------- token servers
class OpaqueTokenServer:
    """A token service for :class:`FakeRegistry` (auth="bearer"): random tokens, ``expires_in`` seconds.

    ``users`` may pull and push everything; anonymous callers may pull ``public/*``. ``token_key`` is
    ``token`` or ``access_token``.
    """

    def __init__(self, users: dict[str, str], *, token_key: str = "token", expires_in: int = 300) -> None:
        self.users = users
        self.token_key = token_key
        self.expires_in = expires_in
        self.tokens: dict[str, tuple[list[str], float]] = {}
        self.server: FakeServer | None = None
        self.calls: list[tuple[str | None, list[str]]] = []

    def __call__(self, req: Request) -> None:
        if req.path != "/token":
            req.respond(404)
            return
        user: str | None = None
        authz = req.headers.get("Authorization", "")
        if authz.startswith("Basic "):
            u, _, pw = base64.b64decode(authz[6:]).decode().partition(":")
            if self.users.get(u) != pw:
                req.respond(401, {"details": "incorrect username or password"})
                return
            user = u
        scopes = req.query.get("scope", [])
        self.calls.append((user, scopes))
        granted = []
        for s in scopes:
            name = s.split(":", 2)[1]
            if user is not None:
                granted.append(s)
            elif name.startswith("public/"):
                granted.append("repository:%s:pull" % name)
        tok = secrets.token_hex(16)
        self.tokens[tok] = (granted, time.time() + self.expires_in)
        req.respond(200, {self.token_key: tok, "expires_in": self.expires_in})


class JWTTokenServer:
    """A Docker token service for the real registry (``auth: token``): RS256 JWTs with an ``x5c`` header.

    ``users``: name -> password (pull+push on every requested repository); anonymous: pull on ``public/*``.
    With ``offline_token=true`` and good credentials a ``refresh_token`` is returned, which the OAuth2 POST
    (``grant_type=refresh_token``) accepts.
    """

    issuer = "dockyard-test-issuer"
    service = "dockyard-test-registry"

    def __init__(self, workdir: Path, users: dict[str, str]) -> None:
        self.users = users
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self_signed(workdir, "token", "dockyard token signer")
        self.key = workdir / "token.key"
        self.cert = workdir / "token.crt"
        pem = self.cert.read_text()
        body = "".join(ln for ln in pem.splitlines() if ln and not ln.startswith("-----"))
        self.x5c = body  # standard base64 of the DER certificate
        self.refresh_tokens: dict[str, str] = {}
        self.calls: list[dict[str, Any]] = []
        self.server: FakeServer | None = None
        self._lock = threading.Lock()

    @property
    def realm(self) -> str:
        assert self.server is not None
        return self.server.url + "/token"

    def _sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        exe = need("openssl")
        p = subprocess.run(
            [exe, "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            capture_output=True,
            check=True,
        )
        return signing_input + "." + b64url(p.stdout)

    def _issue(self, user: str | None, scopes: list[str], service: str) -> dict[str, Any]:
        access = []
        for s in scopes:
            parts = s.split(":")
            if len(parts) < 3:
                continue
            typ, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            if user is None:
                actions = [a for a in actions if a == "pull"] if name.startswith("public/") else []
            if actions:
                access.append({"type": typ, "name": name, "actions": actions})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        tok = self._sign(claims)
        return {
            "token": tok,
            "access_token": tok,
            "expires_in": 300,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        }

    def __call__(self, req: Request) -> None:
        if req.path != "/token":
            req.respond(404)
            return
        if req.method == "POST":
            form = urllib.parse.parse_qs(req.body.decode())
            with self._lock:
                self.calls.append({"method": "POST", "form": form})
            if form.get("grant_type") == ["refresh_token"]:
                user = self.refresh_tokens.get((form.get("refresh_token") or [""])[0])
                if user is None:
                    req.respond(401, {"error": "invalid_grant", "error_description": "invalid refresh token"})
                    return
                scopes = " ".join(form.get("scope", [])).split()
                out = self._issue(user, scopes, (form.get("service") or [self.service])[0])
                out["refresh_token"] = (form.get("refresh_token") or [""])[0]
                req.respond(200, out)
                return
            req.respond(400, {"error": "unsupported_grant_type"})
            return
        user: str | None = None
        authz = req.headers.get("Authorization", "")
        if authz.startswith("Basic "):
            u, _, pw = base64.b64decode(authz[6:]).decode().partition(":")
            if self.users.get(u) != pw:
                with self._lock:
                    self.calls.append({"method": "GET", "user": u, "denied": True})
                req.respond(401, {"details": "incorrect username or password"})
                return
            user = u
        scopes = req.query.get("scope", [])
        with self._lock:
            self.calls.append(
                {
                    "method": "GET",
                    "user": user,
                    "scopes": scopes,
                    "service": req.q("service"),
                    "offline": req.q("offline_token"),
                }
            )
        out = self._issue(user, scopes, req.q("service") or self.service)
        if user is not None and req.q("offline_token") == "true":
            rt = "rt-" + secrets.token_hex(8)
            self.refresh_tokens[rt] = user
            out["refresh_token"] = rt
        req.respond(200, out)


# ------------------------------------------------------------------------------------------- docker-registry
class DockerRegistry:
    """A real ``docker-registry`` on a free 127.0.0.1 port, temp storage; optional htpasswd or token auth."""

    def __init__(
        self,
        base: Path,
        *,
        htpasswd: Path | None = None,
        token: JWTTokenServer | None = None,
        tls: CertSet | None = None,
    ) -> None:
        self.exe = need("docker-registry")
        self.base = base
        self.htpasswd = htpasswd
        self.token = token
        self.tls = tls
        self.addr = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        try:
            text = REGISTRY_CONFIG_TEMPLATE.read_text()
        except OSError:
            text = _FALLBACK_CONFIG
        text = text.replace("level: info", "level: warn")
        if self.htpasswd is not None:
            text += "auth:\n  htpasswd:\n    realm: dockyard-test\n    path: %s\n" % self.htpasswd
        elif self.token is not None:
            text += (
                "auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n"
                % (self.token.realm, self.token.service, self.token.issuer, self.token.cert)
            )
        return text

    def start(self) -> DockerRegistry:
        self.base.mkdir(parents=True, exist_ok=True)
        storage = self.base / "data"
        storage.mkdir(exist_ok=True)
        cfg = self.base / "config.yml"
        cfg.write_text(self._config())
        last = ""
        for _attempt in range(3):
            self.addr = "127.0.0.1:%d" % free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
            env["REGISTRY_HTTP_ADDR"] = self.addr
            env["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"] = str(storage)
            if self.tls is not None:
                env["REGISTRY_HTTP_TLS_CERTIFICATE"] = str(self.tls.server_crt)
                env["REGISTRY_HTTP_TLS_KEY"] = str(self.tls.server_key)
            with open(self.base / "registry.log", "ab") as log:
                self.proc = subprocess.Popen(
                    [self.exe, "serve", str(cfg)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
            ctx = ssl._create_unverified_context() if self.tls else None
            scheme = "https" if self.tls else "http"
            for _ in range(200):
                if self.proc.poll() is not None:
                    break
                try:
                    with urllib.request.urlopen("%s://%s/v2/" % (scheme, self.addr), timeout=2, context=ctx):
                        return self
                except urllib.error.HTTPError:
                    return self  # 401: up, with auth
                except OSError:
                    pass
                time.sleep(0.05)
            last = self.log_tail()
            self.stop()
        raise RuntimeError("docker-registry did not start:\n" + last)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (self.base / "registry.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> DockerRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------- test images
@dataclass
class TestImage:
    """A tiny OCI image: one gzip layer, a config, a manifest."""

    layer: bytes
    layer_digest: str
    diff_id: str
    config: bytes
    config_digest: str
    manifest: bytes
    manifest_digest: str
    media_type: str = "application/vnd.oci.image.manifest.v1+json"


def make_test_image(text: str = "hello from dockyard\n", size: int = 0) -> TestImage:
    """An OCI image whose layer holds ``hello.txt`` (plus ``size`` random bytes in ``blob.bin``)."""
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in (("hello.txt", text.encode()), ("blob.bin", os.urandom(size))):
            if name == "blob.bin" and not size:
                continue
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 0
            ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data))
    tar = tar_buf.getvalue()
    layer = gzip.compress(tar, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
            "history": [{"created_by": "dockyard test"}],
        },
        separators=(",", ":"),
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(layer),
                    "size": len(layer),
                }
            ],
        },
        separators=(",", ":"),
    ).encode()
    return TestImage(layer, sha256(layer), sha256(tar), config, sha256(config), manifest, sha256(manifest))


def write_credential_helper(bindir: Path, name: str, store_file: Path) -> Path:
    """A fake ``docker-credential-<name>`` keeping {ServerURL: {Username, Secret}} in ``store_file``;
    every call is appended to ``<store_file>.log`` as ``action<TAB>stdin``."""
    bindir.mkdir(parents=True, exist_ok=True)
    script = bindir / ("docker-credential-" + name)
    script.write_text(
        """#!%s
import json, sys
path = %r
action = sys.argv[1]
data = sys.stdin.read()
with open(path + ".log", "a") as f:
    f.write(action + "\\t" + data.replace("\\n", " ") + "\\n")
try:
    with open(path) as f:
        db = json.load(f)
except FileNotFoundError:
    db = {}
if action == "get":
    e = db.get(data.strip())
    if e is None:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps({"ServerURL": data.strip(), "Username": e["Username"], "Secret": e["Secret"]}))
elif action == "store":
    c = json.loads(data)
    db[c["ServerURL"]] = {"Username": c["Username"], "Secret": c["Secret"]}
    with open(path, "w") as f:
        json.dump(db, f)
elif action == "erase":
    if data.strip() not in db:
        print("credentials not found in native keychain")
        sys.exit(1)
    del db[data.strip()]
    with open(path, "w") as f:
        json.dump(db, f)
elif action == "list":
    print(json.dumps({k: v["Username"] for k, v in db.items()}))
else:
    print("unknown action")
    sys.exit(1)
"""
        % (os.path.realpath(sys.executable), str(store_file))
    )
    script.chmod(0o755)
    return script


def tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
