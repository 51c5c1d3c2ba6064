"""Settings from environment variables (the original service's, plus what scale needs)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tfstorage.domain.blocks import DEFAULT_BLOCK_SIZE, check_block_size
from tfstorage.domain.names import validate_bucket_name
from tfstorage.domain.sizes import parse_size
from tfstorage.errors import ConfigError, InvalidBucketName

# A packed blob is read into memory whole: PACK_THRESHOLD stays small.
MAX_PACK_THRESHOLD = 8 * 1024 * 1024
_ZERO_MEANS_OFF = frozenset({"pack_threshold", "scrub_bytes_per_second", "body_min_rate"})
_ZERO = re.compile(r"\s*0+(\.0*)?\s*([KMGT]i?)?B?\s*", re.IGNORECASE)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", validate_default=True
    )

    host: str = "127.0.0.1"
    port: int = 8083
    workers: int = 1
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # "json": one JSON object per log line (one line per request, see tfstorage.logs).
    log_format: Literal["text", "json"] = "text"
    cors_origins: str = ""  # comma-separated origins; "*" allows any (without credentials)
    # The S3 endpoint (issue 12): its own port on HOST (0: off). S3_REGION (below) is both
    # the blob engine's region and the endpoint's signing region: one setting, since a
    # deployment that names a region names it once. S3_DOMAIN: `bucket.S3_DOMAIN` hosts
    # address buckets (virtual-host style); empty: path style only.
    s3_port: int = 9000
    s3_domain: str = ""
    # A CompleteMultipartUpload still assembling after this long answers 200 at once and
    # sends a space this often until its result (or an <Error>) follows, as S3 does: a
    # large object's completion never outlasts a client's read timeout. 0: at once.
    s3_complete_keepalive_seconds: float = 5.0
    # The key S3 secrets are derived from (service/s3keys.py); never in the index, never
    # logged. Empty: generated on first start into DATA_DIR/s3-secret.key. Several
    # instances on one index must share it, like ADMIN_TOKEN; changing it revokes every
    # S3 secret.
    s3_secret_key: SecretStr = SecretStr("")

    storage_type: Literal["local", "minio", "s3"] = "local"
    data_dir: Path = Path("./data")
    database_url: str = ""  # empty: SQLite in DATA_DIR

    minio_endpoint: str = "minio:9000"
    minio_access_key: str = "minioadmin"
    minio_secret_key: str = "minioadmin"  # noqa: S105 - the original service's documented default
    minio_secure: bool = False

    # --- S3 engine (STORAGE_TYPE=s3|minio) and blob replica; read by service/backends.py --
    s3_endpoint_url: str = ""  # full URL; wins over MINIO_ENDPOINT and MINIO_SECURE
    s3_region: str = "us-east-1"
    s3_bucket: str = ""  # physical bucket; empty: DEFAULT_BUCKET
    s3_prefix: str = ""  # objects go under {S3_PREFIX}/blobs/
    # Multipart part size, with units (5MB .. 5GB); raised as needed for MAX_FILE_SIZE to
    # fit in S3's 10,000 parts (service/backends.py). An upload holds three parts in memory:
    # at 8 MiB a worker moving 1 GiB to SeaweedFS peaked at 149-152 MiB of RSS, at 6 MiB
    # 4-5 MiB lower and as fast (bench/README.md, stop 26).
    s3_part_size: int = 6 * 1024**2
    s3_timeout_seconds: float = 10.0  # connect, and idle wait for bytes
    s3_max_retries: int = 3  # for connection errors, timeouts of reads, 5xx and SlowDown

    replica_storage_type: Literal["", "local", "minio", "s3"] = ""  # empty: no replica
    replica_data_dir: Path | None = None  # local replica root; empty: DATA_DIR/replica
    replica_s3_endpoint_url: str = ""
    replica_minio_endpoint: str = ""  # the replica's engine: one of these two is required
    replica_minio_access_key: str = ""  # empty: MINIO_ACCESS_KEY
    replica_minio_secret_key: str = ""  # empty: MINIO_SECRET_KEY
    replica_minio_secure: bool = False
    replica_s3_region: str = ""  # empty: S3_REGION
    replica_s3_bucket: str = ""  # empty: the primary's bucket name (on the replica's engine)
    replica_s3_prefix: str = ""

    @field_validator("s3_part_size", mode="before")
    @classmethod
    def _parse_part_size(cls, value: object) -> object:
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("s3_part_size")
    @classmethod
    def _part_size_range(cls, value: int) -> int:
        if not 5 * 1024**2 <= value <= 5 * 1024**3:
            raise ValueError("S3 parts must be between 5MB and 5GB")
        return value

    @field_validator("s3_timeout_seconds")
    @classmethod
    def _positive_timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("s3_max_retries")
    @classmethod
    def _retries(cls, value: int) -> int:
        if not 0 <= value <= 20:
            raise ValueError("must be between 0 and 20")
        return value

    @field_validator("s3_endpoint_url", "replica_s3_endpoint_url")
    @classmethod
    def _endpoint_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be a full URL such as http://seaweedfs:8333")
        return value.rstrip("/")

    @field_validator("s3_bucket", "replica_s3_bucket", "archive_s3_bucket")
    @classmethod
    def _physical_bucket(cls, value: str) -> str:
        try:
            return validate_bucket_name(value) if value else value
        except InvalidBucketName as exc:
            raise ValueError(exc.message) from None

    @field_validator("replica_storage_type", "archive_storage_type", mode="before")
    @classmethod
    def _lower_replica(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    # --- end of the S3 / replica block ----------------------------------------------------

    default_bucket: str = "tensorfleet"
    max_file_size: int = 100 * 1024**2
    retention_days: int = 30

    # Access control.
    auth_enabled: bool = True
    admin_token: str = ""  # empty: generated on first start into DATA_DIR/admin.token

    # A client that sends no body bytes for this long is cut off (slow-body clients
    # cannot hold an upload, its temp file and its memory forever); 0: no limit.
    body_timeout_seconds: float = 60.0
    # Slow clients (issue 10): request headers must be complete this long after their
    # first byte; a body must arrive at BODY_MIN_RATE bytes/s on average once
    # BODY_GRACE_SECONDS have passed (a declared length L: by max(grace, L / rate)).
    # 0 turns each off. HTTP_IMPLEMENTATION picks uvicorn's parser (auto: httptools).
    header_timeout_seconds: float = 10.0
    body_min_rate: int = 64 * 1024
    body_grace_seconds: float = 10.0
    http_implementation: Literal["auto", "h11", "httptools"] = "auto"

    gc_interval_seconds: float = 3600.0
    orphan_grace_seconds: float = 3600.0
    # Integrity (issue 6): a scrub pass re-reads every blob against its checksums once
    # per interval (0: never), reading at most this many bytes per second (0: no limit).
    scrub_interval_seconds: float = 7 * 24 * 3600.0
    scrub_bytes_per_second: int = 50 * 1024**2
    # Block checksums (issue 10): new blobs get a CRC32C per block of this size, so that
    # a ranged read is verified as it is served (see domain/blocks.py). A blob keeps the
    # block size it was written with; changing it only affects new blobs.
    block_size: int = DEFAULT_BLOCK_SIZE
    # Pack store (issue 11): with STORAGE_TYPE=local, blobs of at most this many bytes are
    # appended to shared pack files, one fdatasync per group of concurrent puts, instead
    # of a file each (blobs/packs.py). 0: off, every blob a file. The default, 64KB, is
    # the measured sweet spot (bench/packs.py).
    pack_threshold: int = 64 * 1024
    max_listing_limit: int = 1000
    # Lifecycle (issue 6): scheduled runs every interval (0: only runs asked for through
    # the API or CLI), a cap on what one run removes, and tags that protect a version.
    lifecycle_interval_seconds: float = 3600.0
    lifecycle_max_deletions_per_run: int = 10_000
    lifecycle_protected_tags: str = "protected=true"
    # The archive tier of lifecycle's `archive_days` (empty: none). `local` keeps it in
    # ARCHIVE_DATA_DIR; `s3`/`minio` on the primary's engine and credentials, in
    # ARCHIVE_S3_BUCKET (empty: the primary's) under ARCHIVE_S3_PREFIX.
    archive_storage_type: Literal["", "local", "minio", "s3"] = ""
    archive_data_dir: Path | None = None  # empty: DATA_DIR/archive
    archive_s3_bucket: str = ""
    archive_s3_prefix: str = "archive"
    # Resumable upload sessions idle (no part, no completion) longer than this are expired
    # by the maintenance loop and their parts collected.
    upload_session_ttl_seconds: float = 7 * 24 * 3600.0

    # Scaling out (issue 10). The base URL clients reach the service at (a load balancer's),
    # for the links it hands out (presigned URLs); empty: the request's own, as forwarded
    # by a trusted proxy. Proxies whose Forwarded / X-Forwarded-* headers are believed:
    # comma-separated addresses or networks, or "*" for any peer.
    public_url: str = ""
    forwarded_allow_ips: str = "127.0.0.1,::1"
    # Which headers the trusted proxy sets: only that family is read, so a client cannot
    # pass the other one through a proxy that does not strip it.
    forwarded_headers: Literal["x-forwarded", "forwarded"] = "x-forwarded"

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be a full URL such as https://storage.example.com")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or a fragment")
        return value.rstrip("/")

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        for item in (i.strip() for i in value.split(",")):
            if item and item != "*":
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    @field_validator(
        "max_file_size",
        "scrub_bytes_per_second",
        "body_min_rate",
        "block_size",
        "pack_threshold",
        mode="before",
    )
    @classmethod
    def _parse_size(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        # 0 means off (packs) or no limit (rates), as the README says; it is no size, so
        # parse_size refuses it, and the environment only ever gives strings.
        if info.field_name in _ZERO_MEANS_OFF and _ZERO.fullmatch(value):
            return 0
        return parse_size(value)

    @field_validator("block_size")
    @classmethod
    def _block_size(cls, value: int) -> int:
        return check_block_size(value)

    @field_validator("pack_threshold")
    @classmethod
    def _pack_threshold(cls, value: int) -> int:
        if not 0 <= value <= MAX_PACK_THRESHOLD:
            raise ValueError(f"must be between 0 (off) and {MAX_PACK_THRESHOLD} bytes")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("storage_type", "log_format", "http_implementation", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("default_bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        try:
            return validate_bucket_name(value)
        except InvalidBucketName as exc:
            raise ValueError(exc.message) from None

    @field_validator("s3_domain")
    @classmethod
    def _s3_domain(cls, value: str) -> str:
        value = value.strip().lower().strip(".")
        if value and (":" in value or "/" in value):
            raise ValueError("must be a domain name such as s3.example.com (no port or scheme)")
        return value

    @field_validator("s3_secret_key")
    @classmethod
    def _s3_secret_key(cls, value: SecretStr) -> SecretStr:
        # One S3 secret and its key id would let a short key be guessed offline, and
        # with it every other secret.
        if 0 < len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (or empty: a generated key)")
        return value

    @field_validator("port", "s3_port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 0 <= value <= 65535:
            raise ValueError("must be between 0 and 65535")
        return value

    @field_validator("lifecycle_protected_tags")
    @classmethod
    def _protected_tags(cls, value: str) -> str:
        from tfstorage.domain.lifecycle import parse_protected_tags

        parse_protected_tags(value)  # ValueError names the bad item
        return value

    @field_validator("retention_days", "workers", "lifecycle_max_deletions_per_run")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator(
        "gc_interval_seconds",
        "orphan_grace_seconds",
        "body_timeout_seconds",
        "s3_complete_keepalive_seconds",
        "header_timeout_seconds",
        "body_min_rate",
        "body_grace_seconds",
        "upload_session_ttl_seconds",
        "scrub_interval_seconds",
        "scrub_bytes_per_second",
        "lifecycle_interval_seconds",
    )
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must not be negative")
        return value

    @property
    def index_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.db').resolve()}"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; a bad value raises `ConfigError` naming it."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        variable = str(err["loc"][0]).upper() if err["loc"] else "configuration"
        message = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"invalid {variable}: {message}") from None
