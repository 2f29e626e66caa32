"""The store as a destination: register images (load, pull, import).

Order of work, so that a rejected input leaves the store exactly as it was and a kill at any
moment leaves nothing dangling:

1. validate every image (configs, tags, layer counts) before touching the store;
2. under the write lock, decide which chainIDs are missing; for each, stage a layer (layerdb
   staging dir + overlay2 dir) in chain order;
3. extract the missing layers in parallel worker processes, verifying blob digests, sizes and
   diffIDs while streaming;
4. on any failure, discard every staged layer; otherwise flush the data (syncfs), then publish
   the layers in chain order, then the image configs, then ``parent`` metadata, then tags.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from isal import igzip

from dockyard.archive import compression
from dockyard.archive.apply import ApplyResult, apply_layer
from dockyard.errors import DockyardError, InvalidInput, LayerError, NoSpace
from dockyard.image.config import ImageConfig
from dockyard.image.reference import Reference
from dockyard.image.source import FileRangeOpener, LayerBlob, SourceImage
from dockyard.parallel import ProgressFn, run_jobs
from dockyard.store import Store
from dockyard.store.atomic import fsync_dir, syncfs
from dockyard.store.layers import Layer, PendingLayer


@dataclass(frozen=True)
class ExtractJob:
    blob: LayerBlob
    diff_dir: str
    tar_split_path: str
    label: str


@dataclass(frozen=True)
class ExtractOutcome:
    result: ApplyResult
    blob_digest: str
    blob_size: int


def extract_layer(job: ExtractJob, progress: ProgressFn) -> ExtractOutcome:
    """Stream one layer blob into its diff dir, recording tar-split (runs in a worker)."""
    blob = job.blob
    f = blob.opener.open()
    try:
        raw = compression.VerifyingReader(f, blob.digest, blob.size, what=job.label)
        try:
            stream = compression.decompressor(raw, blob.compression)
        except Exception as e:
            raise InvalidInput(f"{job.label}: cannot decompress: {e}") from None
        fd = os.open(job.tar_split_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        tsf = os.fdopen(fd, "wb")
        try:
            gz = igzip.GzipFile(fileobj=tsf, mode="wb", compresslevel=1, mtime=0)  # type: ignore[no-untyped-call]

            def read(n: int) -> bytes:
                data = stream.read(n)
                progress(raw.count)
                return data

            try:
                result = apply_layer(read, job.diff_dir, gz.write)
            except DockyardError as e:
                _blame_blob(raw, blob)
                raise type(e)(f"{job.label}: {e}") from None
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise NoSpace(f"{job.label}: no space left on device") from None
                _blame_blob(raw, blob)
                raise LayerError(f"{job.label}: {_describe_stream_error(e)}") from None
            except Exception as e:
                # decompressor errors (bad gzip/zstd data, truncated stream): a wrong blob digest
                # is the better explanation when there is one.
                _blame_blob(raw, blob)
                raise LayerError(f"{job.label}: {_describe_stream_error(e)}") from None
            try:
                gz.close()
                tsf.flush()
                os.fsync(tsf.fileno())
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise NoSpace(f"{job.label}: no space left on device writing tar-split data") from None
                raise
        finally:
            try:
                tsf.close()
            except OSError:
                pass  # the error that matters was raised above
        try:
            digest = raw.verify()
        except InvalidInput:
            blob.forget_partial()
            raise
        progress(raw.count)
        return ExtractOutcome(result, digest, raw.count)
    finally:
        f.close()


def _blame_blob(raw: compression.VerifyingReader, blob: LayerBlob | None = None) -> None:
    """If the blob does not match its digest or size, say that rather than what it broke."""
    if raw.expected_digest is None and raw.expected_size is None:
        return
    try:
        raw.verify()
    except InvalidInput:
        if blob is not None:
            blob.forget_partial()
        raise
    except Exception:
        return


def _describe_stream_error(e: BaseException) -> str:
    msg = str(e) or type(e).__name__
    if isinstance(e, EOFError):
        return f"unexpected end of compressed data ({msg})"
    return f"cannot read layer data: {msg}"


def _count_tar_entries(opener: FileRangeOpener, limit: int = 2_000_000) -> int | None:
    """Headers in an uncompressed tar read in place (seeking over contents); None if unsure."""
    fd = os.open(opener.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pos, end, n = opener.offset, opener.offset + opener.length, 0
        while pos + 512 <= end and n < limit:
            blk = os.pread(fd, 512, pos)
            if len(blk) < 512 or blk == bytes(512):
                break
            size_field = blk[124:136]
            if size_field[0] & 0x80:
                return None
            try:
                size = int(size_field.strip(b" \x00") or b"0", 8)
            except ValueError:
                return None
            if blk[156:157] in b"12345":
                size = 0
            pos += 512 + (size + 511) // 512 * 512
            n += 1
        return n
    finally:
        os.close(fd)


def preflight(store: Store, blobs: list[LayerBlob]) -> None:
    """Refuse, before writing anything, a load that clearly will not fit (space, inodes).

    Uncompressed in-place layers count exactly (their size; their headers as inodes); compressed
    ones count their compressed size, a lower bound.
    """
    need_bytes = 0
    need_inodes = 0
    for b in blobs:
        op = b.opener
        if isinstance(op, FileRangeOpener):
            need_bytes += op.length
            if compression_of_range(op) == compression.NONE:
                n = _count_tar_entries(op)
                need_inodes += n or 0
        elif b.size:
            need_bytes += b.size
    if not need_bytes:
        return
    st = os.statvfs(store.root)
    free = st.f_bavail * st.f_frsize
    if need_bytes > free:
        raise NoSpace(
            f"not enough space on the device holding {store.root}: the layers need at least "
            f"{_human(need_bytes)}, {_human(free)} is free"
        )
    if st.f_files and need_inodes > st.f_favail:
        raise NoSpace(
            f"not enough inodes on the device holding {store.root}: the layers have {need_inodes} entries, "
            f"{st.f_favail} inodes are free"
        )


def compression_of_range(op: FileRangeOpener) -> str:
    fd = os.open(op.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return compression.detect(os.pread(fd, 6, op.offset) if op.length >= 6 else b"")
    finally:
        os.close(fd)


def _human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{n}B"
        n = n / 1000  # type: ignore[assignment]
    return f"{n}B"


@dataclass
class LoadedImage:
    image_id: str
    names: list[Reference]
    renamed: list[tuple[Reference, str]] = field(default_factory=list)
    """Tags moved away from another image: (reference, old image id)."""


@dataclass
class _Planned:
    chain_id: str
    diff_id: str
    parent_chain: str | None
    blob: LayerBlob
    pending: PendingLayer | None = None
    existing: Layer | None = None
    outcome: ExtractOutcome | None = None


def _check_parent(child: ImageConfig, parent: ImageConfig) -> bool:
    """Docker's checkValidParent: the child's history is the parent's plus one entry."""
    ch, ph = child.history, parent.history
    if not ch and not ph:
        return True
    if len(ch) - len(ph) != 1:
        return False
    return all(ch[i] == ph[i] for i in range(len(ph)))


def load_images(
    store: Store,
    images: list[SourceImage],
    *,
    workers: int | None = None,
    on_layer_progress: Callable[[str, int, int | None], None] | None = None,
    tag: bool = True,
) -> list[LoadedImage]:
    """Register ``images`` in ``store`` atomically (all or nothing)."""
    for im in images:
        im.config.validate()
        if len(im.layers) != len(im.config.diff_ids):
            raise InvalidInput(f"{im.description}: layers length mismatch")
    workers = workers or min(os.cpu_count() or 1, 4)

    with store.write_lock():
        store.layers.ensure_dirs()
        store.images.ensure_dirs()
        plan: dict[str, _Planned] = {}
        order: list[_Planned] = []
        for im in images:
            parent_chain: str | None = None
            for blob, chain in zip(im.layers, im.config.chain_ids, strict=True):
                if chain not in plan:
                    p = _Planned(chain, blob.diff_id, parent_chain, blob)
                    if store.layers.exists(chain):
                        p.existing = store.layers.get(chain)
                    plan[chain] = p
                    order.append(p)
                parent_chain = chain

        todo = [p for p in order if p.existing is None]
        preflight(store, [p.blob for p in todo])
        try:
            for p in todo:
                parent_cache = None
                if p.parent_chain is not None:
                    pp = plan[p.parent_chain]
                    parent_cache = pp.existing.cache_id if pp.existing else pp.pending.cache_id  # type: ignore[union-attr]
                p.pending = store.layers.begin(parent_cache)

            jobs = []
            for p in todo:
                assert p.pending is not None
                jobs.append(
                    ExtractJob(
                        p.blob,
                        store.driver.diff_path(p.pending.cache_id),
                        p.pending.tar_split_path,
                        p.blob.description or p.chain_id,
                    )
                )
            # Biggest first, so the longest layer does not start last.
            order_idx = sorted(range(len(jobs)), key=lambda i: -(todo[i].blob.size or 0))
            sorted_jobs = [jobs[i] for i in order_idx]

            def prog(i: int, n: int) -> None:
                if on_layer_progress:
                    t = todo[order_idx[i]]
                    on_layer_progress(t.diff_id, n, t.blob.size)

            outcomes = run_jobs(extract_layer, sorted_jobs, workers=workers, on_progress=prog)
            for k, out in zip(order_idx, outcomes, strict=True):
                todo[k].outcome = out
            for p in todo:
                assert p.outcome is not None
                if p.outcome.result.diff_id != p.diff_id:
                    raise InvalidInput(
                        f"{p.blob.description}: invalid diffID: the config expects {p.diff_id}, "
                        f"the layer is {p.outcome.result.diff_id}"
                    )
            syncfs(store.root)
            for p in todo:
                assert p.pending is not None and p.outcome is not None
                layer = store.layers.publish(p.pending, p.diff_id, p.outcome.result.size, p.parent_chain)
                p.existing = layer
                p.pending = None
        except BaseException:
            for p in reversed(todo):
                if p.pending is not None:
                    try:
                        store.layers.discard(p.pending)
                    except OSError:
                        pass
            raise

        loaded: list[LoadedImage] = []
        for im in images:
            store.images.create(im.config)
            loaded.append(LoadedImage(im.id, list(im.names) if tag else []))
        fsync_dir(store.layout.imagedb_content)
        ids = {im.id for im in images}
        for im in images:
            if im.parent and (im.parent in ids or store.images.exists(im.parent)):
                try:
                    if _check_parent(im.config, store.images.get(im.parent)):
                        store.images.set_parent(im.id, im.parent)
                except DockyardError:
                    pass
        if tag:
            repos = store.refs.load()
            for li in loaded:
                for ref in li.names:
                    old = store.refs.add(ref, li.image_id, repos=repos)
                    if old:
                        li.renamed.append((ref, old))
            if any(li.names for li in loaded):
                store.refs.save(repos)
        return loaded
