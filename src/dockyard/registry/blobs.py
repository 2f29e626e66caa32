"""Blobs, read side: existence checks and downloads that follow redirects, verify the digest
and resume broken connections with ``Range`` (:class:`BlobResponse`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import TracebackType

import httpx

from dockyard.registry.errors import BlobTransferError, DigestMismatch, RegistryError
from dockyard.registry.session import RegistrySession, _hasher
from dockyard.registry.transport import Backoff

DEFAULT_CHUNK = 1 << 20
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_UNSATISFIED_RANGE_RE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$")


class BlobAPI(RegistrySession):
    """Blob reads of :class:`~dockyard.registry.client.RegistryClient`."""

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
        client: BlobAPI,
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
