"""dockyard.registry: the registry HTTP client, auth and credentials.

Against a real ``docker-registry`` (distribution 2.8: anonymous, htpasswd and token auth with JWTs from a test
token service), ``skopeo`` to seed it from an OCI fixture, and small Python servers (tests/registry_servers.py)
that misbehave on purpose: 429/503 then success, 401 without challenge, short bodies, dropped connections,
ignored ranges, redirects to another host, huge manifests, TLS with certs.d CAs and client certificates.
Peers missing -> skip (fail with DOCKYARD_REQUIRE_PEERS=1).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.errors import DockyardError, NotFound
from dockyard.registry import (
    AuthError,
    BlobTransferError,
    CredentialError,
    Credentials,
    CredentialStore,
    DigestMismatch,
    ManifestTooLarge,
    RegistryClient,
    RegistryError,
    RegistryNotFound,
    login,
    logout,
    parse_registry,
    registry_key,
)
from dockyard.registry.auth import parse_challenges
from dockyard.registry.credentials import go_marshal_indent
from dockyard.registry.transport import Backoff, candidate_endpoints, parse_retry_after
from peers import missing
from registry_servers import (
    FIXTURES,
    DockerRegistry,
    FakeRegistry,
    FakeServer,
    JWTTokenServer,
    OpaqueTokenServer,
    Request,
    htpasswd_line,
    make_certs,
    make_test_image,
    need,
    serve_bytes,
    sha256,
    write_credential_helper,
)

# pure unit tests of the registry client: no root and no fixture tree (a real registry and skopeo are peers)
pytestmark = [pytest.mark.timeout(180), pytest.mark.unit]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = [OCI_MANIFEST, OCI_INDEX, DOCKER_V2, "application/vnd.docker.distribution.manifest.list.v2+json"]


# ============================================================================================ fixtures
@pytest.fixture
def certs_root(tmp_path: Path) -> Path:
    """An empty certs.d root, so the host's /etc/docker/certs.d is never read."""
    d = tmp_path / "certs.d"
    d.mkdir()
    return d


@pytest.fixture
def mk(certs_root: Path) -> Iterator[Callable[..., RegistryClient]]:
    """mk(registry, **kw) -> RegistryClient with fast backoff; closed at teardown."""
    made: list[RegistryClient] = []

    def _mk(registry: str, **kw: Any) -> RegistryClient:
        kw.setdefault("backoff", 0.01)
        kw.setdefault("backoff_max", 0.05)
        kw.setdefault("retries", 3)
        kw.setdefault("timeout", 20)
        kw.setdefault("certs_dir", str(certs_root))
        c = RegistryClient(registry, **kw)
        made.append(c)
        return c

    yield _mk
    for c in made:
        c.close()


@pytest.fixture
def fake() -> Iterator[Callable[..., tuple[FakeRegistry, FakeServer]]]:
    """fake(**FakeRegistry kwargs) -> (registry app, running server)."""
    servers: list[FakeServer] = []

    def _fake(**kw: Any) -> tuple[FakeRegistry, FakeServer]:
        app = FakeRegistry(**kw)
        srv = FakeServer(app).start()
        app.server = srv
        servers.append(srv)
        return app, srv

    yield _fake
    for s in servers:
        s.stop()
        assert not s.app_errors, s.app_errors


@pytest.fixture(scope="module")
def real_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    with DockerRegistry(tmp_path_factory.mktemp("realreg")) as reg:
        yield reg


USERS = {"alice": "wonderland", "bob": "builder"}


@pytest.fixture(scope="module")
def htpasswd_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    need("docker-registry")
    base = tmp_path_factory.mktemp("htreg")
    ht = base / "htpasswd"
    ht.write_text("".join(htpasswd_line(u, p) + "\n" for u, p in USERS.items()))
    with DockerRegistry(base / "reg", htpasswd=ht) as reg:
        yield reg


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DockerRegistry, JWTTokenServer]]:
    need("docker-registry")
    base = tmp_path_factory.mktemp("tokreg")
    ts = JWTTokenServer(base / "token", USERS)
    srv = FakeServer(ts).start()
    ts.server = srv
    try:
        with DockerRegistry(base / "reg", token=ts) as reg:
            yield reg, ts
    finally:
        srv.stop()


def push_image(c: RegistryClient, repo: str, tag: str, img: Any, chunk_size: int | None = None) -> str:
    for d, data in ((img.layer_digest, img.layer), (img.config_digest, img.config)):
        if c.blob_exists(repo, d) is None:
            c.upload_blob(repo, d, len(data), lambda data=data: [data[i:i + 7000] for i in range(0, len(data), 7000)],
                          chunk_size=chunk_size)
    return c.put_manifest(repo, tag, img.manifest, img.media_type)


def read_blob(c: RegistryClient, repo: str, digest: str, **kw: Any) -> bytes:
    with c.open_blob(repo, digest, **kw) as b:
        return b"".join(b.iter_bytes(65536))


# ============================================================================================ pure functions
def test_parse_registry_names() -> None:
    hub = parse_registry("docker.io")
    assert (hub.name, hub.netloc, hub.auth_key) == ("docker.io", "registry-1.docker.io", "https://index.docker.io/v1/")
    for alias in ("index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"):
        assert parse_registry(alias).name == "docker.io"
    r = parse_registry("localhost:5000")
    assert (r.name, r.host, r.port, r.is_loopback, r.auth_key) == ("localhost:5000", "localhost", 5000, True,
                                                                   "localhost:5000")
    r = parse_registry("[::1]:5000")
    assert (r.host, r.port, r.is_loopback) == ("::1", 5000, True)
    r = parse_registry("https://quay.io/v2/")
    assert (r.name, r.is_loopback) == ("quay.io", False)
    assert parse_registry("127.3.4.5").is_loopback
    with pytest.raises(RegistryError):
        parse_registry("host:99999")


def test_endpoint_rules(tmp_path: Path) -> None:
    def eps(name: str, insecure: tuple[str, ...] = (), certs: Path | None = None) -> list[tuple[str, bool]]:
        return [(e.scheme, e.verify) for e in candidate_endpoints(parse_registry(name), insecure, certs)]

    assert eps("docker.io") == [("https", True)]
    assert eps("quay.io") == [("https", True)]
    assert eps("127.0.0.1:5000") == [("http", False), ("https", False)]
    assert eps("localhost:5000") == [("http", False), ("https", False)]
    assert eps("[::1]:5000") == [("http", False), ("https", False)]
    assert eps("myreg.test:5000", ("myreg.test:5000",)) == [("https", False), ("http", False)]
    assert eps("myreg.test:5000", ("myreg.test",)) == [("https", False), ("http", False)]
    assert eps("myreg.test:5000", ("myreg.test:5001",)) == [("https", True)]
    assert eps("10.1.2.3:5000", ("10.0.0.0/8",)) == [("https", False), ("http", False)]
    assert eps("10.1.2.3:5000", ("192.168.0.0/16",)) == [("https", True)]
    (tmp_path / "127.0.0.1:5000").mkdir()
    assert eps("127.0.0.1:5000", certs=tmp_path) == [("https", True), ("http", False)]
    assert candidate_endpoints(parse_registry("docker.io"), (), None)[0].base_url == "https://registry-1.docker.io"


def test_parse_challenges() -> None:
    chs = parse_challenges(['Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                            'scope="repository:library/busybox:pull"'])
    assert len(chs) == 1 and chs[0].scheme == "bearer"
    assert chs[0].realm == "https://auth.docker.io/token" and chs[0].service == "registry.docker.io"
    assert chs[0].scopes == ["repository:library/busybox:pull"]
    chs = parse_challenges(['Basic realm="Registry Realm", Bearer realm="https://x/t",service=s,'
                            'scope="repository:a:pull repository:b:pull,push",error="insufficient_scope"'])
    assert [c.scheme for c in chs] == ["basic", "bearer"]
    assert chs[0].realm == "Registry Realm"
    assert chs[1].scopes == ["repository:a:pull", "repository:b:pull,push"]
    assert chs[1].params["error"] == "insufficient_scope" and chs[1].service == "s"
    chs = parse_challenges(["Basic", 'Negotiate abc123==', 'Bearer realm="a\\"b"'])
    assert [c.scheme for c in chs] == ["basic", "negotiate", "bearer"] and chs[2].realm == 'a"b'
    assert parse_challenges([""]) == []


def test_backoff_and_retry_after() -> None:
    b = Backoff(retries=3, base=0.5, cap=2, budget=100)
    delays = [b.next_delay() for _ in range(4)]
    assert delays[3] is None
    assert 0.25 <= delays[0] <= 0.5 and 0.5 <= delays[1] <= 1 and 1 <= delays[2] <= 2  # type: ignore[operator]
    b = Backoff(retries=10, base=1, cap=1, budget=2.5)
    assert [b.next_delay(1), b.next_delay(1), b.next_delay(1)] == [1, 1, None]  # the budget bounds the total
    b = Backoff(retries=10, base=0.1, cap=1, budget=100)
    assert b.next_delay(3600) == 4  # Retry-After is honoured up to 4 * cap
    assert parse_retry_after("7") == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    in_a_minute = parse_retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60)))
    assert in_a_minute is not None and 50 < in_a_minute <= 60
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_go_marshal_indent() -> None:
    assert go_marshal_indent({"auths": {}, "a": [1, True, None], "s": "<&>é"}) == (
        '{\n\t"auths": {},\n\t"a": [\n\t\t1,\n\t\ttrue,\n\t\tnull\n\t],\n\t"s": "\\u003c\\u0026\\u003eé"\n}')


def test_bad_input_is_refused_before_any_request(mk: Callable[..., RegistryClient]) -> None:
    c = mk("127.0.0.1:9")  # nothing listens there; validation comes first
    with pytest.raises(RegistryError, match="invalid repository name"):
        c.get_manifest("../etc", "latest", ACCEPT)
    with pytest.raises(RegistryError, match="invalid tag or digest"):
        c.get_manifest("a/b", "bad tag", ACCEPT)
    with pytest.raises(RegistryError, match="invalid digest"):
        c.blob_exists("a/b", "md5:xyz/../")


def test_unreachable_registry_is_one_clear_error(mk: Callable[..., RegistryClient]) -> None:
    port = _closed_port()
    c = mk("127.0.0.1:%d" % port, retries=1)
    with pytest.raises(RegistryError) as ei:
        c.head_manifest("a/b", "latest", ACCEPT)
    msg = str(ei.value)
    assert "127.0.0.1:%d" % port in msg and "cannot connect" in msg and "\n" not in msg


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


# ============================================================================================ real docker-registry
def test_real_push_pull_roundtrip(real_registry: DockerRegistry, mk: Callable[..., RegistryClient]) -> None:
    c = mk(real_registry.addr)
    img = make_test_image("roundtrip\n", size=200_000)
    assert c.endpoint.scheme == "http"
    assert c.head_manifest("rt/app", "v1", ACCEPT) is None
    assert c.blob_exists("rt/app", img.layer_digest) is None
    # layer monolithic (streamed from an iterator factory), config chunked in 10-byte PATCHes
    c.upload_blob("rt/app", img.layer_digest, len(img.layer),
                  lambda: (img.layer[i:i + 4096] for i in range(0, len(img.layer), 4096)))
    c.upload_blob("rt/app", img.config_digest, len(img.config), [img.config], chunk_size=10)
    assert c.blob_exists("rt/app", img.layer_digest) == len(img.layer)
    assert c.blob_exists("rt/app", img.config_digest) == len(img.config)
    digest = c.put_manifest("rt/app", "v1", img.manifest, img.media_type)
    assert digest == img.manifest_digest

    m = c.get_manifest("rt/app", "v1", ACCEPT)
    assert (m.raw, m.media_type, m.digest) == (img.manifest, OCI_MANIFEST, img.manifest_digest)
    assert c.get_manifest("rt/app", img.manifest_digest, ACCEPT) == m
    assert c.head_manifest("rt/app", "v1", ACCEPT) == (img.manifest_digest, OCI_MANIFEST)
    assert c.head_manifest("rt/app", img.manifest_digest, ACCEPT) == (img.manifest_digest, OCI_MANIFEST)

    assert read_blob(c, "rt/app", img.layer_digest, size=len(img.layer)) == img.layer
    assert read_blob(c, "rt/app", img.config_digest) == img.config
    with c.open_blob("rt/app", img.layer_digest, offset=12345) as b:
        assert (b.offset, b.size, b.restarted) == (12345, len(img.layer), False)
        rest = b"".join(b.iter_bytes(1000))
    assert rest == img.layer[12345:]
    with c.open_blob("rt/app", img.layer_digest, offset=len(img.layer)) as b:  # nothing left: 416 handled
        assert b.read() == b""
    with c.open_blob("rt/app", img.layer_digest) as b:  # a short read fetches no more than one network read
        assert b.read(4) == img.layer[:4] and b.position <= 65536
    with c.open_blob("rt/app", img.layer_digest) as b:  # file-like reads
        parts = [b.read(100), b.read(50_000), b.read()]
    assert [len(p) for p in parts] == [100, 50_000, len(img.layer) - 50_100] and b"".join(parts) == img.layer
    with pytest.raises(BlobTransferError, match="reports %d bytes, expected 5" % len(img.layer)):
        c.open_blob("rt/app", img.layer_digest, size=5)

    # pushing the same tag again is idempotent; a second tag by digest reference works too
    assert push_image(c, "rt/app", "v1", img) == img.manifest_digest
    assert c.put_manifest("rt/app", img.manifest_digest, img.manifest, img.media_type) == img.manifest_digest


def test_real_one_shot_iterator_and_empty_blob(real_registry: DockerRegistry,
                                               mk: Callable[..., RegistryClient]) -> None:
    c = mk(real_registry.addr)
    data = os.urandom(70_000)
    c.upload_blob("rt/gen", sha256(data), len(data), iter([data[:30_000], b"", data[30_000:]]))
    assert read_blob(c, "rt/gen", sha256(data)) == data
    data2 = os.urandom(70_001)
    gen = (data2[i:i + 999] for i in range(0, len(data2), 999))
    c.upload_blob("rt/gen", sha256(data2), len(data2), gen, chunk_size=16_384)
    assert read_blob(c, "rt/gen", sha256(data2)) == data2
    c.upload_blob("rt/gen", sha256(b""), 0, [], chunk_size=100)
    assert c.blob_exists("rt/gen", sha256(b"")) == 0
    assert read_blob(c, "rt/gen", sha256(b"")) == b""


def test_real_upload_errors(real_registry: DockerRegistry, mk: Callable[..., RegistryClient]) -> None:
    c = mk(real_registry.addr)
    data = b"some bytes"
    with pytest.raises(RegistryError, match="digest invalid"):
        c.upload_blob("rt/err", "sha256:" + "1" * 64, len(data), [data])
    with pytest.raises(BlobTransferError, match="has 10 bytes, 11 declared"):
        c.upload_blob("rt/err", sha256(data), 11, [data])
    with pytest.raises(BlobTransferError, match="more than the 9 bytes"):
        c.upload_blob("rt/err", sha256(data), 9, [data], chunk_size=4)
    assert c.blob_exists("rt/err", sha256(data)) is None
    # manifest referencing unknown blobs: the registry's own error, naming the repo and tag
    img = make_test_image("unpushed\n")
    with pytest.raises(RegistryError) as ei:
        c.put_manifest("rt/err", "v1", img.manifest, img.media_type)
    assert str(ei.value).startswith("%s/rt/err:v1: manifest blob unknown: blob unknown to registry (sha256:"
                                    % real_registry.addr)


def test_real_errors_name_the_registry(real_registry: DockerRegistry, mk: Callable[..., RegistryClient]) -> None:
    c = mk(real_registry.addr)
    with pytest.raises(RegistryNotFound) as ei:
        c.get_manifest("rt/missing", "nope", ACCEPT)
    assert str(ei.value) == "%s/rt/missing:nope: manifest unknown" % real_registry.addr
    assert isinstance(ei.value, NotFound) and isinstance(ei.value, DockyardError)
    assert ei.value.status == 404 and ei.value.codes == ("MANIFEST_UNKNOWN",)
    with pytest.raises(RegistryNotFound, match="blob unknown"):
        c.open_blob("rt/missing", "sha256:" + "2" * 64)
    assert c.blob_exists("rt/missing", "sha256:" + "2" * 64) is None
    bad = "sha256:" + "3" * 64
    with pytest.raises(RegistryNotFound, match=r"/rt/missing@sha256:3{64}: manifest unknown"):
        c.get_manifest("rt/missing", bad, ACCEPT)


def test_real_mount_across_repos(real_registry: DockerRegistry, mk: Callable[..., RegistryClient]) -> None:
    c = mk(real_registry.addr)
    img = make_test_image("mount me\n")
    push_image(c, "mnt/src", "v1", img)
    assert c.blob_exists("mnt/dst", img.layer_digest) is None
    assert c.mount_blob("mnt/dst", img.layer_digest, "mnt/src") is True
    assert c.blob_exists("mnt/dst", img.layer_digest) == len(img.layer)
    # unknown blob: the registry opens an upload session instead; it is cancelled
    assert c.mount_blob("mnt/dst", "sha256:" + "4" * 64, "mnt/src") is False
    assert c.mount_blob("mnt/dst", img.config_digest, "mnt/nowhere") is False


@pytest.mark.needs_fixtures
def test_real_skopeo_seeded_image_pulls_byte_for_byte(real_registry: DockerRegistry,
                                                       mk: Callable[..., RegistryClient]) -> None:
    skopeo = need("skopeo")
    layout = FIXTURES / "oci" / "fx-edge.oci-gzip"
    if not layout.is_dir():
        missing("fixture %s is missing from the fixture tree" % layout)
    p = subprocess.run([skopeo, "copy", "--preserve-digests", "--dest-tls-verify=false",
                        "oci:%s:1" % layout, "docker://%s/fx/edge:1" % real_registry.addr],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    c = mk(real_registry.addr)
    m = c.get_manifest("fx/edge", "1", ACCEPT)
    assert m.media_type == OCI_MANIFEST
    index = json.loads((layout / "index.json").read_text())
    assert m.digest in [d["digest"] for d in index["manifests"]]
    assert m.raw == (layout / "blobs" / "sha256" / m.digest.split(":")[1]).read_bytes()
    doc = json.loads(m.raw)
    for desc in [doc["config"], *doc["layers"]]:
        h = hashlib.sha256()
        n = 0
        with c.open_blob("fx/edge", desc["digest"], size=desc["size"]) as b:
            for chunk in b.iter_bytes(1 << 16):
                h.update(chunk)
                n += len(chunk)
        assert ("sha256:" + h.hexdigest(), n) == (desc["digest"], desc["size"])
    # and a pushed copy (mount from the seeded repo + manifest by digest) reads back the same
    for desc in [doc["config"], *doc["layers"]]:
        assert c.mount_blob("fx/copy", desc["digest"], "fx/edge")
    assert c.put_manifest("fx/copy", "1", m.raw, m.media_type) == m.digest
    p = subprocess.run([skopeo, "inspect", "--raw", "--tls-verify=false",
                        "docker://%s/fx/copy:1" % real_registry.addr], capture_output=True, timeout=60)
    assert p.returncode == 0 and p.stdout == m.raw


# ============================================================================================ htpasswd (Basic)
def test_basic_auth_real_registry(htpasswd_registry: DockerRegistry, mk: Callable[..., RegistryClient]) -> None:
    addr = htpasswd_registry.addr
    c = mk(addr, credentials=Credentials("alice", "wonderland"))
    img = make_test_image("basic\n")
    assert push_image(c, "ht/app", "v1", img) == img.manifest_digest
    assert c.get_manifest("ht/app", "v1", ACCEPT).digest == img.manifest_digest
    assert read_blob(c, "ht/app", img.layer_digest) == img.layer

    with pytest.raises(AuthError) as ei:
        mk(addr, credentials=Credentials("alice", "wrong")).get_manifest("ht/app", "v1", ACCEPT)
    assert str(ei.value) == "%s/ht/app:v1: unauthorized: incorrect username or password" % addr
    with pytest.raises(AuthError) as ei:
        mk(addr).get_manifest("ht/app", "v1", ACCEPT)
    assert "unauthorized: authentication required" in str(ei.value) and addr in str(ei.value)
    assert str(ei.value).endswith("; not logged in to %s" % addr)


def test_login_logout_against_htpasswd_registry(htpasswd_registry: DockerRegistry, tmp_path: Path,
                                                certs_root: Path) -> None:
    addr = htpasswd_registry.addr
    store = CredentialStore(tmp_path / "dockercfg")
    with pytest.raises(AuthError, match="incorrect username or password"):
        login(addr, "alice", "nope", store=store, certs_dir=str(certs_root), retries=0)
    assert not store.config_path.exists()
    assert login(addr, "alice", "wonderland", store=store, certs_dir=str(certs_root)) == addr
    assert store.config_path.read_text() == (
        '{\n\t"auths": {\n\t\t"%s": {\n\t\t\t"auth": "%s"\n\t\t}\n\t}\n}'
        % (addr, base64.b64encode(b"alice:wonderland").decode()))
    assert stat.S_IMODE(store.config_path.stat().st_mode) == 0o600
    # the stored credentials are used by a client given the store
    with RegistryClient(addr, credentials=store, certs_dir=str(certs_root)) as c:
        assert c.head_manifest("ht/none", "v1", ACCEPT) is None
    assert logout(addr, store=store) is True
    assert logout(addr, store=store) is False
    assert json.loads(store.config_path.read_text()) == {"auths": {}}


# ============================================================================================ token auth (Bearer)
def test_bearer_token_flow_real_registry(token_registry: tuple[DockerRegistry, JWTTokenServer],
                                         mk: Callable[..., RegistryClient]) -> None:
    reg, ts = token_registry
    c = mk(reg.addr, credentials=Credentials("alice", "wonderland"))
    img = make_test_image("bearer\n")
    n0 = len(ts.calls)
    assert push_image(c, "tok/app", "v1", img) == img.manifest_digest
    assert c.get_manifest("tok/app", "v1", ACCEPT).digest == img.manifest_digest
    assert read_blob(c, "tok/app", img.layer_digest) == img.layer
    calls = ts.calls[n0:]
    assert all(call["user"] == "alice" and call["service"] == ts.service for call in calls)
    # tokens are cached per scope: one for pull, one for pull+push
    assert sorted(tuple(call["scopes"]) for call in calls) == [("repository:tok/app:pull",),
                                                               ("repository:tok/app:pull,push",)]
    # a mount asks for push on the target and pull on the source in one token
    n1 = len(ts.calls)
    assert c.mount_blob("tok/other", img.layer_digest, "tok/app") is True
    assert [sorted(call["scopes"]) for call in ts.calls[n1:]] == [
        ["repository:tok/app:pull", "repository:tok/other:pull,push"]]

    # anonymous: pull of public/* is allowed by the token service, push is not
    admin = mk(reg.addr, credentials=Credentials("bob", "builder"))
    push_image(admin, "public/app", "v1", img)
    anon = mk(reg.addr)
    assert anon.get_manifest("public/app", "v1", ACCEPT).digest == img.manifest_digest
    with pytest.raises(AuthError) as ei:
        anon.get_manifest("tok/app", "v1", ACCEPT)
    assert "%s/tok/app:v1: unauthorized" % reg.addr in str(ei.value)
    with pytest.raises(AuthError, match="unauthorized"):
        anon.upload_blob("public/app", sha256(b"x"), 1, [b"x"])

    with pytest.raises(AuthError) as ei:
        mk(reg.addr, credentials=Credentials("alice", "bad")).get_manifest("tok/app", "v1", ACCEPT)
    assert str(ei.value) == "%s: unauthorized: incorrect username or password" % reg.addr


def test_shared_client_across_threads(token_registry: tuple[DockerRegistry, JWTTokenServer],
                                     mk: Callable[..., RegistryClient]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    reg, _ts = token_registry
    c = mk(reg.addr, credentials=Credentials("alice", "wonderland"))
    blobs = [os.urandom(100_000 + i) for i in range(6)]

    def up(data: bytes) -> str:
        c.upload_blob("tok/threads", sha256(data), len(data), [data], chunk_size=30_000 if len(data) % 2 else None)
        return sha256(data)

    with ThreadPoolExecutor(4) as ex:
        digests = list(ex.map(up, blobs))
        got = list(ex.map(lambda d: read_blob(c, "tok/threads", d), digests))
    assert got == blobs


def test_login_with_identity_token(token_registry: tuple[DockerRegistry, JWTTokenServer], tmp_path: Path,
                                   certs_root: Path, mk: Callable[..., RegistryClient]) -> None:
    reg, ts = token_registry
    store = CredentialStore(tmp_path / "cfg")
    with pytest.raises(AuthError, match="incorrect username or password"):
        login(reg.addr, "alice", "bad", store=store, certs_dir=str(certs_root), retries=0)
    assert login(reg.addr, "alice", "wonderland", store=store, certs_dir=str(certs_root)) == reg.addr
    entry = json.loads(store.config_path.read_text())["auths"][reg.addr]
    # the token service handed out a refresh token: docker stores it as identitytoken, without the password
    assert base64.b64decode(entry["auth"]) == b"alice:" and entry["identitytoken"].startswith("rt-")
    creds = store.get(reg.addr)
    assert creds is not None and creds.identity_token == entry["identitytoken"] and creds.password == ""
    n0 = len(ts.calls)
    c = mk(reg.addr, credentials=store)
    push_image(c, "tok/idt", "v1", make_test_image("identity\n"))
    posts = [call for call in ts.calls[n0:] if call["method"] == "POST"]
    assert posts and all(p["form"]["grant_type"] == ["refresh_token"] for p in posts)


def test_bearer_access_token_key_and_renewal(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                                             mk: Callable[..., RegistryClient]) -> None:
    ts = OpaqueTokenServer({"alice": "pw"}, token_key="access_token")
    tsrv = FakeServer(ts).start()
    ts.server = tsrv
    try:
        app, srv = fake(auth="bearer", token_server=ts)
        img = make_test_image("opaque\n")
        app.put_blob("o/app", img.layer)
        app.put_manifest("o/app", "v1", img.manifest, img.media_type)
        c = mk(srv.addr, credentials=Credentials("alice", "pw"))
        assert c.get_manifest("o/app", "v1", ACCEPT).digest == img.manifest_digest
        assert read_blob(c, "o/app", img.layer_digest) == img.layer
        assert len(ts.calls) == 1  # cached
        ts.tokens.clear()  # the registry forgets the token (expired): 401 -> a new token, once
        assert c.get_manifest("o/app", "v1", ACCEPT).digest == img.manifest_digest
        assert len(ts.calls) == 2
        # insufficient scope on a push: the challenge's scope is asked for, then it works
        c.upload_blob("o/app", sha256(b"abc"), 3, [b"abc"])
        assert ts.calls[-1] == ("alice", ["repository:o/app:pull,push"])
    finally:
        tsrv.stop()


# ============================================================================================ retries
def test_retries_429_and_503_then_success(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                                          mk: Callable[..., RegistryClient]) -> None:
    app, srv = fake()
    img = make_test_image("retry\n")
    app.put_manifest("r/app", "v1", img.manifest, img.media_type)
    app.put_blob("r/app", img.layer)
    app.fail("GET", "/manifests/", 429, times=2, headers={"Retry-After": "0"},
             body={"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]})
    app.fail("GET", "/blobs/", 503, times=1)
    app.fail("HEAD", "/blobs/", 502, times=1)
    app.fail("GET", "^/v2/$", 504, times=1)
    c = mk(srv.addr, retries=3)
    assert c.get_manifest("r/app", "v1", ACCEPT).digest == img.manifest_digest
    assert len(srv.requests("GET", "/manifests/")) == 3
    assert read_blob(c, "r/app", img.layer_digest) == img.layer
    assert c.blob_exists("r/app", img.layer_digest) == len(img.layer)
    assert len(srv.requests("GET", "^/v2/$")) == 2


def test_retry_after_is_honoured_and_bounded(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                                             mk: Callable[..., RegistryClient],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The waits the client decides on (recorded, and still really slept), never the elapsed time."""
    waits: list[tuple[float | None, float | None]] = []  # (Retry-After given, delay chosen; None = give up)
    real_next_delay = Backoff.next_delay

    def next_delay(self: Backoff, retry_after: float | None = None) -> float | None:
        d = real_next_delay(self, retry_after)
        waits.append((retry_after, d))
        return d

    monkeypatch.setattr(Backoff, "next_delay", next_delay)
    app, srv = fake()
    img = make_test_image("later\n")
    app.put_manifest("r/app", "v1", img.manifest, img.media_type)
    app.fail("GET", "/manifests/", 429, times=1, headers={"Retry-After": "1"})
    c = mk(srv.addr, backoff_max=1)
    c.get_manifest("r/app", "v1", ACCEPT)
    assert waits == [(1.0, 1.0)], "one wait of the Retry-After's 1 s, got %s" % waits
    assert len(srv.requests("GET", "/manifests/")) == 2
    waits.clear()
    # a huge Retry-After beyond the retry budget: give up at once with the registry's message
    app.fail("GET", "/manifests/", 429, times=1, headers={"Retry-After": "3600"},
             body={"errors": [{"code": "TOOMANYREQUESTS", "message": "You have reached your pull rate limit"}]})
    c2 = mk(srv.addr, backoff_max=100, retry_budget=5)
    with pytest.raises(RegistryError) as ei:
        c2.get_manifest("r/app", "v1", ACCEPT)
    assert waits and all(d is None for _, d in waits), "a 3600 s Retry-After must give up at once, waits: %s" % waits
    assert str(ei.value) == "%s/r/app:v1: toomanyrequests: You have reached your pull rate limit" % srv.addr
    assert ei.value.status == 429


def test_retries_give_up_and_4xx_is_never_retried(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                                                  mk: Callable[..., RegistryClient]) -> None:
    app, srv = fake()
    app.fail("GET", "/manifests/a$", 500, times=-1, body={"errors": [{"code": "UNKNOWN", "message": "boom"}]})
    c = mk(srv.addr, retries=2)
    with pytest.raises(RegistryError, match="/r/app:a: unknown: boom") as ei:
        c.get_manifest("r/app", "a", ACCEPT)
    assert ei.value.status == 500
    assert len(srv.requests("GET", "/manifests/a$")) == 3
    app.fail("GET", "/manifests/b$", 400, times=-1,
             body={"errors": [{"code": "MANIFEST_INVALID", "message": "manifest invalid", "detail": "bad"}]})
    with pytest.raises(RegistryError, match=r"/r/app:b: manifest invalid \(bad\)"):
        c.get_manifest("r/app", "b", ACCEPT)
    assert len(srv.requests("GET", "/manifests/b$")) == 1
    app.fail("GET", "/manifests/c$", 403, times=-1,
             body={"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]})
    with pytest.raises(AuthError, match="/r/app:c: denied: requested access to the resource is denied"):
        c.get_manifest("r/app", "c", ACCEPT)
    assert len(srv.requests("GET", "/manifests/c$")) == 1
    assert c.head_manifest("r/app", "d", ACCEPT) is None
    assert len(srv.requests("HEAD", "/manifests/d$")) == 1


def test_connection_reset_is_retried(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                                     mk: Callable[..., RegistryClient]) -> None:
    app, srv = fake()
    img = make_test_image("reset\n")
    app.put_manifest("r/app", "v1", img.manifest, img.media_type)
    app.add_fault("GET", "/manifests/", Request.drop, times=2)
    c = mk(srv.addr)
    assert c.get_manifest("r/app", "v1", ACCEPT).digest == img.manifest_digest
    assert len(srv.requests("GET", "/manifests/")) == 3
    app.add_fault("GET", "/manifests/", Request.drop, times=-1)
    with pytest.raises(RegistryError, match="connection to %s failed" % srv.addr):
        mk(srv.addr, retries=1).get_manifest("r/app", "v1", ACCEPT)


# ============================================================================================ auth oddities
def test_401_without_challenge(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                               mk: Callable[..., RegistryClient]) -> None:
    _app, srv = fake(auth="no-challenge")
    with pytest.raises(AuthError) as ei:
        mk(srv.addr).get_manifest("r/app", "v1", ACCEPT)
    assert str(ei.value) == ("%s: http://%s/v2/ returned 401 Unauthorized without an authentication challenge"
                             % (srv.addr, srv.addr))
    # the ping passes, a later request is refused without a challenge
    app2, srv2 = fake()
    app2.add_fault("GET", "/manifests/", lambda r: r.error(401, "UNAUTHORIZED", "authentication required"))
    with pytest.raises(AuthError, match="401 Unauthorized without an authentication challenge"):
        mk(srv2.addr).get_manifest("r/app", "v1", ACCEPT)
    # a challenge dockyard cannot answer is no better
    app3, srv3 = fake()
    app3.add_fault("GET", "^/v2/$", lambda r: r.respond(401, b"", {"WWW-Authenticate": "Negotiate"}))
    with pytest.raises(AuthError, match=r"without a usable authentication challenge \(WWW-Authenticate: Negotiate\)"):
        mk(srv3.addr).get_manifest("r/app", "v1", ACCEPT)


def test_basic_auth_fake_and_credentials_from_store(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                                                    mk: Callable[..., RegistryClient], tmp_path: Path) -> None:
    app, srv = fake(auth="basic", users={"u": "p:w"})
    img = make_test_image("basic fake\n")
    app.put_manifest("r/app", "v1", img.manifest, img.media_type)
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({"auths": {"http://%s/v2/" % srv.addr: {
        "auth": base64.b64encode(b"u:p:w").decode()}}}))
    c = mk(srv.addr, credentials=CredentialStore(cfg))
    assert c.get_manifest("r/app", "v1", ACCEPT).digest == img.manifest_digest
    assert all(r.headers.get("Authorization") for r in srv.requests(path_re="/manifests/"))


# ============================================================================================ blob transfer faults
def _truncating(data: bytes, at: int, **kw: Any) -> Callable[[Request], None]:
    return lambda req: serve_bytes(req, data, truncate_at=at, **kw)


def test_short_body_wrong_content_length(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                                         mk: Callable[..., RegistryClient]) -> None:
    app, srv = fake()
    data = os.urandom(300_000)
    d = app.put_blob("r/app", data)
    # Content-Length says 300000, only 100000 arrive, then the connection closes
    app.add_fault("GET", "/blobs/", _truncating(data, 100_000), times=1)
    c0 = mk(srv.addr, retries=0)
    with pytest.raises(BlobTransferError) as ei:
        read_blob(c0, "r/app", d)
    assert str(ei.value).startswith("%s/r/app@%s: download broken after 100000 of 300000 bytes" % (srv.addr, d))
    # with retries the stream resumes with Range from where it broke
    app.add_fault("GET", "/blobs/", _truncating(data, 123_456), times=1)
    c = mk(srv.addr)
    with c.open_blob("r/app", d, size=len(data)) as b:
        got = b"".join(b.iter_bytes(10_000))
        assert b.resumes == 1
    assert got == data
    gets = srv.requests("GET", "/blobs/")
    assert gets[-1].headers.get("Range") == "bytes=123456-"
    assert all(r.headers.get("Accept-Encoding") == "identity" for r in gets)


def test_disconnect_mid_blob_then_explicit_range_resume(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                                                        mk: Callable[..., RegistryClient]) -> None:
    app, srv = fake()
    data = os.urandom(250_000)
    d = app.put_blob("r/app", data)
    app.add_fault("GET", "/blobs/", _truncating(data, 77_777), times=1)
    c = mk(srv.addr, retries=0)
    got = bytearray()
    with pytest.raises(BlobTransferError, match="download broken after 77777 of 250000 bytes"), \
            c.open_blob("r/app", d) as b:
        for chunk in b.iter_bytes(4096):
            got += chunk
    assert len(got) == 77_777  # every byte that arrived was yielded before the error
    with c.open_blob("r/app", d, offset=len(got)) as b:
        assert (b.offset, b.size, b.restarted) == (77_777, 250_000, False)
        for chunk in b.iter_bytes():
            got += chunk
    assert sha256(bytes(got)) == d


def test_server_ignoring_range(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                               mk: Callable[..., RegistryClient]) -> None:
    app, srv = fake(ignore_range=True)
    data = os.urandom(100_000)
    d = app.put_blob("r/app", data)
    c = mk(srv.addr)
    with c.open_blob("r/app", d, offset=60_000) as b:
        assert (b.restarted, b.offset, b.size) == (True, 0, 100_000)
        assert b"".join(b.iter_bytes()) == data  # restarted from 0, and verified
    # a transparent resume against such a server skips what was already yielded
    app.add_fault("GET", "/blobs/", _truncating(data, 40_000, ignore_range=True), times=1)
    with c.open_blob("r/app", d) as b:
        assert b"".join(b.iter_bytes(8192)) == data
        assert b.resumes == 1


def test_blob_digest_and_size_checks(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                                     mk: Callable[..., RegistryClient]) -> None:
    app, srv = fake()
    data = os.urandom(5000)
    wrong = "sha256:" + "5" * 64
    app.blobs[wrong] = data
    app.repo_blobs["r/app"] = {wrong}
    c = mk(srv.addr)
    with pytest.raises(DigestMismatch, match="downloaded content has digest %s" % sha256(data)):
        read_blob(c, "r/app", wrong)
    assert read_blob(c, "r/app", wrong, verify=False) == data
    d = app.put_blob("r/app", data)
    with pytest.raises(BlobTransferError, match="reports 5000 bytes, expected 6000"):
        c.open_blob("r/app", d, size=6000)
    # a Content-Range that does not start where asked is refused
    app.add_fault("GET", "/blobs/", lambda r: r.respond(206, data[10:], {"Content-Range": "bytes 10-4999/5000"}))
    with pytest.raises(BlobTransferError, match="asked for bytes from 100, the registry sent them from 10"):
        c.open_blob("r/app", d, offset=100)


def test_blob_redirect_to_another_host_drops_authorization(
        fake: Callable[..., tuple[FakeRegistry, FakeServer]], mk: Callable[..., RegistryClient]) -> None:
    data = os.urandom(150_000)
    storage_log: list[Request] = []

    def storage(req: Request) -> None:
        storage_log.append(req)
        serve_bytes(req, data)

    host = "127.0.0.2"
    try:
        ssrv = FakeServer(storage, host=host).start()
    except OSError:
        ssrv = FakeServer(storage).start()  # another port is another origin too
    try:
        app, srv = fake(auth="basic", users={"u": "p"}, blob_redirect=ssrv.url)
        d = app.put_blob("r/app", data)
        c = mk(srv.addr, credentials=Credentials("u", "p"))
        assert read_blob(c, "r/app", d) == data
        assert c.blob_exists("r/app", d) == len(data)
        with c.open_blob("r/app", d, offset=1000) as b:
            assert b.offset == 1000 and b.url.startswith(ssrv.url)
            assert b"".join(b) == data[1000:]
        assert storage_log and all(r.headers.get("Authorization") is None for r in storage_log)
        assert storage_log[-1].headers.get("Range") == "bytes=1000-"
        assert all(r.headers.get("Authorization") for r in srv.requests(path_re="/blobs/"))
        # a redirect within the registry's origin keeps the credentials
        app.blob_redirect = None
        app.add_fault("GET", "/blobs/", lambda r: r.respond(302, b"", {"Location": "/v2/r/app/blobs/%s" % d}))
        assert read_blob(c, "r/app", d) == data
        assert srv.requests("GET", "/blobs/")[-1].headers.get("Authorization", "").startswith("Basic ")
    finally:
        ssrv.stop()


# ============================================================================================ manifests
def test_manifest_too_large(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                            mk: Callable[..., RegistryClient]) -> None:
    app, srv = fake()
    big = b'{"schemaVersion":2,"x":"' + b"a" * (4 << 20) + b'"}'
    app.put_manifest("r/app", "big", big, OCI_MANIFEST)
    c = mk(srv.addr)
    with pytest.raises(ManifestTooLarge, match=r"/r/app:big: manifest too large \(%d bytes" % len(big)):
        c.get_manifest("r/app", "big", ACCEPT)

    def chunked(req: Request) -> None:  # no Content-Length: counted while reading
        h = req.handler
        h.send_response(200)
        h.send_header("Content-Type", OCI_MANIFEST)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        piece = b"b" * 65536
        try:
            for _ in range(80):
                h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            h.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        req.answered = True

    app.add_fault("GET", "/manifests/chunked", chunked)
    with pytest.raises(ManifestTooLarge, match="more than 4 MiB"):
        c.get_manifest("r/app", "chunked", ACCEPT)
    ok = b'{"schemaVersion":2,"x":"' + b"a" * ((4 << 20) - 100) + b'"}'
    app.put_manifest("r/app", "ok", ok, OCI_MANIFEST)
    assert len(c.get_manifest("r/app", "ok", ACCEPT).raw) == len(ok)


def test_manifest_digest_verification_and_media_types(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                                                      mk: Callable[..., RegistryClient]) -> None:
    app, srv = fake()
    img = make_test_image("verify\n")
    app.put_manifest("r/app", "v1", img.manifest, img.media_type)
    c = mk(srv.addr)
    other = make_test_image("other\n")
    app.manifests[("r/app", img.manifest_digest)] = (other.manifest, OCI_MANIFEST)  # served under the wrong digest
    with pytest.raises(DigestMismatch, match="manifest digest mismatch"):
        c.get_manifest("r/app", img.manifest_digest, ACCEPT)
    app.add_fault("GET", "/manifests/v1", lambda r: r.respond(200, img.manifest, {
        "Content-Type": OCI_MANIFEST, "Docker-Content-Digest": other.manifest_digest}))
    with pytest.raises(DigestMismatch, match="Docker-Content-Digest is %s" % other.manifest_digest):
        c.get_manifest("r/app", "v1", ACCEPT)
    # generic Content-Type: the media type comes from the body
    app.add_fault("GET", "/manifests/v1", lambda r: r.respond(200, img.manifest, {"Content-Type": "application/json"}))
    assert c.get_manifest("r/app", "v1", ACCEPT).media_type == OCI_MANIFEST
    # HEAD without Docker-Content-Digest falls back to GET
    app.add_fault("HEAD", "/manifests/v1", lambda r: r.respond(200, b"", {"Content-Type": OCI_MANIFEST},
                                                               content_length=len(img.manifest)))
    assert c.head_manifest("r/app", "v1", ACCEPT) == (img.manifest_digest, OCI_MANIFEST)
    # Accept header carries every requested type
    assert srv.requests("GET", "/manifests/")[-1].headers["Accept"] == ", ".join(ACCEPT)
    # a registry that claims another digest for a pushed manifest
    app.add_fault("PUT", "/manifests/", lambda r: r.respond(201, b"", {"Docker-Content-Digest": other.manifest_digest}))
    with pytest.raises(DigestMismatch, match="stored the manifest as %s" % other.manifest_digest):
        c.put_manifest("r/app", "v2", img.manifest, img.media_type)
    with pytest.raises(DigestMismatch):
        c.put_manifest("r/app", other.manifest_digest, img.manifest, img.media_type)


# ============================================================================================ uploads with faults
def test_monolithic_upload_restarts_session(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                                            mk: Callable[..., RegistryClient]) -> None:
    app, srv = fake(relative_locations=False)
    data = os.urandom(90_000)
    d = sha256(data)
    app.fail("POST", "/blobs/uploads/$", 503, times=1)
    app.fail("PUT", "/blobs/uploads/.", 503, times=1)
    c = mk(srv.addr)
    opened = []

    def source() -> Iterator[bytes]:
        opened.append(1)
        for i in range(0, len(data), 10_000):
            yield data[i:i + 10_000]

    c.upload_blob("r/app", d, len(data), source)
    assert app.blobs[d] == data and len(opened) == 2
    assert len(srv.requests("POST", "/blobs/uploads/$")) == 3
    assert len(srv.requests("DELETE", "/blobs/uploads/.")) == 1  # the failed session was cancelled
    assert not app.uploads
    # a one-shot generator cannot be restarted: a clear error, and the session is cancelled
    app.fail("PUT", "/blobs/uploads/.", 503, times=1)
    data2 = os.urandom(1000)
    with pytest.raises(RegistryError, match="cannot be read again"):
        c.upload_blob("r/app", sha256(data2), len(data2), (x for x in [data2]))
    assert not app.uploads


def test_chunked_upload_survives_lost_answers(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                                              mk: Callable[..., RegistryClient]) -> None:
    app, srv = fake()
    data = os.urandom(50_000)
    d = sha256(data)
    calls = {"n": 0}

    def patch_then_drop(req: Request) -> None:
        # the 2nd PATCH is stored by the registry but its answer is lost
        calls["n"] += 1
        uid = req.path.rsplit("/", 1)[1]
        app.uploads[uid] += req.body
        req.drop()

    app.add_fault("PATCH", "/blobs/uploads/.", lambda r: r.error(503, "UNAVAILABLE", "busy"), times=1)
    c = mk(srv.addr)
    orig_faults = app.faults
    c.upload_blob("r/app", d, len(data), (data[i:i + 3000] for i in range(0, len(data), 3000)), chunk_size=16_384)
    assert app.blobs[d] == data
    patches = srv.requests("PATCH")
    assert [p.headers["Content-Range"] for p in patches] == ["0-16383", "0-16383", "16384-32767", "32768-49151",
                                                             "49152-49999"]
    app.faults = orig_faults
    app.add_fault("PATCH", "/blobs/uploads/.", patch_then_drop, times=1)
    data2 = os.urandom(40_000)
    c.upload_blob("r/app", sha256(data2), len(data2), iter([data2]), chunk_size=16_384)
    assert app.blobs[sha256(data2)] == data2 and calls["n"] == 1
    assert len(srv.requests("GET", "/blobs/uploads/.")) >= 2  # the upload status was asked


def test_chunked_upload_final_put_answer_lost(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                                              mk: Callable[..., RegistryClient]) -> None:
    app, srv = fake()
    data = os.urandom(20_000)
    d = sha256(data)

    def put_then_drop(req: Request) -> None:  # the registry completes the upload, the answer is lost
        buf = app.uploads.pop(req.path.rsplit("/", 1)[1])
        app.blobs[d] = bytes(buf) + req.body
        app.repo_blobs.setdefault("r/app", set()).add(d)
        req.drop()

    app.add_fault("PUT", "/blobs/uploads/.", put_then_drop, times=1)
    c = mk(srv.addr)
    c.upload_blob("r/app", d, len(data), iter([data]), chunk_size=8192)
    assert app.blobs[d] == data
    assert len(srv.requests("PUT")) == 2  # the retried PUT found no session; the blob was there


def test_token_renewed_between_chunks(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                                      mk: Callable[..., RegistryClient]) -> None:
    ts = OpaqueTokenServer({"alice": "pw"})
    tsrv = FakeServer(ts).start()
    ts.server = tsrv
    try:
        app, srv = fake(auth="bearer", token_server=ts)
        seen = {"patches": 0}

        def expire_on_second_patch(req: Request) -> None:
            seen["patches"] += 1
            if seen["patches"] == 2:
                ts.tokens.clear()  # the token expired on the server side
            if app._authorized(req):
                app._uploads(req, "r/app", req.path.rsplit("/", 1)[1])

        app.add_fault("PATCH", "/blobs/uploads/.", expire_on_second_patch, times=-1)
        data = os.urandom(30_000)
        c = mk(srv.addr, credentials=Credentials("alice", "pw"))
        c.upload_blob("r/app", sha256(data), len(data), iter([data]), chunk_size=10_000)
        assert app.blobs[sha256(data)] == data
        assert seen["patches"] == 4  # the refused chunk was sent again with a new token
        assert len(ts.calls) == 2
    finally:
        tsrv.stop()


def test_mount_refused_cancels_session(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                                       mk: Callable[..., RegistryClient]) -> None:
    app, srv = fake()
    d = app.put_blob("r/src", b"mounted")
    c = mk(srv.addr)
    assert c.mount_blob("r/dst", d, "r/src") is True
    assert c.mount_blob("r/dst2", d, "r/elsewhere") is False
    assert len(srv.requests("DELETE")) == 1 and not app.uploads
    post = srv.requests("POST")[-1]
    assert post.q("mount") == d and post.q("from") == "r/elsewhere"


def test_loopback_is_never_proxied(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                                   mk: Callable[..., RegistryClient], monkeypatch: pytest.MonkeyPatch) -> None:
    app, srv = fake()
    img = make_test_image("proxy\n")
    app.put_manifest("r/app", "v1", img.manifest, img.media_type)
    dead = "http://127.0.0.1:%d" % _closed_port()
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(k, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert mk(srv.addr).get_manifest("r/app", "v1", ACCEPT).digest == img.manifest_digest
    assert mk("localhost:%d" % srv.port).get_manifest("r/app", "v1", ACCEPT).digest == img.manifest_digest


# ============================================================================================ TLS
@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    need("openssl")
    return make_certs(tmp_path_factory.mktemp("pki"))


def _tls_server(certs: Any, app: Any, *, client_ca: bool = False) -> FakeServer:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(certs.server_crt), str(certs.server_key))
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(certs.ca_crt))
    srv = FakeServer(app, ssl_context=ctx).start()
    app.server = srv
    return srv


def test_tls_with_certs_d_ca_and_client_certificate(certs: Any, mk: Callable[..., RegistryClient],
                                                    certs_root: Path) -> None:
    app = FakeRegistry()
    img = make_test_image("tls\n")
    app.put_manifest("r/app", "v1", img.manifest, img.media_type)
    srv = _tls_server(certs, app, client_ca=True)
    try:
        d = certs_root / srv.addr
        d.mkdir()
        (d / "ca.crt").write_bytes(certs.ca_crt.read_bytes())
        # without a client certificate the server refuses the handshake
        with pytest.raises(RegistryError, match="%s" % srv.addr):
            mk(srv.addr, retries=0).get_manifest("r/app", "v1", ACCEPT)
        (d / "client.cert").write_bytes(certs.client_crt.read_bytes())
        (d / "client.key").write_bytes(certs.client_key.read_bytes())
        c = mk(srv.addr)
        assert c.get_manifest("r/app", "v1", ACCEPT).digest == img.manifest_digest
        assert (c.endpoint.scheme, c.endpoint.verify) == ("https", True)
        (d / "client.key").unlink()
        with pytest.raises(RegistryError, match=r"missing key client\.key for client certificate"):
            mk(srv.addr).get_manifest("r/app", "v1", ACCEPT)
    finally:
        srv.stop()


def test_tls_verification_failure_and_insecure_fallbacks(certs: Any, mk: Callable[..., RegistryClient],
                                                         certs_root: Path, tmp_path: Path) -> None:
    app = FakeRegistry()
    img = make_test_image("tls2\n")
    app.put_manifest("r/app", "v1", img.manifest, img.media_type)
    srv = _tls_server(certs, app)
    try:
        # loopback, no certs.d, not listed: plain http first, then https without verification (as dockerd)
        c = mk(srv.addr)
        assert c.get_manifest("r/app", "v1", ACCEPT).digest == img.manifest_digest
        assert (c.endpoint.scheme, c.endpoint.verify) == ("https", False)
        # listed as insecure: https without verification first
        c = mk(srv.addr, insecure_registries=[srv.addr])
        assert c.get_manifest("r/app", "v1", ACCEPT).digest == img.manifest_digest
        assert (c.endpoint.scheme, c.endpoint.verify) == ("https", False)
        # a certs.d directory with the wrong CA: verification fails with a clear message
        other = tmp_path / "other"
        other.mkdir()
        d = certs_root / srv.addr
        d.mkdir()
        from registry_servers import openssl
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "o.key", "-out", "o.crt", "-days", "1",
                "-subj", "/CN=other CA", cwd=other)
        (d / "ca.crt").write_bytes((other / "o.crt").read_bytes())
        with pytest.raises(RegistryError) as ei:
            mk(srv.addr, retries=0).get_manifest("r/app", "v1", ACCEPT)
        msg = str(ei.value)
        assert "TLS handshake with %s failed" % srv.addr in msg and "CERTIFICATE_VERIFY_FAILED" in msg
        assert "ca.crt" in msg and "\n" not in msg
    finally:
        srv.stop()
    # and a plain-http loopback registry is reached directly; listed as insecure, after https failed
    plain = FakeServer(app).start()
    try:
        c = mk(plain.addr)
        assert c.get_manifest("r/app", "v1", ACCEPT).digest == img.manifest_digest
        assert c.endpoint.scheme == "http"
        c = mk(plain.addr, insecure_registries=["127.0.0.0/8"])
        assert c.get_manifest("r/app", "v1", ACCEPT).digest == img.manifest_digest
        assert c.endpoint.scheme == "http"
    finally:
        plain.stop()


def test_real_registry_over_tls(certs: Any, tmp_path: Path, mk: Callable[..., RegistryClient],
                                certs_root: Path) -> None:
    with DockerRegistry(tmp_path / "tlsreg", tls=certs) as reg:
        d = certs_root / reg.addr
        d.mkdir()
        (d / "ca.crt").write_bytes(certs.ca_crt.read_bytes())
        c = mk(reg.addr)
        img = make_test_image("tls registry\n", size=50_000)
        assert push_image(c, "tls/app", "v1", img, chunk_size=20_000) == img.manifest_digest
        assert (c.endpoint.scheme, c.endpoint.verify) == ("https", True)
        assert read_blob(c, "tls/app", img.layer_digest) == img.layer


# ============================================================================================ credentials
@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake docker-credential-dytest on PATH; returns its JSON store file."""
    bindir = tmp_path / "bin"
    store = tmp_path / "helper-store.json"
    write_credential_helper(bindir, "dytest", store)
    monkeypatch.setenv("PATH", "%s%s%s" % (bindir, os.pathsep, os.environ.get("PATH", "")))
    return store


def _write_cfg(d: Path, cfg: dict[str, Any]) -> CredentialStore:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg))
    return CredentialStore(d)


def test_credentials_from_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    store = _write_cfg(tmp_path / "c", {"auths": {
        "https://index.docker.io/v1/": {"auth": b64("hubuser:hubpass")},
        "localhost:5000": {"auth": b64("u1:p:with:colons\x00")},
        "https://reg.example.com/v1/": {"username": "u2", "password": "p2"},
        "tok.example.com": {"auth": b64("u3:"), "identitytoken": "idt"},
        "empty.example.com": {},
    }, "psFormat": "table"})
    assert store.get("docker.io") == Credentials("hubuser", "hubpass")
    assert store.get("index.docker.io") == Credentials("hubuser", "hubpass")
    assert store.get("localhost:5000") == Credentials("u1", "p:with:colons")
    assert store.get("reg.example.com") == Credentials("u2", "p2")
    assert store.get("tok.example.com") == Credentials("u3", "", "idt")
    assert store.get("empty.example.com") is None
    assert store.get("nowhere:1") is None
    assert "p2" not in repr(store.get("reg.example.com"))
    assert registry_key("docker.io") == "https://index.docker.io/v1/"
    assert registry_key("https://localhost:5000/v2/") == "localhost:5000"
    # $DOCKER_CONFIG is the default location
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "c"))
    assert CredentialStore().get("localhost:5000") == Credentials("u1", "p:with:colons")
    monkeypatch.delenv("DOCKER_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert CredentialStore().config_path == tmp_path / "home" / ".docker" / "config.json"
    # broken files are clear errors
    (tmp_path / "c" / "config.json").write_text("{nope")
    with pytest.raises(CredentialError, match=r"invalid docker config file .*config\.json"):
        store.get("localhost:5000")
    _write_cfg(tmp_path / "c", {"auths": {"x.io": {"auth": b64("nocolon")}}})
    with pytest.raises(CredentialError, match=r"invalid auth for x\.io"):
        store.get("x.io")


def test_store_writes_like_docker_cli(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "new" / "dir")
    assert store.store("localhost:5000", Credentials("user", "pass")) == "localhost:5000"
    p = store.config_path
    assert p.read_text() == '{\n\t"auths": {\n\t\t"localhost:5000": {\n\t\t\t"auth": "dXNlcjpwYXNz"\n\t\t}\n\t}\n}'
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert stat.S_IMODE(p.parent.stat().st_mode) == 0o700
    assert store.store("docker.io", Credentials("hub", "pw")) == "https://index.docker.io/v1/"
    assert list(json.loads(p.read_text())["auths"]) == ["https://index.docker.io/v1/", "localhost:5000"]
    # other keys (and their order) survive; an existing symlinked config.json stays a symlink
    real = tmp_path / "real.json"
    real.write_text(json.dumps({"psFormat": "table {{.ID}}", "auths": {"a.io": {"auth": "YTpi", "email": "a@b"}},
                                "plugins": {"x": {"y": "<z>"}}}))
    os.chmod(real, 0o644)
    d = tmp_path / "linked"
    d.mkdir()
    (d / "config.json").symlink_to(real)
    s2 = CredentialStore(d)
    s2.store("a.io", Credentials("n", "m"))
    assert (d / "config.json").is_symlink()
    assert real.read_text() == ('{\n\t"psFormat": "table {{.ID}}",\n\t"auths": {\n\t\t"a.io": {\n\t\t\t"auth": '
                                '"bjpt",\n\t\t\t"email": "a@b"\n\t\t}\n\t},\n\t"plugins": {\n\t\t"x": {\n\t\t\t"y": '
                                '"\\u003cz\\u003e"\n\t\t}\n\t}\n}')
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert s2.erase("a.io") is True and s2.erase("a.io") is False
    assert json.loads(real.read_text())["auths"] == {}
    assert [n for n in os.listdir(tmp_path / "new" / "dir")] == ["config.json"]  # no temp files left


def test_credential_helpers(tmp_path: Path, helper: Path) -> None:
    store = _write_cfg(tmp_path / "c", {"auths": {"h.io": {"auth": base64.b64encode(b"file:only").decode()}},
                                        "credHelpers": {"h.io": "dytest"}, "other": 1})
    assert store.get("h.io") is None  # the helper has nothing; the file's auth is not used (docker CLI)
    assert store.store("h.io", Credentials("hu", "hp")) == "h.io"
    assert json.loads(helper.read_text()) == {"h.io": {"Username": "hu", "Secret": "hp"}}
    cfg = json.loads(store.config_path.read_text())
    assert cfg["auths"]["h.io"] == {} and cfg["other"] == 1 and cfg["credHelpers"] == {"h.io": "dytest"}
    assert store.get("h.io") == Credentials("hu", "hp")
    assert store.get("https://h.io/v2/") == Credentials("hu", "hp")
    log = Path(str(helper) + ".log").read_text().splitlines()
    assert log[0] == "get\th.io" and log[1].startswith("store\t{")
    # identity tokens travel as Username "<token>"
    store.store("h.io", Credentials("hu", "", "tok123"))
    assert json.loads(helper.read_text())["h.io"] == {"Username": "<token>", "Secret": "tok123"}
    assert store.get("h.io") == Credentials(identity_token="tok123")
    assert store.erase("h.io") is True
    assert store.get("h.io") is None
    # credsStore applies to every registry without its own credHelper
    s2 = _write_cfg(tmp_path / "c2", {"credsStore": "dytest"})
    s2.store("docker.io", Credentials("hub", "x"))
    assert json.loads(helper.read_text())["https://index.docker.io/v1/"] == {"Username": "hub", "Secret": "x"}
    assert s2.get("index.docker.io") == Credentials("hub", "x")
    assert json.loads(s2.config_path.read_text()) == {"auths": {"https://index.docker.io/v1/": {}},
                                                      "credsStore": "dytest"}
    # a missing helper program is a clear error
    s3 = _write_cfg(tmp_path / "c3", {"credsStore": "absent-helper"})
    with pytest.raises(CredentialError, match=r"docker-credential-absent-helper .*not found"):
        s3.get("a.io")


def test_login_through_credential_helper(fake: Callable[..., tuple[FakeRegistry, FakeServer]], tmp_path: Path,
                                         helper: Path, certs_root: Path, mk: Callable[..., RegistryClient]) -> None:
    app, srv = fake(auth="basic", users={"u": "secret"})
    img = make_test_image("helper\n")
    app.put_manifest("r/app", "v1", img.manifest, img.media_type)
    store = _write_cfg(tmp_path / "c", {"credsStore": "dytest"})
    with pytest.raises(AuthError, match="%s: unauthorized: incorrect username or password" % srv.addr):
        login(srv.addr, "u", "bad", store=store, certs_dir=str(certs_root), retries=0)
    assert not helper.exists()
    assert login(srv.addr, "u", "secret", store=store, certs_dir=str(certs_root)) == srv.addr
    assert json.loads(helper.read_text()) == {srv.addr: {"Username": "u", "Secret": "secret"}}
    assert mk(srv.addr, credentials=store).get_manifest("r/app", "v1", ACCEPT).digest == img.manifest_digest
    assert logout(srv.addr, store=store) is True
    assert json.loads(helper.read_text()) == {}
    assert json.loads(store.config_path.read_text()) == {"credsStore": "dytest", "auths": {}}


def test_registry_without_auth_accepts_login(fake: Callable[..., tuple[FakeRegistry, FakeServer]], tmp_path: Path,
                                             certs_root: Path) -> None:
    _app, srv = fake()
    store = CredentialStore(tmp_path / "c")
    assert login(srv.addr, "any", "thing", store=store, certs_dir=str(certs_root)) == srv.addr
    assert store.get(srv.addr) == Credentials("any", "thing")


def test_httpx_is_http11_only(fake: Callable[..., tuple[FakeRegistry, FakeServer]],
                              mk: Callable[..., RegistryClient]) -> None:
    _app, srv = fake()
    c = mk(srv.addr)
    c.head_manifest("r/app", "v1", ACCEPT)
    assert srv.log[-1].handler.request_version == "HTTP/1.1"
    assert srv.log[-1].headers["User-Agent"].startswith("dockyard/")
    assert isinstance(c._http, httpx.Client)
