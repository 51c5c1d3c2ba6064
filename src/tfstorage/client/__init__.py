"""The Python SDK of TensorFleet Storage: `Client` (blocking) and `AsyncClient`.

```python
from tfstorage.client import Client

with Client("http://127.0.0.1:8083", token="tfs_...") as c:
    c.upload_file("model.pt", "models", "resnet/v1/model.pt")      # resumable multipart
    c.download_file("models", "resnet/v1/model.pt", "copy.pt")    # resumable, verified
    c.upload_dir("checkpoints/run-7", "checkpoints", "run-7/")    # batched, skips matches
```

URL and token default to `TFSTORAGE_URL` / `TFSTORAGE_TOKEN`, the config file, or a
local server's `DATA_DIR/admin.token` (see `tfstorage.client.config`). Errors are
`TFStorageError` subclasses named after the server's codes (`NoSuchKey`, ...).
"""

from __future__ import annotations

from tfstorage.client.async_client import AsyncClient
from tfstorage.client.config import ClientConfig, config_path, resolve_config
from tfstorage.client.errors import (
    AccessDenied,
    BadDigest,
    BucketAlreadyExists,
    BucketNotEmpty,
    ChecksumMismatch,
    ConfigurationError,
    EntityTooLarge,
    IncompleteDownload,
    InvalidRequest,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NoSuchVersion,
    NotFound,
    ObjectCorrupted,
    ServerError,
    ServiceUnavailable,
    TFStorageError,
    TransportError,
    Unauthenticated,
)
from tfstorage.client.models import Listing, ObjectInfo, ProgressCallback, TransferReport
from tfstorage.client.sync_client import Client

__all__ = [
    "AccessDenied",
    "AsyncClient",
    "BadDigest",
    "BucketAlreadyExists",
    "BucketNotEmpty",
    "ChecksumMismatch",
    "Client",
    "ClientConfig",
    "ConfigurationError",
    "EntityTooLarge",
    "IncompleteDownload",
    "InvalidRequest",
    "Listing",
    "NoSuchBucket",
    "NoSuchKey",
    "NoSuchUpload",
    "NoSuchVersion",
    "NotFound",
    "ObjectCorrupted",
    "ObjectInfo",
    "ProgressCallback",
    "ServerError",
    "ServiceUnavailable",
    "TFStorageError",
    "TransferReport",
    "TransportError",
    "Unauthenticated",
    "config_path",
    "resolve_config",
]
