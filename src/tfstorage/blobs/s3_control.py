"""The bucket-level S3 calls obstore lacks, as SigV4-signed requests over httpx.

HEAD and create bucket, list and abort multipart uploads: four calls, signed here in a
few lines rather than through boto3, which costs each worker about 40 MiB of RSS and 1.5 s
of import for them.
"""

from __future__ import annotations

import hashlib
import hmac
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import httpx

from tfstorage.blobs.base import BlobStoreUnavailable

if TYPE_CHECKING:
    from tfstorage.blobs.s3 import S3Config


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

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(
        self,
        method: str,
        key: str,
        query: dict[str, str],
        body: bytes = b"",
        *,
        expect: tuple[int, ...],
    ) -> httpx.Response:
        path = quote(f"/{self._config.bucket}" + (f"/{key}" if key else ""), safe="/-_.~")
        canonical_query = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())
        )
        headers = self._sign(method, path, canonical_query, body)
        url = self._base + path + (f"?{canonical_query}" if canonical_query else "")
        try:
            response = await self._client.request(method, url, headers=headers, content=body)
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

    def _sign(self, method: str, path: str, canonical_query: str, body: bytes) -> dict[str, str]:
        """AWS Signature Version 4 headers for one request."""
        config = self._config
        now = datetime.now(UTC)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        payload_hash = hashlib.sha256(body).hexdigest()
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
