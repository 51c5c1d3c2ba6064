"""The blob store a deployment's settings ask for."""

from __future__ import annotations

from tfstorage.blobs.base import BlobStore
from tfstorage.blobs.local import LocalBlobStore
from tfstorage.blobs.packs import PackedBlobStore
from tfstorage.blobs.s3_config import S3Config, normalize_prefix
from tfstorage.config import Settings
from tfstorage.domain.uploads import MAX_PARTS
from tfstorage.errors import ConfigError


def _s3_store(config: S3Config) -> BlobStore:
    # Imported here: obstore (and httpx, for what obstore lacks) weigh some 10 MiB in each
    # worker process, and a deployment on local disk never uses them.
    from tfstorage.blobs.s3 import S3BlobStore

    return S3BlobStore(config)


def build_blob_store(settings: Settings) -> BlobStore:
    """The primary store, wrapped with its replica when `REPLICA_STORAGE_TYPE` is set.

    Nothing is contacted here; `await store.check()` at start-up reaches the engine and
    creates the S3 bucket if it is missing.
    """
    if settings.storage_type == "local" and settings.pack_threshold:
        primary: BlobStore = PackedBlobStore(
            settings.blob_dir, threshold=settings.pack_threshold, block_size=settings.block_size
        )
    elif settings.storage_type == "local":
        primary = LocalBlobStore(settings.blob_dir, block_size=settings.block_size)
    elif settings.storage_type in ("s3", "minio"):
        primary = _s3_store(s3_config(settings))
    else:
        raise ConfigError(
            f"invalid STORAGE_TYPE: {settings.storage_type!r} (use 'local', 's3' or 'minio')"
        )
    if settings.archive_storage_type:
        from tfstorage.blobs.tiered import TieredBlobStore

        primary = TieredBlobStore(primary, _build_archive(settings))
    if not settings.replica_storage_type:
        return primary
    # Imported here: replication is optional, and its module builds on this one's stores.
    from tfstorage.blobs.replicated import ReplicatedBlobStore

    # Its catch-up journal is the index's, attached by `open_storage` (service/replication.py).
    return ReplicatedBlobStore(primary, _build_replica(settings))


def engine_part_size(settings: Settings) -> int:
    """S3_PART_SIZE, or the smallest whole number of MiB that lets an object of
    MAX_FILE_SIZE go up in 10,000 parts: small parts keep a server's memory low (an
    upload holds three), and a setting that allows huge files still gets them stored."""
    needed = -(-settings.max_file_size // MAX_PARTS)  # S3's limit, as our own uploads'
    mib = 1024**2
    return max(settings.s3_part_size, -(-needed // mib) * mib)


def s3_config(settings: Settings) -> S3Config:
    """The primary engine's `S3Config` (MINIO_* for the original variables, S3_* for more)."""
    return _config(
        "",
        endpoint_url=settings.s3_endpoint_url,
        endpoint=settings.minio_endpoint,
        secure=settings.minio_secure,
        bucket=settings.s3_bucket or settings.default_bucket,
        access_key=settings.minio_access_key,
        secret_key=settings.minio_secret_key,
        region=settings.s3_region,
        prefix=settings.s3_prefix,
        settings=settings,
    )


def replica_s3_config(settings: Settings) -> S3Config:
    """The replica engine's `S3Config`: REPLICA_* settings, falling back to the primary's
    credentials, region and bucket name, never to its endpoint."""
    if not (settings.replica_s3_endpoint_url or settings.replica_minio_endpoint):
        raise ConfigError(
            "invalid REPLICA_S3_ENDPOINT_URL: an S3 replica needs REPLICA_S3_ENDPOINT_URL"
            " or REPLICA_MINIO_ENDPOINT"
        )
    config = _config(
        "REPLICA_",
        endpoint_url=settings.replica_s3_endpoint_url,
        endpoint=settings.replica_minio_endpoint,
        secure=settings.replica_minio_secure,
        bucket=settings.replica_s3_bucket or settings.s3_bucket or settings.default_bucket,
        access_key=settings.replica_minio_access_key or settings.minio_access_key,
        secret_key=settings.replica_minio_secret_key or settings.minio_secret_key,
        region=settings.replica_s3_region or settings.s3_region,
        prefix=settings.replica_s3_prefix,
        settings=settings,
    )
    if settings.storage_type in ("s3", "minio"):
        primary = s3_config(settings)
        same_place = (config.endpoint_url, config.bucket) == (primary.endpoint_url, primary.bucket)
        if same_place and (
            config.prefix.startswith(primary.prefix) or primary.prefix.startswith(config.prefix)
        ):
            raise ConfigError(
                "invalid REPLICA_S3_PREFIX: the replica overlaps the primary's bucket and prefix"
            )
    return config


def _build_replica(settings: Settings) -> BlobStore:
    if settings.replica_storage_type == "local":
        root = settings.replica_data_dir or settings.data_dir / "replica"
        if settings.storage_type == "local" and root.resolve() == settings.blob_dir.resolve():
            raise ConfigError("invalid REPLICA_DATA_DIR: it is the primary's blob directory")
        return LocalBlobStore(root)
    return _s3_store(replica_s3_config(settings))


def _build_archive(settings: Settings) -> BlobStore:
    """Lifecycle's archive tier: a directory, or a bucket and prefix on the primary's
    S3 engine (never overlapping the primary's blobs)."""
    if settings.archive_storage_type == "local":
        root = settings.archive_data_dir or settings.data_dir / "archive"
        if settings.storage_type == "local" and root.resolve() == settings.blob_dir.resolve():
            raise ConfigError("invalid ARCHIVE_DATA_DIR: it is the primary's blob directory")
        return LocalBlobStore(root)
    primary = s3_config(settings)
    config = _config(
        "ARCHIVE_",
        endpoint_url=settings.s3_endpoint_url,
        endpoint=settings.minio_endpoint,
        secure=settings.minio_secure,
        bucket=settings.archive_s3_bucket or primary.bucket,
        access_key=settings.minio_access_key,
        secret_key=settings.minio_secret_key,
        region=settings.s3_region,
        prefix=settings.archive_s3_prefix,
        settings=settings,
    )
    mine, theirs = config.blobs_prefix, primary.blobs_prefix
    overlaps = mine.startswith(theirs) or theirs.startswith(mine)
    if settings.storage_type in ("s3", "minio") and config.bucket == primary.bucket and overlaps:
        raise ConfigError("invalid ARCHIVE_S3_PREFIX: the archive overlaps the primary's prefix")
    return _s3_store(config)


def _config(
    variables: str,
    *,
    endpoint_url: str,
    endpoint: str,
    secure: bool,
    bucket: str,
    access_key: str,
    secret_key: str,
    region: str,
    prefix: str,
    settings: Settings,
) -> S3Config:
    if not endpoint_url:
        if not endpoint or "/" in endpoint:
            raise ConfigError(f"invalid {variables}MINIO_ENDPOINT: expected host:port")
        endpoint_url = f"{'https' if secure else 'http'}://{endpoint}"
    try:
        return S3Config(
            endpoint_url=endpoint_url,
            bucket=bucket,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            prefix=normalize_prefix(prefix),
            part_size=engine_part_size(settings),
            timeout_seconds=settings.s3_timeout_seconds,
            max_retries=settings.s3_max_retries,
        )
    except ValueError as exc:
        # S3Config's messages name the setting's meaning, never its (possibly secret) value.
        raise ConfigError(f"invalid {variables}S3 configuration: {exc}") from None
