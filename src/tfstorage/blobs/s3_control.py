"""The S3 calls obstore lacks, as SigV4-signed requests over httpx.

HEAD and create bucket, list and abort multipart uploads, and the multipart upload of a
resumable session (create, upload part, complete): signed here in a few lines rather than
through boto3, which costs each worker about 40 MiB of RSS and 1.5 s of import for them.
obstore runs multipart uploads only inside its own `put` (no upload id to resume from
another request or process), and its `put_part` takes the whole part in memory, where a
part may be 5 GiB: parts are streamed from the client's request through httpx instead.
"""

from __future__ import annotations

import hashlib
import hmac
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import escape

import httpx

from tfstorage.blobs.base import BlobStoreUnavailable
from tfstorage.errors import BadDigest, InvalidPart, NoSuchUpload

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

if TYPE_CHECKING:
    from tfstorage.blobs.s3_config import S3Config


class S3ControlClient:
    """The few bucket-level S3 calls obstore lacks, as SigV4-signed httpx requests."""

    def __init__(self, config: S3Config) -> None:
        self._config = config
        url = urlsplit(config.endpoint_url)
        default_port = 443 if url.scheme == "https" else 80
        self._host = (url.hostname or "") if url.port in (None, default_port) else url.netloc
        self._base = f"{url.scheme}://{url.netloc}"
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_seconds),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
            trust_env=False,  # engine traffic goes where the settings say, never via a proxy
        )
        # Parts of many sessions stream in parallel: a pool of their own, and no overall
        # deadline (a 5 GiB part takes minutes), only the idle timeouts.
        self._data = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_seconds),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            trust_env=False,
        )

    async def bucket_exists(self) -> bool:
        response = await self._request("HEAD", "", {}, expect=(200, 404))
        return response.status_code == 200

    async def create_bucket(self) -> None:
        body = b""
        if self._config.region != "us-east-1":  # AWS refuses the constraint for us-east-1
            body = (
                '<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<LocationConstraint>{self._config.region}</LocationConstraint>"
                "</CreateBucketConfiguration>"
            ).encode()
        response = await self._request("PUT", "", {}, body, expect=(200, 409))
        if response.status_code == 409 and b"BucketAlreadyOwnedByYou" not in response.content:
            raise BlobStoreUnavailable("s3 blob store: the bucket name is taken by another owner")

    async def list_multipart_uploads(self, prefix: str) -> AsyncIterator[tuple[str, str, float]]:
        """(key, upload id, initiated epoch seconds) of each upload under `prefix`."""
        query = {"uploads": "", "prefix": prefix, "max-uploads": "1000"}
        while True:
            response = await self._request("GET", "", query, expect=(200,))
            # The engine is the operator's own, configured by the settings: trusted XML.
            root = ET.fromstring(response.content)  # noqa: S314
            for upload in root.iterfind("{*}Upload"):
                initiated = datetime.fromisoformat(upload.findtext("{*}Initiated", ""))
                if initiated.tzinfo is None:
                    initiated = initiated.replace(tzinfo=UTC)
                yield (
                    upload.findtext("{*}Key", ""),
                    upload.findtext("{*}UploadId", ""),
                    initiated.timestamp(),
                )
            if root.findtext("{*}IsTruncated", "false").lower() != "true":
                return
            query["key-marker"] = root.findtext("{*}NextKeyMarker", "")
            query["upload-id-marker"] = root.findtext("{*}NextUploadIdMarker", "")

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        await self._request("DELETE", key, {"uploadId": upload_id}, expect=(200, 204, 404))

    async def create_multipart_upload(self, key: str) -> str:
        response = await self._request("POST", key, {"uploads": ""}, b"", expect=(200,))
        root = ET.fromstring(response.content)  # noqa: S314 - the operator's own engine
        upload_id = root.findtext("{*}UploadId", "")
        if not upload_id:
            raise BlobStoreUnavailable("s3 blob store: the engine returned no upload id")
        return upload_id

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        body: AsyncIterable[bytes],
        *,
        size: int,
        content_md5: str | None,
        sha256: str | None,
    ) -> str:
        """Stream one part; returns the engine's ETag for it. The engine itself checks
        `content_md5` (base64) and `sha256` (hex, signed as the payload hash) and refuses
        a mismatch without replacing an earlier part of the number."""
        headers = {"content-length": str(size)}
        if content_md5 is not None:
            headers["content-md5"] = content_md5
        query = {"partNumber": str(part_number), "uploadId": upload_id}
        response = await self._request(
            "PUT",
            key,
            query,
            body,
            expect=(200, 400, 404),
            headers=headers,
            payload_hash=sha256 or UNSIGNED_PAYLOAD,
            client=self._data,
        )
        if response.status_code != 200:
            code = _error_code(response)
            if code == "NoSuchUpload" or response.status_code == 404:
                raise NoSuchUpload(upload_id)
            if code in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"):
                raise BadDigest("the part's bytes do not match the checksum sent with them")
            raise BlobStoreUnavailable(f"s3 blob store: uploading a part failed ({code})")
        etag = str(response.headers.get("etag", "")).strip('"')
        if not etag:
            raise BlobStoreUnavailable("s3 blob store: the engine returned no part ETag")
        return etag

    async def complete_multipart_upload(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> None:
        body = "".join(
            f"<Part><PartNumber>{number}</PartNumber><ETag>&quot;{escape(etag)}&quot;</ETag></Part>"
            for number, etag in parts
        )
        xml = f"<CompleteMultipartUpload>{body}</CompleteMultipartUpload>".encode()
        response = await self._request(
            "POST", key, {"uploadId": upload_id}, xml, expect=(200, 400, 404), client=self._data
        )
        # A 200 may still carry an error: the engine answers early and reports at the end.
        code = _error_code(response) if b"<Error" in response.content[:512] else None
        if response.status_code == 200 and code is None:
            return
        if code == "NoSuchUpload" or response.status_code == 404:
            raise NoSuchUpload(upload_id)
        if code in ("InvalidPart", "InvalidPartOrder", "EntityTooSmall"):
            raise InvalidPart(f"the engine refused the parts of the upload ({code})")
        raise BlobStoreUnavailable(f"s3 blob store: completing an upload failed ({code})")

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._data.aclose()

    async def _request(
        self,
        method: str,
        key: str,
        query: dict[str, str],
        body: bytes | AsyncIterable[bytes] = b"",
        *,
        expect: tuple[int, ...],
        headers: dict[str, str] | None = None,
        payload_hash: str | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> httpx.Response:
        path = quote(f"/{self._config.bucket}" + (f"/{key}" if key else ""), safe="/-_.~")
        canonical_query = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())
        )
        if payload_hash is None:
            assert isinstance(body, bytes)
            payload_hash = hashlib.sha256(body).hexdigest()
        signed = self._sign(method, path, canonical_query, payload_hash)
        url = self._base + path + (f"?{canonical_query}" if canonical_query else "")
        try:
            response = await (client or self._client).request(
                method, url, headers={**(headers or {}), **signed}, content=body
            )
        except httpx.TimeoutException as exc:
            raise BlobStoreUnavailable("s3 blob store: the engine did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise BlobStoreUnavailable("s3 blob store: cannot connect to the engine") from exc
        if response.status_code in expect:
            return response
        if response.status_code in (401, 403):
            reason = "access denied (check the access key and secret)"
        else:
            reason = f"the engine answered HTTP {response.status_code}"
        raise BlobStoreUnavailable(f"s3 blob store: {method} on the bucket failed: {reason}")

    def _sign(
        self, method: str, path: str, canonical_query: str, payload_hash: str
    ) -> dict[str, str]:
        """AWS Signature Version 4 headers for one request."""
        config = self._config
        now = datetime.now(UTC)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = {"host": self._host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
        signed = ";".join(sorted(headers))
        canonical = "\n".join(
            [
                method,
                path,
                canonical_query,
                "".join(f"{name}:{headers[name]}\n" for name in sorted(headers)),
                signed,
                payload_hash,
            ]
        )
        scope = f"{day}/{config.region}/s3/aws4_request"
        string_to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = f"AWS4{config.secret_key}".encode()
        for part in (day, config.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={config.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        return headers


def _error_code(response: httpx.Response) -> str:
    """The S3 error code of an answer (`HTTP <status>` when it carries none)."""
    try:
        root = ET.fromstring(response.content)  # noqa: S314 - the operator's own engine
    except ET.ParseError:
        return f"HTTP {response.status_code}"
    return root.findtext("{*}Code") or root.findtext("Code") or f"HTTP {response.status_code}"
