"""Reach past the service to the stored bytes, to damage them as disks and engines do."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from tfstorage.blobs.pack_format import HEADER_SIZE
from tfstorage.blobs.packs import INDEX_FILE, PACKS_DIR
from tfstorage.config import Settings


class StoredBlobs:
    """The primary blob store's bytes, local files under DATA_DIR (or records in its
    packs, for blobs small enough to be packed) or S3 objects (boto3)."""

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

    def _index(self) -> sqlite3.Connection:
        return sqlite3.connect(self._settings.blob_dir / PACKS_DIR / INDEX_FILE, timeout=60)

    def _packed(self, blob_id: str) -> tuple[Path, int, int] | None:
        """The pack holding `blob_id`, where its bytes start there, and their length."""
        if not (self._settings.blob_dir / PACKS_DIR / INDEX_FILE).exists():
            return None
        conn = self._index()
        try:
            row = conn.execute(
                "SELECT pack, offset, length FROM blobs WHERE blob_id = ?", (blob_id,)
            ).fetchone()
        finally:
            conn.close()
        if row is None:
            return None
        return self._settings.blob_dir / PACKS_DIR / row[0], row[1] + HEADER_SIZE, row[2]

    def read(self, blob_id: str) -> bytes:
        if self._client is None:
            if packed := self._packed(blob_id):
                pack, start, length = packed
                with pack.open("rb") as f:
                    f.seek(start)
                    return f.read(length)
            return self._path(blob_id).read_bytes()
        body = self._client.get_object(Bucket=self._settings.s3_bucket, Key=self._key(blob_id))
        data: bytes = body["Body"].read()
        return data

    def write(self, blob_id: str, data: bytes) -> None:
        if self._client is None:
            if packed := self._packed(blob_id):
                # A record's bytes are rewritten in place, as a disk corrupts them; its
                # length is in its header and the index, so it cannot change here.
                pack, start, length = packed
                if len(data) != length:
                    raise ValueError("a packed blob is only damaged in place, same size")
                fd = os.open(pack, os.O_WRONLY)
                try:
                    os.pwrite(fd, data, start)
                finally:
                    os.close(fd)
                return
            path = self._path(blob_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            self._client.put_object(
                Bucket=self._settings.s3_bucket, Key=self._key(blob_id), Body=data
            )

    def exists(self, blob_id: str) -> bool:
        if self._client is None:
            return self._packed(blob_id) is not None or self._path(blob_id).exists()
        listed = self._client.list_objects_v2(
            Bucket=self._settings.s3_bucket, Prefix=self._key(blob_id)
        )
        return bool(listed.get("Contents"))

    def delete(self, blob_id: str) -> None:
        if self._client is None:
            if self._packed(blob_id):
                # Lost as a record is when its pack's index row goes (the index is
                # rebuilt from a pack only past the offset it was indexed through).
                conn = self._index()
                try:
                    conn.execute("DELETE FROM blobs WHERE blob_id = ?", (blob_id,))
                    conn.commit()
                finally:
                    conn.close()
                return
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
