"""`AsyncClient`: the whole SDK on asyncio/anyio over one httpx.AsyncClient."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tfstorage.client import directories, downloads, listing, uploads
from tfstorage.client._http import Http, object_path
from tfstorage.client.config import resolve_config
from tfstorage.client.models import Listing, ObjectInfo, ProgressCallback, TransferReport
from tfstorage.client.uploads import UploadOptions

# Aliases at module level: inside the class, `list` names the method.
JsonList = list[dict[str, Any]]
Versions = list[ObjectInfo]


class AsyncClient:
    """An asynchronous client of one TensorFleet Storage server.

    `url` and `token` default to the configuration (see `tfstorage.client.config`).
    Idempotent requests (and every part of a multipart upload) are retried `retries`
    times with exponential backoff on connection errors and 5xx answers. Use it as an
    async context manager, or call `aclose()`.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 4,
        part_size: int = uploads.UploadOptions.part_size,
        multipart_threshold: int = uploads.UploadOptions.multipart_threshold,
        concurrency: int = 4,
        state_dir: str | Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        config = resolve_config(url, token)
        self.url = config.url
        self.concurrency = concurrency
        self.upload_options = UploadOptions(
            part_size, multipart_threshold, concurrency, Path(state_dir) if state_dir else None
        )
        self._http = Http(
            config.url,
            config.token,
            timeout=timeout,
            retries=retries,
            transport=transport,
            connections=max(16, 2 * concurrency),
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    # --- objects -------------------------------------------------------------------------

    async def upload_file(
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
        """Upload a local file to `bucket/key` and return the stored version.

        Files of at least `multipart_threshold` bytes go up as a multipart upload with
        `concurrency` parts in flight, resumable: an interrupted upload of the same file
        (same path, size and mtime) to the same target continues from the parts the
        server holds, as does one given its `upload_id`. The SHA-256 of the local file is
        verified by the server before the object becomes visible."""
        path = Path(path)
        size = path.stat().st_size
        if upload_id is None and size < self.upload_options.multipart_threshold:
            body = await uploads.put_file(
                self._http, path, bucket, key,
                content_type=content_type, metadata=metadata, tags=tags, progress=progress,
            )  # fmt: skip
        else:
            body = await uploads.multipart_upload(
                self._http, path, bucket, key, options=self.upload_options,
                content_type=content_type, metadata=metadata, tags=tags,
                progress=progress, upload_id=upload_id,
            )  # fmt: skip
        return ObjectInfo.from_json(body, bucket)

    async def upload_bytes(
        self, data: bytes, bucket: str, key: str, *, content_type: str | None = None
    ) -> ObjectInfo:
        """Store `data` as `bucket/key` with one PUT (its SHA-256 checked by the server)."""
        import hashlib

        headers = {"X-Checksum-SHA256": hashlib.sha256(data).hexdigest()}
        if content_type:
            headers["Content-Type"] = content_type
        body = await self._http.json(
            "PUT", object_path("objects", bucket, key), content=data, headers=headers
        )
        return ObjectInfo.from_json(body, bucket)

    async def download_file(
        self,
        bucket: str,
        key: str,
        dest: str | Path,
        *,
        version_id: str | None = None,
        progress: ProgressCallback | None = None,
        resume: bool = True,
    ) -> ObjectInfo:
        """Download `bucket/key` (or one version) into `dest`, verified by SHA-256.

        Bytes go to a partial file beside `dest` that an interrupted download keeps and
        the next call resumes with `Range`; `dest` appears only once the whole file's
        size and SHA-256 match the server's (`ChecksumMismatch` otherwise, and nothing
        is kept)."""
        version = await downloads.resolve(self._http, bucket, key, version_id)
        await downloads.fetch(self._http, version, Path(dest), progress=progress, resume=resume)
        return await self.stat_version(version.file_id)

    async def download_bytes(
        self, bucket: str, key: str, *, version_id: str | None = None
    ) -> bytes:
        """The whole object in memory (for small objects), SHA-256 verified."""
        import hashlib

        from tfstorage.client.errors import ChecksumMismatch

        params = {"version_id": version_id} if version_id else {}
        response = await self._http.request(
            "GET", object_path("download", bucket, key), params=params
        )
        expected = response.headers.get("x-checksum-sha256")
        if expected and hashlib.sha256(response.content).hexdigest() != expected:
            raise ChecksumMismatch(f"{bucket}/{key}: the bytes received do not match sha256")
        return response.content

    async def upload_dir(
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
        """Upload every file under `local_dir` to `prefix` + its relative path.

        Small files go in batches of many files per request; with `skip_existing`, files
        whose remote copy has the same SHA-256 are skipped. `planned(files, bytes)` is
        called once with what will be sent; `on_file(key)` after each stored file."""

        async def one(path: Path, key: str, cb: ProgressCallback | None) -> dict[str, Any]:
            return (await self.upload_file(path, bucket, key, progress=cb)).to_json()

        return await directories.upload_dir(
            self._http, Path(local_dir), bucket, prefix, upload_one=one,
            skip_existing=skip_existing, concurrency=self.concurrency,
            progress=progress, on_file=on_file, planned=planned,
        )  # fmt: skip

    async def download_prefix(
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
        """Download every object under `prefix` into `local_dir` / (key minus `prefix`).

        Keys that would land outside `local_dir` are refused (reported as failed)."""
        return await directories.download_prefix(
            self._http, bucket, prefix, Path(local_dir), skip_existing=skip_existing,
            concurrency=max(8, self.concurrency), progress=progress, on_file=on_file,
            planned=planned,
        )  # fmt: skip

    async def list(self, bucket: str, prefix: str = "", *, delimiter: str = "") -> Listing:
        """Every key under `prefix` (all pages); with `delimiter`, grouped prefixes too."""
        return await listing.list_objects(self._http, bucket, prefix, delimiter)

    def iter_objects(self, bucket: str, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """The latest versions under `prefix`, in key order, fetched page by page."""
        return listing.iter_objects(self._http, bucket, prefix)

    async def stat(self, bucket: str, key: str, *, version_id: str | None = None) -> ObjectInfo:
        """The latest version of `bucket/key` (or `version_id`), with metadata and tags."""
        version = await downloads.resolve(self._http, bucket, key, version_id)
        return await self.stat_version(version.file_id)

    async def stat_version(self, file_id: str) -> ObjectInfo:
        """One version by its `file_id`."""
        return ObjectInfo.from_json(await self._http.json("GET", f"/api/v1/files/{file_id}"))

    async def versions(self, bucket: str, key: str) -> Versions:
        """Every version of a key, newest first."""
        body = await self._http.json("GET", object_path("versions", bucket, key))
        return [ObjectInfo.from_json(v, bucket) for v in body["versions"]]

    async def delete(
        self, bucket: str, key: str, *, version_id: str | None = None
    ) -> dict[str, Any]:
        """Delete a key (restorable for the server's retention), or one version for good."""
        params = {"version_id": version_id} if version_id else {}
        result: dict[str, Any] = await self._http.json(
            "DELETE", object_path("delete", bucket, key), params=params
        )
        return result

    async def delete_prefix(self, bucket: str, prefix: str) -> dict[str, Any]:
        """Delete every key under `prefix` server-side (`POST /api/v1/batch/delete`)."""
        result: dict[str, Any] = await self._http.json(
            "POST", "/api/v1/batch/delete", json={"bucket": bucket, "prefix": prefix}
        )
        return result

    async def delete_keys(self, bucket: str, keys: Sequence[str]) -> dict[str, Any]:
        """Delete these keys in one request; the answer has per-key results."""
        result: dict[str, Any] = await self._http.json(
            "POST", "/api/v1/batch/delete", json={"bucket": bucket, "keys": [*keys]}
        )
        return result

    async def copy_prefix(
        self,
        bucket: str,
        prefix: str,
        dest_bucket: str,
        dest_prefix: str,
        *,
        overwrite: bool = True,
    ) -> dict[str, Any]:
        """Copy every key under `prefix` to `dest_prefix` server-side (no bytes move:
        the copies share the stored blobs). `{copied, skipped, failed, bytes, ...}`."""
        body: dict[str, Any] = {"bucket": bucket, "prefix": prefix, "overwrite": overwrite}
        body |= {"dest_bucket": dest_bucket, "dest_prefix": dest_prefix}
        result: dict[str, Any] = await self._http.json(
            "POST", "/api/v1/batch/copy", json=body, idempotent=True
        )
        return result

    async def verify(
        self, bucket: str, key: str, *, version_id: str | None = None
    ) -> dict[str, Any]:
        """Have the server re-read the stored bytes and compare their checksums."""
        version = await downloads.resolve(self._http, bucket, key, version_id)
        result: dict[str, Any] = await self._http.json(
            "POST", f"/api/v1/files/{version.file_id}/verify", idempotent=True
        )
        return result

    # --- buckets, tokens, links, statistics -------------------------------------------------

    async def list_buckets(self) -> JsonList:
        """Every bucket this token may see, with its object count and size."""
        buckets: JsonList = (await self._http.json("GET", "/api/v1/buckets"))["buckets"]
        return buckets

    async def create_bucket(self, name: str, **settings: Any) -> dict[str, Any]:
        """Create a bucket (`versioning`, `allowed_types`, `quota_bytes`, `public_read`, ...)."""
        result: dict[str, Any] = await self._http.json(
            "POST", "/api/v1/buckets", json={"name": name, **settings}, idempotent=False
        )
        return result

    async def delete_bucket(self, name: str, *, force: bool = False) -> dict[str, Any]:
        """Delete a bucket; a non-empty one only with `force`."""
        result: dict[str, Any] = await self._http.json(
            "DELETE", f"/api/v1/buckets/{name}", params={"force": "true"} if force else {}
        )
        return result

    async def create_token(
        self,
        name: str,
        scopes: Sequence[str],
        *,
        buckets: Sequence[str] | None = None,
        prefix: str = "",
        expires_in: int | None = None,
    ) -> dict[str, Any]:
        """Create a token (admin); its secret (`token`) is in this answer only."""
        body: dict[str, Any] = {"name": name, "scopes": [*scopes], "buckets": [*(buckets or ["*"])]}
        body["prefix"] = prefix
        if expires_in is not None:
            body["expires_in"] = expires_in
        result: dict[str, Any] = await self._http.json(
            "POST", "/api/v1/tokens", json=body, idempotent=False
        )
        return result

    async def list_tokens(self) -> JsonList:
        """Every token (admin), never their secrets."""
        tokens: JsonList = (await self._http.json("GET", "/api/v1/tokens"))["tokens"]
        return tokens

    async def revoke_token(self, token_id: str) -> dict[str, Any]:
        """Revoke a token and every URL it presigned."""
        result: dict[str, Any] = await self._http.json("DELETE", f"/api/v1/tokens/{token_id}")
        return result

    async def presign(
        self,
        bucket: str,
        key: str,
        *,
        method: str = "GET",
        expires_in: int = 3600,
        max_size: int | None = None,
    ) -> dict[str, Any]:
        """A URL that GETs or PUTs this one object without a token: `{url, expires_at}`."""
        body: dict[str, Any] = {"method": method, "bucket": bucket, "key": key}
        body["expires_in"] = expires_in
        if max_size is not None:
            body["max_size"] = max_size
        result: dict[str, Any] = await self._http.json(
            "POST", "/api/v1/presign", json=body, idempotent=True
        )
        return result

    async def stats(self) -> dict[str, Any]:
        """Totals, per-bucket usage, space and deduplication (admin)."""
        result: dict[str, Any] = await self._http.json("GET", "/api/v1/stats")
        return result

    # --- upload sessions and jobs -------------------------------------------------------

    async def list_uploads(self, bucket: str | None = None) -> JsonList:
        """Open multipart upload sessions."""
        params = {"bucket": bucket} if bucket else {}
        uploads_: JsonList = (await self._http.json("GET", "/api/v1/uploads", params=params))[
            "uploads"
        ]
        return uploads_

    async def get_upload(self, upload_id: str) -> dict[str, Any]:
        """One upload session with the parts the server holds."""
        result: dict[str, Any] = await self._http.json("GET", f"/api/v1/uploads/{upload_id}")
        return result

    async def abort_upload(self, upload_id: str) -> None:
        """Abort a multipart upload; its parts are discarded."""
        await self._http.request("DELETE", f"/api/v1/uploads/{upload_id}")

    async def job(self, job_id: str) -> dict[str, Any]:
        """Progress of a batch job: done/total/bytes."""
        result: dict[str, Any] = await self._http.json("GET", f"/api/v1/jobs/{job_id}")
        return result
