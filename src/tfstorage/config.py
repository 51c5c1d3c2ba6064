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

    default_bucket: str = "tensorfleet"
    max_file_size: int = 100 * 1024**2
    retention_days: int = 30

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

    @field_validator("gc_interval_seconds", "orphan_grace_seconds")
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
