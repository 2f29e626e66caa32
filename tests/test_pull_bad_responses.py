"""Acceptance (bad responses, 5): a registry that misbehaves gives ONE clear error line and leaves the store as
it was.

A FakeRegistry (tests/registry_servers.py) serves a good two-layer image `bad/app:1` plus broken variants; each
case injects one fault (or pulls one broken variant) into a data-root that already holds another image (pulled
from the same server), then:

* the pull exits non-zero with exactly one stderr line `Error: ...`, no traceback, and the line says what went
  wrong (a per-case pattern: the digest, `unauthorized`, the media type, ...);
* the data-root is as it was, compared with a snapshot taken right before (type, mode, owner, size, content
  hash, xattrs of every path): no new image, tag, layerdb dir, overlay2 dir, l/ link, distribution/ record,
  and nothing left in layerdb/tmp. Under `tmp/` only `tmp/dockyard-pull/` may appear, holding `<hex>.partial`
  files that are a *verified prefix* of the real blob `sha256:<hex>` (bytes the registry served correctly and
  a later pull may resume from); a partial file holding anything else (wrong bytes) fails the case, because the
  next pull would resume from it;
* after the fault is gone, a pull of the good image succeeds (the failure did not wedge the store).
"""
from __future__ import annotations

import gzip
import json
import re
import shutil
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import peers
from conftest import diff_snapshots
from faultlib import clone_root, snapshot
from pulllib import (
    BuiltImage,
    StoreFacts,
    build_image,
    clean_error,
    dy,
    dy_ok,
    isolated_docker_config,  # noqa: F401  (autouse fixture)
    sha256_bytes,
    show,
)
from registry_servers import FakeRegistry, FakeServer, Request, serve_bytes

pytestmark = [pytest.mark.peers, pytest.mark.timeout(300)]

REPO = "bad/app"
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"


def _good() -> BuiltImage:
    return build_image([{"one.txt": b"layer one\n" * 100}, {"two.bin": bytes(range(256)) * 400}])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    peers.need_root()
    app = FakeRegistry()
    srv = FakeServer(app).start()
    app.server = srv
    good = _good()
    base = build_image([{"base.txt": b"already here\n"}])
    variants: dict[str, BuiltImage] = {"1": good}
    # config lists one diff_id for two layers
    variants["count"] = build_image([{"one.txt": b"layer one\n" * 100}, {"two.bin": bytes(range(256)) * 400}],
                                    diff_ids=[good.diff_ids[0]])
    # config names a wrong diff_id for the second layer
    variants["wrongdiff"] = build_image([{"one.txt": b"layer one\n" * 100}, {"two.bin": bytes(range(256)) * 400}],
                                        diff_ids=[good.diff_ids[0], sha256_bytes(b"not the layer")])
    for tag, im in [("base", base), *variants.items()]:
        for b in [*im.layers, im.config]:
            app.put_blob(REPO, b)
        app.put_manifest(REPO, tag, im.manifest, im.media_type)
    blobs = {sha256_bytes(b): b for im in [base, *variants.values()] for b in [*im.layers, im.config]}
    # a data-root that already holds the base image, cloned for every case
    template = tmp_path_factory.mktemp("badtemplate") / "root"
    template.mkdir()
    dy_ok(template, "pull", "%s/%s:base" % (srv.addr, REPO))
    try:
        yield types.SimpleNamespace(app=app, srv=srv, good=good, base=base, variants=variants, blobs=blobs,
                                    template=template)
    finally:
        srv.stop()


# ------------------------------------------------------------------------------------------------ fault actions
def _blob_re(digest: str) -> str:
    return r"^/v2/%s/blobs/%s$" % (re.escape(REPO), re.escape(digest))


def _manifest_re(ref: str) -> str:
    return r"^/v2/%s/manifests/%s$" % (re.escape(REPO), re.escape(ref))


def wrong_bytes(data: bytes) -> Callable[[Request], None]:
    """Same size, other content."""
    bad = bytearray(data)
    for i in range(len(bad) // 3, len(bad) // 3 + 64):
        bad[i] ^= 0x5A
    return lambda req: serve_bytes(req, bytes(bad))


def short_body(data: bytes) -> Callable[[Request], None]:
    """A well-formed response whose body (and Content-Length) is only the first half of the blob."""
    return lambda req: req.respond(200, data[: len(data) // 2], {"Content-Type": "application/octet-stream"})


def long_content_length(data: bytes) -> Callable[[Request], None]:
    """Content-Length 1000 bytes more than the blob; the blob is sent, then the connection is closed."""
    def act(req: Request) -> None:
        h = req.handler
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(data) + 1000))
        h.end_headers()
        if req.method != "HEAD":
            h.wfile.write(data)
        req.drop()
    return act


def disconnect_halfway(data: bytes) -> Callable[[Request], None]:
    """Full Content-Length, half the bytes, then the connection drops; every time (Range or not)."""
    def act(req: Request) -> None:
        if req.method == "HEAD":
            serve_bytes(req, data)
            return
        rng = req.headers.get("Range")
        start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng else 0  # type: ignore[union-attr]
        rest = len(data) - start
        serve_bytes(req, data, truncate_at=max(1, rest // 2))
    return act


def not_found(req: Request) -> None:
    req.error(404, "BLOB_UNKNOWN", "blob unknown to registry", req.path.rsplit("/", 1)[-1])


def unauthorized_no_challenge(req: Request) -> None:
    req.error(401, "UNAUTHORIZED", "authentication required")


def manifest_as(body: bytes, content_type: str, digest_header: bool = True) -> Callable[[Request], None]:
    def act(req: Request) -> None:
        headers = {"Content-Type": content_type}
        if digest_header:
            headers["Docker-Content-Digest"] = sha256_bytes(body)
        req.respond(200, body, headers)
    return act


def raw_manifest_without_length(body: bytes, content_type: str) -> Callable[[Request], None]:
    """No Content-Length, connection close delimits the body."""
    def act(req: Request) -> None:
        h = req.handler
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Connection", "close")
        h.end_headers()
        if req.method != "HEAD":
            for i in range(0, len(body), 1 << 16):
                h.wfile.write(body[i:i + (1 << 16)])
        req.drop()
    return act


def _huge_manifest(good: BuiltImage) -> bytes:
    doc = json.loads(good.manifest)
    doc["annotations"] = {"padding": "x" * (5 << 20)}
    return json.dumps(doc).encode()


def _schema1(good: BuiltImage) -> bytes:
    return json.dumps({
        "schemaVersion": 1, "name": REPO, "tag": "1", "architecture": "amd64",
        "fsLayers": [{"blobSum": d} for d in reversed(good.layer_digests)],
        "history": [{"v1Compatibility": json.dumps({"id": "%064x" % i, "os": "linux"})}
                    for i in range(len(good.layers))],
        "signatures": [{"header": {"alg": "ES256"}, "signature": "c2ln", "protected": "cHJvdA"}],
    }, indent=3).encode()


@dataclass(frozen=True)
class Case:
    id: str
    ref: str                                        # tag or '@' for the good manifest's digest
    faults: Callable[[Any], list[tuple[str, str, Callable[[Request], None]]]]  # (method, path regex, action)
    pattern: str                                    # what the error line must say (regex, case-insensitive)


def _l2(s: Any) -> tuple[str, bytes]:
    return s.good.layer_digests[1], s.good.layers[1]


CASES = [
    Case("wrong-blob-digest", "1", lambda s: [("GET", _blob_re(_l2(s)[0]), wrong_bytes(_l2(s)[1]))],
         r"digest"),
    Case("truncated-blob", "1", lambda s: [("GET", _blob_re(_l2(s)[0]), short_body(_l2(s)[1]))],
         r"bytes|size|length|short|truncat|incomplete"),
    Case("wrong-content-length", "1", lambda s: [("*", _blob_re(_l2(s)[0]), long_content_length(_l2(s)[1]))],
         r"bytes|size|length"),
    Case("404-second-layer", "1", lambda s: [("*", _blob_re(_l2(s)[0]), not_found)],
         r"unknown|not found|404"),
    Case("401-without-challenge", "1", lambda s: [("*", r"^/v2/", unauthorized_no_challenge)],
         r"unauthorized|authentication"),
    Case("unknown-manifest-media-type", "1",
         lambda s: [("*", _manifest_re("1"), manifest_as(
             json.dumps({**json.loads(s.good.manifest), "mediaType": "application/vnd.example.thing.v1+json"}).encode(),
             "application/vnd.example.thing.v1+json"))],
         r"application/vnd\.example\.thing\.v1\+json"),
    Case("manifest-too-large", "1",
         lambda s: [("*", _manifest_re("1"), manifest_as(_huge_manifest(s.good), s.good.media_type))],
         r"too large|exceed|limit"),
    Case("manifest-too-large-no-length", "1",
         lambda s: [("*", _manifest_re("1"), raw_manifest_without_length(_huge_manifest(s.good), s.good.media_type))],
         r"too large|exceed|limit"),
    Case("config-diff-id-count", "count", lambda s: [], r"match|diff|layers"),
    Case("config-wrong-diff-id", "wrongdiff", lambda s: [], r"diff|digest|match|verif"),
    Case("disconnect-mid-blob", "1", lambda s: [("*", _blob_re(_l2(s)[0]), disconnect_halfway(_l2(s)[1]))],
         r"connection|closed|incomplete|disconnect|transfer|read|bytes|short"),
    Case("schema1-manifest", "1", lambda s: [("*", _manifest_re("1"), manifest_as(_schema1(s.good), SCHEMA1))],
         r"schema ?1|schema version 1|v1"),
    Case("manifest-not-matching-pulled-digest", "@",
         lambda s: [("*", r"^/v2/%s/manifests/sha256:" % re.escape(REPO), manifest_as(
             s.good.manifest.replace(b'"schemaVersion": 2', b'"schemaVersion":  2'), s.good.media_type,
             digest_header=False))],
         r"digest"),
    Case("config-blob-wrong-bytes", "1",
         lambda s: [("GET", _blob_re(s.good.config_digest), wrong_bytes(s.good.config))], r"digest|config"),
]


def _partials(root: Path) -> dict[str, bytes]:
    d = root / "tmp" / "dockyard-pull"
    return {p.name: p.read_bytes() for p in d.iterdir()} if d.is_dir() else {}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_response(server: Any, case: Case, tmp_path: Path) -> None:
    s = server
    root = clone_root(s.template, tmp_path / "root")
    before = snapshot(root)
    ref = "%s/%s" % (s.srv.addr, REPO) + ("@" + s.good.manifest_digest if case.ref == "@" else ":" + case.ref)
    s.app.faults = []
    for method, path_re, action in case.faults(s):
        s.app.add_fault(method, path_re, action, times=-1)
    try:
        p = dy(root, "pull", ref, timeout=300)  # a hang fails with the command and its output, not a time
    finally:
        s.app.faults = []
    line = clean_error(p, case.id)
    print("%s: %s" % (case.id, line))
    assert re.search(case.pattern, line, re.I), "the error line does not say what went wrong (/%s/): %r" % (
        case.pattern, line)

    # the store is as it was; under tmp/ only verified prefixes of real blobs
    after = snapshot(root)
    problems = [d for d in diff_snapshots(before, after, limit=200)
                if not re.match(r"^added: +tmp/dockyard-pull(/[0-9a-f]{64}\.partial)? ", d)
                and not re.match(r"^added: +tmp ", d)]
    for name, data in _partials(root).items():
        m = re.fullmatch(r"([0-9a-f]{64})\.partial", name)
        real = s.blobs.get("sha256:" + m.group(1)) if m else None
        if real is None:
            problems.append("tmp/dockyard-pull/%s: not a partial download of a blob of this image" % name)
        elif real[:len(data)] != data:
            problems.append("tmp/dockyard-pull/%s (%d bytes) is not a prefix of blob sha256:%s: a later pull would "
                            "resume from wrong bytes" % (name, len(data), m.group(1)))  # type: ignore[union-attr]
    # no wedge: with the fault gone, the good image pulls
    q = dy(root, "pull", "%s/%s:1" % (s.srv.addr, REPO))
    if q.returncode != 0:
        problems.append("after the failure, with the fault gone, a pull of the good image fails:\n" + show(q))
    else:
        facts = StoreFacts.read(root)
        if not {s.good.config_digest, s.base.config_digest} <= set(facts.image_ids):
            problems.append("after the recovery pull the store has %s" % facts.image_ids)
    assert not problems, "%s -> %s\n%s" % (case.id, line, "\n".join(problems))
    shutil.rmtree(root, ignore_errors=True)


def test_good_image_pulls_cleanly(server: Any, tmp_path: Path) -> None:
    """Control: without faults the same image pulls (so every failure above is the fault's doing)."""
    root = clone_root(server.template, tmp_path / "root")
    server.app.faults = []
    dy_ok(root, "pull", "%s/%s:1" % (server.srv.addr, REPO))
    dy_ok(root, "pull", "%s/%s@%s" % (server.srv.addr, REPO, server.good.manifest_digest))
    facts = StoreFacts.read(root)
    assert sorted(facts.image_ids) == sorted([server.good.config_digest, server.base.config_digest])
    two = facts.diff_dir(facts.chains(server.good.config_digest)[1]) / "two.bin"
    assert two.read_bytes() == bytes(range(256)) * 400
    assert gzip.decompress(server.good.layers[1]) == server.good.tars[1]
