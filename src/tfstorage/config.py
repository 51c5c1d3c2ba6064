"""Settings from environment variables (the original service's, plus what scale needs)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tfstorage.domain.names import validate_bucket_name
from tfstorage.domain.sizes import parse_size
from tfstorage.errors import ConfigError, InvalidBucketName


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", validate_default=True
    )

    host: str = "127.0.0.1"
    port: int = 8083
    workers: int = 1
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    cors_origins: str = ""  # comma-separated origins; "*" allows any (without credentials)

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
    s3_part_size: int = 16 * 1024**2  # multipart part size, with units (5MB .. 5GB)
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

    @field_validator("s3_bucket", "replica_s3_bucket")
    @classmethod
    def _physical_bucket(cls, value: str) -> str:
        try:
            return validate_bucket_name(value) if value else value
        except InvalidBucketName as exc:
            raise ValueError(exc.message) from None

    @field_validator("replica_storage_type", mode="before")
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
    # cannot hold an upload, its temp file and its memory forever).
    body_timeout_seconds: float = 60.0

    gc_interval_seconds: float = 3600.0
    orphan_grace_seconds: float = 3600.0
    max_listing_limit: int = 1000

    @field_validator("max_file_size", mode="before")
    @classmethod
    def _parse_size(cls, value: object) -> object:
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("storage_type", mode="before")
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

    @field_validator("port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 0 <= value <= 65535:
            raise ValueError("must be between 0 and 65535")
        return value

    @field_validator("retention_days", "workers")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("gc_interval_seconds", "orphan_grace_seconds", "body_timeout_seconds")
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
