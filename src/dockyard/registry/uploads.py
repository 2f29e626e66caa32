"""Blobs, write side: cross-repository mounts and uploads (one streamed ``PUT`` or ``PATCH``
chunks), restarted in a new session when a step fails in a way that might pass."""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterable, Iterator

import httpx

from dockyard.registry.auth import scope_for
from dockyard.registry.blobs import BlobAPI
from dockyard.registry.errors import BlobTransferError, DigestMismatch, RegistryError
from dockyard.registry.transport import RETRY_STATUSES, Backoff, parse_retry_after


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



class UploadAPI(BlobAPI):
    """Blob writes of :class:`~dockyard.registry.client.RegistryClient`."""

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

