"""`Client`: the blocking twin of `AsyncClient`.

It runs an `AsyncClient` on an event loop in a background thread (an anyio blocking
portal), so both have exactly the same behaviour: retries, resumable multipart
uploads, verified downloads. Progress callbacks are called from that thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from anyio.from_thread import start_blocking_portal

from tfstorage.client.async_client import AsyncClient, JsonList, Versions
from tfstorage.client.models import Listing, ObjectInfo, ProgressCallback, TransferReport
from tfstorage.client.uploads import UploadOptions

T = TypeVar("T")


class Client:
    """A blocking client of one TensorFleet Storage server; the same arguments and
    methods as `AsyncClient` (see there). Use it as a context manager, or `close()`."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 4,
        part_size: int = UploadOptions.part_size,
        multipart_threshold: int = UploadOptions.multipart_threshold,
        concurrency: int = 4,
        state_dir: str | Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._stack = contextlib.ExitStack()
        self._portal = self._stack.enter_context(start_blocking_portal())
        try:
            self._async = AsyncClient(
                url, token, timeout=timeout, retries=retries, part_size=part_size,
                multipart_threshold=multipart_threshold, concurrency=concurrency,
                state_dir=state_dir, transport=transport,
            )  # fmt: skip
        except BaseException:
            self._stack.close()
            raise
        self.url = self._async.url

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the background event loop."""
        try:
            self._portal.call(self._async.aclose)
        finally:
            self._stack.close()

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._portal.call(partial(fn, *args, **kwargs))

    def upload_file(
        self,
        path: str | Path,
        bucket: str,
        key: str,
        *,
        content_type: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        progress: ProgressCallback | None = None,
        upload_id: str | None = None,
    ) -> ObjectInfo:
        """See `AsyncClient.upload_file`."""
        result: ObjectInfo = self._call(
            self._async.upload_file, path, bucket, key, content_type=content_type,
            metadata=metadata, tags=tags, progress=progress, upload_id=upload_id,
        )  # fmt: skip
        return result

    def upload_bytes(
        self, data: bytes, bucket: str, key: str, *, content_type: str | None = None
    ) -> ObjectInfo:
        """See `AsyncClient.upload_bytes`."""
        result: ObjectInfo = self._call(
            self._async.upload_bytes, data, bucket, key, content_type=content_type
        )
        return result

    def download_file(
        self,
        bucket: str,
        key: str,
        dest: str | Path,
        *,
        version_id: str | None = None,
        progress: ProgressCallback | None = None,
        resume: bool = True,
    ) -> ObjectInfo:
        """See `AsyncClient.download_file`."""
        result: ObjectInfo = self._call(
            self._async.download_file, bucket, key, dest,
            version_id=version_id, progress=progress, resume=resume,
        )  # fmt: skip
        return result

    def download_bytes(self, bucket: str, key: str, *, version_id: str | None = None) -> bytes:
        """See `AsyncClient.download_bytes`."""
        result: bytes = self._call(self._async.download_bytes, bucket, key, version_id=version_id)
        return result

    def upload_dir(
        self,
        local_dir: str | Path,
        bucket: str,
        prefix: str = "",
        *,
        skip_existing: bool = True,
        progress: ProgressCallback | None = None,
        on_file: Callable[[str], None] | None = None,
        planned: Callable[[int, int], None] | None = None,
    ) -> TransferReport:
        """See `AsyncClient.upload_dir`."""
        result: TransferReport = self._call(
            self._async.upload_dir, local_dir, bucket, prefix, skip_existing=skip_existing,
            progress=progress, on_file=on_file, planned=planned,
        )  # fmt: skip
        return result

    def download_prefix(
        self,
        bucket: str,
        prefix: str,
        local_dir: str | Path,
        *,
        skip_existing: bool = True,
        progress: ProgressCallback | None = None,
        on_file: Callable[[str], None] | None = None,
        planned: Callable[[int, int], None] | None = None,
    ) -> TransferReport:
        """See `AsyncClient.download_prefix`."""
        result: TransferReport = self._call(
            self._async.download_prefix, bucket, prefix, local_dir,
            skip_existing=skip_existing, progress=progress, on_file=on_file, planned=planned,
        )  # fmt: skip
        return result

    def list(self, bucket: str, prefix: str = "", *, delimiter: str = "") -> Listing:
        """See `AsyncClient.list`."""
        result: Listing = self._call(self._async.list, bucket, prefix, delimiter=delimiter)
        return result

    def iter_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """See `AsyncClient.iter_objects`."""
        objects = self._async.iter_objects(bucket, prefix)
        while True:
            try:
                item: ObjectInfo = self._portal.call(objects.__anext__)
            except StopAsyncIteration:
                return
            yield item

    def stat(self, bucket: str, key: str, *, version_id: str | None = None) -> ObjectInfo:
        """See `AsyncClient.stat`."""
        result: ObjectInfo = self._call(self._async.stat, bucket, key, version_id=version_id)
        return result

    def stat_version(self, file_id: str) -> ObjectInfo:
        """See `AsyncClient.stat_version`."""
        result: ObjectInfo = self._call(self._async.stat_version, file_id)
        return result

    def versions(self, bucket: str, key: str) -> Versions:
        """See `AsyncClient.versions`."""
        result: Versions = self._call(self._async.versions, bucket, key)
        return result

    def delete(self, bucket: str, key: str, *, version_id: str | None = None) -> dict[str, Any]:
        """See `AsyncClient.delete`."""
        result: dict[str, Any] = self._call(self._async.delete, bucket, key, version_id=version_id)
        return result

    def delete_prefix(self, bucket: str, prefix: str) -> dict[str, Any]:
        """See `AsyncClient.delete_prefix`."""
        result: dict[str, Any] = self._call(self._async.delete_prefix, bucket, prefix)
        return result

    def delete_keys(self, bucket: str, keys: Sequence[str]) -> dict[str, Any]:
        """See `AsyncClient.delete_keys`."""
        result: dict[str, Any] = self._call(self._async.delete_keys, bucket, keys)
        return result

    def copy_prefix(
        self,
        bucket: str,
        prefix: str,
        dest_bucket: str,
        dest_prefix: str,
        *,
        overwrite: bool = True,
    ) -> dict[str, Any]:
        """See `AsyncClient.copy_prefix`."""
        result: dict[str, Any] = self._call(
            self._async.copy_prefix, bucket, prefix, dest_bucket, dest_prefix,
            overwrite=overwrite,
        )  # fmt: skip
        return result

    def verify(self, bucket: str, key: str, *, version_id: str | None = None) -> dict[str, Any]:
        """See `AsyncClient.verify`."""
        result: dict[str, Any] = self._call(self._async.verify, bucket, key, version_id=version_id)
        return result

    def list_buckets(self) -> JsonList:
        """See `AsyncClient.list_buckets`."""
        result: JsonList = self._call(self._async.list_buckets)
        return result

    def create_bucket(self, name: str, **settings: Any) -> dict[str, Any]:
        """See `AsyncClient.create_bucket`."""
        result: dict[str, Any] = self._call(self._async.create_bucket, name, **settings)
        return result

    def delete_bucket(self, name: str, *, force: bool = False) -> dict[str, Any]:
        """See `AsyncClient.delete_bucket`."""
        result: dict[str, Any] = self._call(self._async.delete_bucket, name, force=force)
        return result

    def create_token(
        self,
        name: str,
        scopes: Sequence[str],
        *,
        buckets: Sequence[str] | None = None,
        prefix: str = "",
        expires_in: int | None = None,
    ) -> dict[str, Any]:
        """See `AsyncClient.create_token`."""
        result: dict[str, Any] = self._call(
            self._async.create_token, name, scopes,
            buckets=buckets, prefix=prefix, expires_in=expires_in,
        )  # fmt: skip
        return result

    def list_tokens(self) -> JsonList:
        """See `AsyncClient.list_tokens`."""
        result: JsonList = self._call(self._async.list_tokens)
        return result

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        """See `AsyncClient.revoke_token`."""
        result: dict[str, Any] = self._call(self._async.revoke_token, token_id)
        return result

    def presign(
        self,
        bucket: str,
        key: str,
        *,
        method: str = "GET",
        expires_in: int = 3600,
        max_size: int | None = None,
    ) -> dict[str, Any]:
        """See `AsyncClient.presign`."""
        result: dict[str, Any] = self._call(
            self._async.presign, bucket, key,
            method=method, expires_in=expires_in, max_size=max_size,
        )  # fmt: skip
        return result

    def stats(self) -> dict[str, Any]:
        """See `AsyncClient.stats`."""
        result: dict[str, Any] = self._call(self._async.stats)
        return result

    def list_uploads(self, bucket: str | None = None) -> JsonList:
        """See `AsyncClient.list_uploads`."""
        result: JsonList = self._call(self._async.list_uploads, bucket)
        return result

    def get_upload(self, upload_id: str) -> dict[str, Any]:
        """See `AsyncClient.get_upload`."""
        result: dict[str, Any] = self._call(self._async.get_upload, upload_id)
        return result

    def abort_upload(self, upload_id: str) -> None:
        """See `AsyncClient.abort_upload`."""
        self._call(self._async.abort_upload, upload_id)

    def job(self, job_id: str) -> dict[str, Any]:
        """See `AsyncClient.job`."""
        result: dict[str, Any] = self._call(self._async.job, job_id)
        return result
