"""Blob stores: opaque blob ids in, bytes out. Backends know nothing of buckets or keys."""

from tfstorage.blobs.base import (
    BlobInfo,
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    ByteStream,
    Capacity,
    new_blob_id,
)

__all__ = [
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "BlobStoreUnavailable",
    "ByteStream",
    "Capacity",
    "new_blob_id",
]
