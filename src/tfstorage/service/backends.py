"""The blob store a deployment's settings ask for."""

from __future__ import annotations

from tfstorage.blobs.base import BlobStore
from tfstorage.blobs.local import LocalBlobStore
from tfstorage.config import Settings
from tfstorage.errors import ConfigError


def build_blob_store(settings: Settings) -> BlobStore:
    if settings.storage_type == "local":
        return LocalBlobStore(settings.blob_dir)
    raise ConfigError(
        f"invalid STORAGE_TYPE: {settings.storage_type!r} is not available in this version"
        " (use 'local')"
    )
