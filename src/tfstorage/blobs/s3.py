"""Blobs as objects on an S3-compatible engine (SeaweedFS, MinIO, Garage, Ceph RGW, AWS S3).

Objects are named `{prefix}blobs/{id[:2]}/{id}` in one physical bucket. The data path is
obstore (Rust, async): pooled connections, timeouts, bounded retries with backoff on
connection errors and 5xx/SlowDown, multipart uploads from an async iterable, ranged GETs.
It sends no CRC checksum headers, so engines that reject them work unchanged. What obstore
does not expose (HEAD/create bucket, listing and aborting multipart uploads) goes through
`S3ControlClient` (s3_control.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Collection, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import obstore
from obstore.exceptions import (
    BaseError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import S3Store

if TYPE_CHECKING:
    from obstore.store import S3Credential

from tfstorage.blobs.base import (
    MISMATCH,
    AssembledBlob,
    BlobInfo,
    BlobNotFound,
    BlobStoreUnavailable,
    ByteStream,
    Capacity,
    DigestMismatch,
    StoredPart,
    is_blob_id,
)
from tfstorage.blobs.digests import digest_stream
from tfstorage.blobs.s3_config import S3Config
from tfstorage.blobs.s3_control import S3ControlClient
from tfstorage.domain.blocks import DEFAULT_BLOCK_SIZE
from tfstorage.errors import InvalidPart, NoSuchUpload

MiB: Final = 1024 * 1024
_READ_CHUNK: Final = DEFAULT_BLOCK_SIZE  # pieces a block checker takes whole
_STATUS_RE: Final = re.compile(r"status code: (\d{3})")
_KIND_RE: Final = re.compile(r"HttpError \{\s*kind: (\w+)")


class S3BlobStore:
    """A `BlobStore` on one bucket of an S3-compatible engine."""

    name = "s3"

    def __init__(self, config: S3Config) -> None:
        self.config = config
        timeout = timedelta(seconds=config.timeout_seconds)
        self._store = S3Store(
            config.bucket,
            endpoint=config.endpoint_url,
            region=config.region,
            # A provider rather than keys: the constructor would otherwise also pick up
            # AWS_SESSION_TOKEN and friends from the environment, and sign with them.
            credential_provider=_StaticCredentials(config.access_key, config.secret_key),
            virtual_hosted_style_request=False,
            client_options={
                "allow_http": config.endpoint_url.startswith("http://"),
                "connect_timeout": timeout,
                # Idle time between bytes, not the whole request: a 10 GiB download to a
                # slow client legitimately takes hours.
                "read_timeout": timeout,
                "timeout": timedelta(days=1),
                "pool_idle_timeout": timedelta(seconds=15),
            },
            retry_config={
                "max_retries": config.max_retries,
                # No retry starts later than this after the first try, so an engine that
                # is down or stalled fails within one to two timeouts, whatever the count.
                "retry_timeout": timeout,
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=2),
                    "base": 2,
                },
            },
        )
        self._control = S3ControlClient(config)
        self._bucket_seen = False
        # Cleared by the service when its index already references blobs: a missing
        # bucket is then lost data (or a typo in S3_BUCKET), never something to create.
        self.may_create_bucket = True

    def _key(self, blob_id: str) -> str:
        # The one place a blob id becomes an object name.
        if not (isinstance(blob_id, str) and is_blob_id(blob_id)):
            raise ValueError("malformed blob id")
        return f"{self.config.blobs_prefix}{blob_id[:2]}/{blob_id}"

    async def put(self, blob_id: str, chunks: AsyncIterable[bytes]) -> int:
        key = self._key(blob_id)
        source = aiter(chunks)
        # Up to one part is read before choosing: a blob smaller than a part goes up in one
        # PUT (one request, where a multipart upload takes three).
        head: list[bytes] = []
        size = 0
        async for chunk in source:
            if chunk:
                head.append(chunk if type(chunk) is bytes else bytes(chunk))
                size += len(chunk)
                if size >= self.config.part_size:
                    return await self._put_multipart(key, head, source)
        body = b"".join(head)
        head.clear()
        try:
            await obstore.put_async(self._store, key, body, use_multipart=False)
        except BaseException as exc:
            # A PUT whose answer was lost (timeout, cancellation) may still have landed; one
            # that lands after this delete is an orphan for garbage collection.
            await self._forget(key)
            if isinstance(exc, BaseError | FileNotFoundError):
                raise _translate(exc, "storing a blob") from exc
            raise
        return size

    async def _put_multipart(
        self, key: str, head: list[bytes], source: AsyncIterator[bytes]
    ) -> int:
        # One chunk waits here at most: obstore copies what it reads into its part buffer
        # at once, and four waiting (up to 4 MiB) only raised a worker's peak RSS, not
        # its throughput (bench/README.md, stop 26).
        send, receive = anyio.create_memory_object_stream[bytes](1)
        feed = _Feed(receive)
        upload = asyncio.ensure_future(
            obstore.put_async(
                self._store,
                key,
                feed,
                use_multipart=True,
                chunk_size=self.config.part_size,
                max_concurrency=self.config.upload_concurrency,
            )
        )
        # If obstore gives up (engine error), nothing reads the feed any more: closing it
        # wakes the pump below instead of leaving it blocked on a full buffer.
        upload.add_done_callback(lambda _: receive.close())
        size = 0
        try:
            # The source is read here, in the caller's task, so its cancel scopes and
            # context stay where they were created; obstore only reads the buffer.
            with contextlib.suppress(anyio.BrokenResourceError):
                head.reverse()
                while head:  # each let go of as obstore takes it: not a part held twice
                    chunk = head.pop()
                    size += len(chunk)
                    await send.send(chunk)
                async for chunk in source:
                    if chunk:
                        size += len(chunk)
                        await send.send(chunk if type(chunk) is bytes else bytes(chunk))
            send.close()
            # Shielded so that a cancellation now does not drop the upload half-completed:
            # _settle waits for it and removes the object if it landed.
            await asyncio.shield(upload)
        except BaseException as exc:
            # The feed raises, so obstore aborts the multipart upload on the engine itself;
            # waiting for that keeps the engine clean (sweep_incomplete is the backstop).
            feed.failed = True
            send.close()
            await self._settle(upload, key)
            if isinstance(exc, BaseError | FileNotFoundError):
                raise _translate(exc, "storing a blob") from exc
            raise
        return size

    async def _settle(self, upload: asyncio.Future[Any], key: str) -> None:
        with anyio.CancelScope(shield=True):
            done, _ = await asyncio.wait({upload}, timeout=self._patience)
            if not done:
                upload.cancel()  # the upload id is lost to us: sweep_incomplete aborts it
            elif not upload.cancelled() and upload.exception() is None:
                await self._forget(key)  # cancelled after the feed ended, yet it completed

    async def _forget(self, key: str) -> None:
        timeout = self.config.timeout_seconds
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(timeout),
            contextlib.suppress(Exception),
        ):
            await obstore.delete_async(self._store, key)

    @property
    def _patience(self) -> float:
        return self.config.timeout_seconds * (self.config.max_retries + 1)

    async def open(self, blob_id: str, start: int = 0, end: int | None = None) -> ByteStream:
        key = self._key(blob_id)
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid range [{start}, {end})")
        if start == end:  # S3 has no empty range: a HEAD settles existence and size
            return await self._empty(blob_id, start, end)
        options: dict[str, Any] = {}
        if end is not None:
            options["range"] = (start, end)
        elif start:
            options["range"] = {"offset": start}
        try:
            result = await obstore.get_async(self._store, key, options=options)  # type: ignore[arg-type]
        except FileNotFoundError:
            raise BlobNotFound(blob_id) from None
        except BaseError as exc:
            if _status(exc) == 416:  # starts at or past the end: empty, or invalid
                return await self._empty(blob_id, start, end)
            raise _translate(exc, "reading a blob") from exc
        # A range past the end comes back cut short rather than refused.
        size = result.meta["size"]
        if end is not None and size < end:
            raise ValueError(f"invalid range [{start}, {end}) for a blob of {size} bytes")
        return _S3Reader(result.stream(min_chunk_size=_READ_CHUNK // 2), start)

    async def _empty(self, blob_id: str, start: int, end: int | None) -> ByteStream:
        size = (await self.stat(blob_id)).size
        if (start if end is None else end) > size:
            raise ValueError(f"invalid range [{start}, {end}) for a blob of {size} bytes")
        return _S3Reader(None)

    async def stat(self, blob_id: str) -> BlobInfo:
        try:
            meta = await obstore.head_async(self._store, self._key(blob_id))
        except FileNotFoundError:
            raise BlobNotFound(blob_id) from None
        except BaseError as exc:
            raise _translate(exc, "reading blob metadata") from exc
        return BlobInfo(blob_id, meta["size"], meta["last_modified"].timestamp())

    async def delete(self, blob_id: str) -> None:
        try:
            await obstore.delete_async(self._store, self._key(blob_id))
        except FileNotFoundError:
            return
        except BaseError as exc:
            raise _translate(exc, "deleting a blob") from exc

    async def list_blobs(self) -> AsyncIterator[BlobInfo]:
        listing = obstore.list(self._store, self.config.blobs_prefix, chunk_size=1000)
        finished = False
        try:
            async for batch in listing:
                for meta in batch:
                    blob_id = meta["path"].rpartition("/")[2]
                    # Anything else under the prefix (a stray upload) is not ours to report.
                    if is_blob_id(blob_id) and meta["path"] == self._key(blob_id):
                        yield BlobInfo(blob_id, meta["size"], meta["last_modified"].timestamp())
            finished = True
        except (BaseError, FileNotFoundError) as exc:
            finished = True
            raise _translate(exc, "listing blobs") from exc
        finally:
            if not finished:  # abandoned (or cancelled) mid-listing: see _S3Reader.aclose
                _drain_later(listing)

    async def sweep_incomplete(self, older_than: float, keep: Collection[str] = ()) -> int:
        swept = 0
        async for key, upload_id, initiated in self._control.list_multipart_uploads(
            self.config.blobs_prefix
        ):
            if initiated < older_than and upload_id not in keep:
                await self._control.abort_multipart_upload(key, upload_id)
                swept += 1
        return swept

    async def capacity(self) -> Capacity:
        return Capacity(total_bytes=None, free_bytes=None)  # S3 does not say

    # Resumable sessions map onto the engine's own multipart upload of the blob's key:
    # parts go straight to the engine, which assembles them without a second copy.
    async def begin_multipart(self, blob_id: str) -> str:
        return await self._control.create_multipart_upload(self._key(blob_id))

    async def put_part(
        self,
        blob_id: str,
        upload: str,
        part_number: int,
        chunks: AsyncIterable[bytes],
        *,
        size: int,
        md5: str | None = None,
        sha256: str | None = None,
        offset: int | None = None,
    ) -> StoredPart:
        content_md5 = base64.b64encode(bytes.fromhex(md5)).decode() if md5 else None
        etag = await self._control.upload_part(
            self._key(blob_id),
            upload,
            part_number,
            chunks,
            size=size,
            content_md5=content_md5,
            sha256=sha256,
        )
        return StoredPart(part_number, size, etag)

    async def discard_part(self, blob_id: str, upload: str, part: StoredPart) -> bool:
        # The engine replaced any earlier part of this number when it accepted this one.
        return False

    async def complete_multipart(
        self,
        blob_id: str,
        upload: str,
        parts: Sequence[StoredPart],
        *,
        expected_sha256: str | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> AssembledBlob:
        key = self._key(blob_id)
        expected = sum(part.size for part in parts)
        try:
            await self._control.complete_multipart_upload(
                key, upload, [(part.part_number, part.handle) for part in parts]
            )
        except NoSuchUpload:
            # An earlier completion that crashed before its commit leaves the assembled
            # object and no upload: that object is the answer, if it is whole.
            try:
                found = await self.stat(blob_id)
            except BlobNotFound:
                raise InvalidPart("the engine no longer holds the upload's parts") from None
            if found.size != expected:
                raise InvalidPart("the engine no longer holds the upload's parts") from None
        # The engine's ETag of a multipart object is an MD5 of MD5s: the real digests
        # need the bytes, read back once.
        stream = await self.open(blob_id)
        try:
            digests = await digest_stream(stream, block_size)
        finally:
            await stream.aclose()
        if digests.size != expected:
            raise InvalidPart("the assembled object does not have the parts' total size")
        if expected_sha256 is not None and digests.sha256 != expected_sha256:
            await self._forget(key)
            raise DigestMismatch(MISMATCH, parts_consumed=True)
        return AssembledBlob(
            digests.size, digests.md5, digests.sha256, parts_consumed=True, blocks=digests.blocks
        )

    async def abort_multipart(self, blob_id: str, upload: str) -> None:
        await self._control.abort_multipart_upload(self._key(blob_id), upload)

    def describe(self) -> dict[str, str]:
        """Which engine and where, for health and logs (the URL carries no credentials)."""
        config = self.config
        return {
            "type": self.name,
            "endpoint": config.endpoint_url,
            "bucket": config.bucket,
            "prefix": config.prefix,
        }

    async def check(self) -> None:
        if await self._control.bucket_exists():
            self._bucket_seen = True
        elif self._bucket_seen or not self.may_create_bucket:
            # It existed and is gone: recreating it would hide the loss of every blob.
            raise BlobStoreUnavailable(
                "s3 blob store: the bucket has disappeared (or never held the blobs the"
                " index references); it is not recreated"
            )
        else:
            await self.ensure_bucket()

    async def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (idempotent)."""
        await self._control.create_bucket()
        self._bucket_seen = True

    async def close(self) -> None:
        await self._control.aclose()
        # obstore's Tokio threads wake the event loop through its self-pipe right after an
        # operation resolves; a process exiting in that instant aborts on Python < 3.14.
        await anyio.sleep(0.05)


class _StaticCredentials:
    def __init__(self, access_key: str, secret_key: str) -> None:
        self._credentials: S3Credential = {
            "access_key_id": access_key,
            "secret_access_key": secret_key,
            "token": None,
            "expires_at": None,
        }

    def __call__(self) -> S3Credential:
        return self._credentials


class _Feed:
    """The async iterable obstore uploads from, fed by `S3BlobStore._put_multipart`."""

    def __init__(self, receive: anyio.abc.ObjectReceiveStream[bytes]) -> None:
        self._receive = receive
        self.failed = False

    def __aiter__(self) -> _Feed:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            if self.failed:
                raise _UploadAbandoned from None
            raise StopAsyncIteration from None


class _UploadAbandoned(Exception):
    """Raised into obstore's upload so that it aborts the multipart upload."""


class _S3Reader(AsyncIterator[bytes]):
    """Pieces of an obstore stream that end where the blob's offset is a multiple of
    `_READ_CHUNK` (1 MiB, the default block size): the engine's chunks fall anywhere,
    and a block checker fed pieces across block ends sliced (copied) each one again,
    a fifth of a large GET's loop time. `aclose` drops the connection."""

    def __init__(self, stream: obstore.BytesStream | None, start: int = 0) -> None:
        self._stream = stream
        self._offset = start  # in the blob, of the next byte handed out
        self._parts: deque[memoryview] = deque()
        self._held = 0  # bytes in _parts
        self._reading = False

    async def __anext__(self) -> bytes:
        if self._reading:
            raise RuntimeError("a blob stream cannot be read by two tasks at once")
        want = _READ_CHUNK - self._offset % _READ_CHUNK
        while self._held < want and self._stream is not None:
            self._reading = True
            try:
                chunk = memoryview(await self._stream.__anext__())
            except StopAsyncIteration:
                self._stream = None
                break
            except BaseError as exc:
                self._stream = None
                raise _translate(exc, "reading a blob") from exc
            finally:
                self._reading = False
            if self._stream is None:  # aclose() was called while reading
                raise StopAsyncIteration
            self._parts.append(chunk)
            self._held += len(chunk)
        if not self._held:
            raise StopAsyncIteration
        take = min(want, self._held)
        self._held -= take
        self._offset += take
        out = []
        while take:
            part = self._parts[0]
            if len(part) <= take:
                out.append(self._parts.popleft())
                take -= len(part)
            else:
                out.append(part[:take])
                self._parts[0] = part[take:]
                take = 0
        return bytes(out[0]) if len(out) == 1 else b"".join(out)

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        self._parts.clear()
        self._held = 0
        if stream is not None:
            _drain_later(stream)


# Dropping an obstore stream mid-body (a download, a listing) lets its HTTP client
# spawn connection clean-up outside Tokio's runtime, which panics, in whatever Python
# code the garbage collector happens to run. Such streams are read to their end in the
# background instead, and let go there.
# A stream whose draining could not finish (its event loop closed first) stays
# referenced here for the life of the process rather than be freed at a random moment.
_DRAINING: set[asyncio.Task[None]] = set()
_ABANDONED: list[AsyncIterator[Any]] = []


def _drain_later(stream: AsyncIterator[Any]) -> None:
    _ABANDONED.append(stream)
    try:
        task = asyncio.get_running_loop().create_task(_drain(stream))
    except RuntimeError:  # no running loop: it stays abandoned
        return
    _DRAINING.add(task)
    task.add_done_callback(_DRAINING.discard)


async def _drain(stream: AsyncIterator[Any]) -> None:
    with contextlib.suppress(Exception):
        async for _ in stream:
            pass
    # Reached only when the stream ended (or failed), never on cancellation.
    _ABANDONED.remove(stream)


def _status(exc: BaseError) -> int | None:
    match = _STATUS_RE.search(str(exc))
    return int(match.group(1)) if match else None


def _translate(exc: BaseError | FileNotFoundError, action: str) -> BlobStoreUnavailable:
    """One of ours for an obstore error, with a message naming no URL, key or secret."""
    if isinstance(exc, FileNotFoundError):  # only a missing bucket, where this is called
        reason = "the bucket does not exist"
    elif isinstance(exc, PermissionDeniedError | UnauthenticatedError):
        reason = "access denied (check the access key and secret)"
    else:
        # obstore's errors carry no fields, only text: the status or the HTTP error kind
        # is read from it, and nothing else of it (it names the URL) goes further.
        status, kind = _status(exc), _KIND_RE.search(str(exc))
        if status:
            reason = f"the engine answered HTTP {status}"
        elif kind and kind.group(1) == "Timeout":
            reason = "the engine did not answer in time"
        elif kind and kind.group(1) == "Connect":
            reason = "cannot connect to the engine"
        else:
            reason = "the connection to the engine failed"
    return BlobStoreUnavailable(f"s3 blob store: {action} failed: {reason}")
