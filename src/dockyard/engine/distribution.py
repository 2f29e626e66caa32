"""pull and push, with Docker's distribution metadata.

pull: resolve the reference (index -> platform manifest), register the image through the same
pipeline as ``load`` (layers downloaded in parallel, each decompressed and extracted as it
arrives, verified, published in chain order), then record ``distribution/`` (digest <-> diffID),
the tag and the ``name@<digest>`` reference, as dockerd does.

push: for each layer, reuse what the registry already has (a digest recorded in
``v2metadata-by-diffid`` that the target repository holds, or can mount from another repository
of the same registry); otherwise rebuild the layer tar from tar-split, compress it (gzip via
isal, or zstd) in a worker, and upload it. Then the config, then a schema2 manifest (OCI for
zstd), then the tag; ``distribution/`` and the digest reference are recorded with Docker's HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dockyard import gojson
from dockyard.destinations.store import load_images
from dockyard.engine.stores import open_store
from dockyard.errors import DockyardError, InvalidInput, NotFound, StoreCorrupt
from dockyard.image.platform import Platform
from dockyard.image.reference import Reference, parse_reference
from dockyard.parallel import ProgressFn, run_jobs
from dockyard.sources.registry import PARTIAL_DIR, client_for, resolve
from dockyard.store import Store
from dockyard.store.distribution import DistributionStore
from dockyard.store.layers import Layer

Event = Callable[[str, str], None]  # (layer short id or "", message)


@dataclass
class PullResult:
    ref: Reference
    image_id: str
    digest: str
    new: bool
    layers: list[tuple[str, str]] = field(default_factory=list)  # (digest, "Already exists"|"Pull complete")


def pull(
    store: Store,
    name: str,
    *,
    platform: Platform | None = None,
    insecure: tuple[str, ...] = (),
    max_concurrent: int = 3,
    event: Event | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> PullResult:
    ref = parse_reference(name)
    if ref.digest is None:
        ref = ref.tagged_or_latest()
    emit = event or (lambda _i, _m: None)
    partial_root = os.path.join(store.layout.tmp, PARTIAL_DIR)
    client = client_for(ref.domain, insecure)
    try:
        pulled = resolve(
            client, ref, platform=platform, partial_root=partial_root, insecure=insecure,
            known_config=lambda d: _stored_config(store, d),
        )
    finally:
        client.close()
    image = pulled.image
    existed = store.images.exists(image.id)
    states: list[tuple[str, str]] = []
    if not existed:
        # Docker skips everything (layer lines, distribution records) for an image it already has
        for blob, chain in zip(image.layers, image.config.chain_ids, strict=True):
            st = "Already exists" if store.layers.exists(chain) else "Pull complete"
            states.append((blob.digest or "", st))
            emit(_short(blob.digest), "Already exists" if st == "Already exists" else "Pulling fs layer")
    before = store.refs.get(ref)
    with store.write_lock():
        os.makedirs(partial_root, mode=0o700, exist_ok=True)
        if not existed:
            resumed = [b for b in image.layers if b.has_partial()]
            try:
                load_images(
                    store, [image], workers=max(1, max_concurrent), on_layer_progress=progress, tag=False
                )
            except InvalidInput:
                if not resumed:
                    raise
                # A partial download that did not verify was dropped: start those over once.
                load_images(
                    store, [image], workers=max(1, max_concurrent), on_layer_progress=progress, tag=False
                )
            dist = DistributionStore(store.layout)
            for blob in image.layers:
                if blob.digest:
                    dist.add(blob.diff_id, blob.digest, ref.name)
        else:
            # Docker records nothing for an image it has; but a pull that died after publishing the
            # config left its layers unrecorded: fill in only what is missing.
            dist = DistributionStore(store.layout)
            for blob in image.layers:
                if blob.digest and (
                    dist.diff_id_for(blob.digest) != blob.diff_id
                    or blob.digest not in dist.digests_for(blob.diff_id)
                ):
                    dist.add(blob.diff_id, blob.digest, ref.name)
        repos = store.refs.load()
        if ref.tag is not None:
            store.refs.add(ref, image.id, repos=repos)
        dref = ref.with_digest(pulled.top_digest)
        if store.refs.get(dref) is None:
            store.refs.add(dref, image.id, repos=repos)
        store.refs.save(repos)
    for i, blob in enumerate(image.layers):
        if i < len(states) and states[i][1] != "Already exists":
            emit(_short(blob.digest), "Pull complete")
        blob.forget_partial()
    # docker's Status: "Downloaded newer image" when the reference now names a different image
    return PullResult(ref, image.id, pulled.top_digest, new=before != image.id, layers=states)


def _stored_config(store: Store, image_id: str) -> bytes | None:
    """The config bytes of an image already in the store (its ID is the config digest), else None."""
    if not store.images.exists(image_id):
        return None
    try:
        return store.images.get(image_id).raw
    except (NotFound, StoreCorrupt):
        return None


def _short(digest: str | None) -> str:
    return (digest or "")[7:19]


# ----------------------------------------------------------------------------- push
GZIP_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def hmac_key(
    username: str = "", password: str = "", auth: str = "", identity_token: str = "", registry_token: str = ""
) -> bytes:
    """Docker's ComputeV2MetadataHMACKey: the digest string of the JSON of the auth config."""
    key: dict[str, str] = {}
    for k, v in (
        ("username", username),
        ("password", password),
        ("auth", auth),
        ("identitytoken", identity_token),
        ("registrytoken", registry_token),
    ):
        if v:
            key[k] = v
    return ("sha256:" + hashlib.sha256(gojson.marshal(key).encode()).hexdigest()).encode()


def metadata_hmac(key: bytes, digest: str, source_repository: str) -> str:
    return hmac.new(key, (digest + source_repository).encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class CompressJob:
    root: str
    chain: str
    out_path: str
    compression: str
    registry: str
    repo: str
    insecure: tuple[str, ...]


@dataclass(frozen=True)
class CompressOutcome:
    digest: str
    size: int


def compress_and_upload(job: CompressJob, progress: ProgressFn) -> CompressOutcome:
    """Rebuild the layer tar, compress it to a temp file (digest and size known), upload it."""
    from dockyard.store.layertar import write_layer_tar

    st = open_store(job.root)
    layer = st.layers.get(job.chain)
    h = hashlib.sha256()
    size = 0
    with open(job.out_path, "wb") as raw:

        class Tee:
            def write(self, b: bytes) -> int:
                nonlocal size
                h.update(b)
                size += len(b)
                raw.write(b)
                return len(b)

            def flush(self) -> None:
                pass

        tee = Tee()
        done = [0]
        if job.compression == "zstd":
            import zstandard

            cctx = zstandard.ZstdCompressor(level=3)
            with cctx.stream_writer(tee, closefd=False) as zw:  # type: ignore[arg-type]

                def w(b: bytes | memoryview) -> None:
                    zw.write(b)
                    done[0] += len(b)
                    progress(done[0])

                write_layer_tar(st, layer, w)
        else:
            from isal import igzip

            gz = igzip.GzipFile(fileobj=tee, mode="wb", compresslevel=2, mtime=0)  # type: ignore[no-untyped-call]

            def w(b: bytes | memoryview) -> None:
                gz.write(b)  # type: ignore[no-untyped-call]
                done[0] += len(b)
                progress(done[0])

            write_layer_tar(st, layer, w)
            gz.close()
    digest = "sha256:" + h.hexdigest()
    client = client_for(job.registry, job.insecure)
    try:

        def chunks() -> Any:
            with open(job.out_path, "rb") as f:
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        return
                    yield b

        if client.blob_exists(job.repo, digest) is None:
            client.upload_blob(job.repo, digest, size, chunks)
    finally:
        client.close()
        try:
            os.unlink(job.out_path)
        except FileNotFoundError:
            pass
    return CompressOutcome(digest, size)


def _compression_matches(client: Any, repo: str, digest: str, compression: str) -> bool:
    """A recorded blob is reused only if it is compressed the way this push asks (magic bytes)."""
    try:
        with client.open_blob(repo, digest, verify=False) as r:
            head = r.read(4)
    except DockyardError:
        return False
    if compression == "zstd":
        return bool(head[:4] == b"\x28\xb5\x2f\xfd")
    return bool(head[:2] == b"\x1f\x8b")


@dataclass
class PushResult:
    ref: Reference
    digest: str
    size: int
    layers: list[tuple[str, str]] = field(default_factory=list)  # (digest, status)


def _credentials_for(registry: str) -> tuple[str, str, str]:
    from dockyard.registry import CredentialStore

    try:
        c = CredentialStore().get(registry)
    except DockyardError:
        c = None
    if c is None:
        return "", "", ""
    return c.username, c.password, c.identity_token


def push(
    store: Store,
    name: str,
    *,
    compression: str = "gzip",
    insecure: tuple[str, ...] = (),
    max_concurrent: int = 5,
    event: Event | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> PushResult:
    ref = parse_reference(name)
    if ref.digest is not None:
        raise InvalidInput("cannot push a digest reference")
    ref = ref.tagged_or_latest()
    image_id = store.refs.get(ref)
    if image_id is None or not store.images.exists(image_id):
        raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name}")
    cfg = store.images.get(image_id)
    layers = store.image_layers(image_id)
    emit = event or (lambda _i, _m: None)
    dist = DistributionStore(store.layout)
    user, password, token = _credentials_for(ref.domain)
    key = hmac_key(user, password, "", token)
    repo = ref.path
    client = client_for(ref.domain, insecure)
    results: dict[str, tuple[str, int, str]] = {}  # diff_id -> (digest, size, status)
    todo: list[Layer] = []
    try:
        for layer in layers:
            emit(layer.diff_id[7:19], "Preparing")
        for layer in layers:
            if layer.diff_id in results:
                continue
            found = None
            for meta in reversed(dist.metadata_for(layer.diff_id)):
                digest = str(meta.get("Digest", ""))
                src = str(meta.get("SourceRepository", ""))
                if not digest or not src.startswith(ref.domain + "/"):
                    continue
                mac = str(meta.get("HMAC", ""))
                if mac and mac != metadata_hmac(key, digest, src) and src != ref.name:
                    continue
                src_repo = src[len(ref.domain) + 1 :]
                if not _compression_matches(client, src_repo, digest, compression):
                    continue
                size = client.blob_exists(repo, digest)
                if size is not None:
                    found = (digest, size, "Layer already exists")
                    break
                if src_repo != repo and client.mount_blob(repo, digest, src_repo):
                    size = client.blob_exists(repo, digest)
                    found = (digest, size or 0, f"Mounted from {src_repo}")
                    break
            if found is not None:
                results[layer.diff_id] = found
                emit(layer.diff_id[7:19], found[2])
            else:
                todo.append(layer)
        if todo:
            tmpdir = os.path.join(store.layout.tmp, "dockyard-push")
            os.makedirs(tmpdir, mode=0o700, exist_ok=True)
            jobs = [
                CompressJob(
                    store.root,
                    lay.chain_id,
                    tempfile.mktemp(prefix="layer-", dir=tmpdir),
                    compression,
                    ref.domain,
                    repo,
                    insecure,
                )
                for lay in todo
            ]

            def prog(i: int, n: int) -> None:
                if progress:
                    progress(todo[i].diff_id, n, None)

            for lay in todo:
                emit(lay.diff_id[7:19], "Pushing")
            outcomes = run_jobs(
                compress_and_upload,
                jobs,
                workers=max(1, min(max_concurrent, os.cpu_count() or 1)),
                on_progress=prog,
            )
            for lay, out in zip(todo, outcomes, strict=True):
                results[lay.diff_id] = (out.digest, out.size, "Pushed")
                emit(lay.diff_id[7:19], "Pushed")
        # config
        if client.blob_exists(repo, image_id) is None:
            client.upload_blob(repo, image_id, len(cfg.raw), lambda: iter([cfg.raw]))
        layer_mt = OCI_ZSTD_LAYER if compression == "zstd" else GZIP_LAYER
        if compression == "zstd":
            manifest: dict[str, Any] = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "size": len(cfg.raw), "digest": image_id},
                "layers": [
                    {"mediaType": layer_mt, "size": results[x.diff_id][1], "digest": results[x.diff_id][0]}
                    for x in layers
                ],
            }
            mt = OCI_MANIFEST
        else:
            manifest = {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": DOCKER_CONFIG, "size": len(cfg.raw), "digest": image_id},
                "layers": [
                    {"mediaType": layer_mt, "size": results[x.diff_id][1], "digest": results[x.diff_id][0]}
                    for x in layers
                ],
            }
            mt = DOCKER_MANIFEST
        # docker marshals the schema2 manifest with 3-space indentation
        raw = json.dumps(manifest, indent=3, separators=(",", ": ")).encode()
        mdigest = client.put_manifest(repo, ref.tag or "latest", raw, mt)
    finally:
        client.close()
    with store.write_lock():
        for layer in layers:
            digest = results[layer.diff_id][0]
            dist.add(layer.diff_id, digest, ref.name, metadata_hmac(key, digest, ref.name))
        dref = ref.with_digest(mdigest)
        if store.refs.get(dref) is None:
            store.refs.add(dref, image_id)
    return PushResult(
        ref, mdigest, len(raw), [(results[x.diff_id][0], results[x.diff_id][2]) for x in layers]
    )
