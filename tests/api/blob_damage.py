"""Reach past the service to the stored bytes, to damage them as disks and engines do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tfstorage.config import Settings


class StoredBlobs:
    """The primary blob store's bytes, local files under DATA_DIR or S3 objects (boto3)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Any = None
        if settings.storage_type != "local":
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=settings.s3_endpoint_url,
                aws_access_key_id=settings.minio_access_key,
                aws_secret_access_key=settings.minio_secret_key,
                region_name=settings.s3_region,
                config=Config(
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    s3={"addressing_style": "path"},
                ),
            )
            prefix = settings.s3_prefix.strip("/")
            self._prefix = f"{prefix}/blobs/" if prefix else "blobs/"

    def _path(self, blob_id: str) -> Path:
        return self._settings.blob_dir / blob_id[:2] / blob_id[2:4] / blob_id

    def _key(self, blob_id: str) -> str:
        return f"{self._prefix}{blob_id[:2]}/{blob_id}"

    def read(self, blob_id: str) -> bytes:
        if self._client is None:
            return self._path(blob_id).read_bytes()
        body = self._client.get_object(Bucket=self._settings.s3_bucket, Key=self._key(blob_id))
        data: bytes = body["Body"].read()
        return data

    def write(self, blob_id: str, data: bytes) -> None:
        if self._client is None:
            path = self._path(blob_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            self._client.put_object(
                Bucket=self._settings.s3_bucket, Key=self._key(blob_id), Body=data
            )

    def exists(self, blob_id: str) -> bool:
        if self._client is None:
            return self._path(blob_id).exists()
        listed = self._client.list_objects_v2(
            Bucket=self._settings.s3_bucket, Prefix=self._key(blob_id)
        )
        return bool(listed.get("Contents"))

    def delete(self, blob_id: str) -> None:
        if self._client is None:
            self._path(blob_id).unlink()
        else:
            self._client.delete_object(Bucket=self._settings.s3_bucket, Key=self._key(blob_id))

    def flip(self, blob_id: str, offset: int) -> bytes:
        """Flip one bit at `offset` (same size, different bytes); returns the new bytes."""
        data = bytearray(self.read(blob_id))
        data[offset] ^= 0x01
        self.write(blob_id, bytes(data))
        return bytes(data)

    def truncate(self, blob_id: str, size: int) -> None:
        self.write(blob_id, self.read(blob_id)[:size])
