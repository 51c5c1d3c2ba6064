"""Blob stores: opaque blob ids in, bytes out. Backends know nothing of buckets or keys."""

from tfstorage.blobs.base import (
    AssembledBlob,
    BlobInfo,
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    ByteStream,
    Capacity,
    StoredPart,
    new_blob_id,
)

__all__ = [
    "AssembledBlob",
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "BlobStoreUnavailable",
    "ByteStream",
    "Capacity",
    "StoredPart",
    "new_blob_id",
]
