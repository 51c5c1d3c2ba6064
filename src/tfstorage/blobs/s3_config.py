"""Where and how to reach an S3 engine: settings only, so that choosing a backend does not
import obstore (a deployment on local disk never loads it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

MiB: Final = 1024 * 1024
MIN_PART_SIZE: Final = 5 * MiB  # S3's floor for every part but the last
MAX_PART_SIZE: Final = 5 * 1024 * MiB
_PREFIX_RE: Final = re.compile(r"([A-Za-z0-9._-]+/)*")


@dataclass(frozen=True, slots=True)
class S3Config:
    """Where and how to reach the engine. `prefix` is "" or ends with "/"."""

    endpoint_url: str  # scheme://host[:port]; path-style requests, any S3 engine
    bucket: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    prefix: str = ""
    part_size: int = 16 * MiB
    timeout_seconds: float = 10.0  # connect, and idle time waiting for bytes
    max_retries: int = 3
    upload_concurrency: int = 2  # parts in flight per upload: memory is (this + 1) parts

    def __post_init__(self) -> None:
        url = urlsplit(self.endpoint_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("the S3 endpoint must be an http:// or https:// URL")
        if url.username or url.password or url.query or url.path.strip("/"):
            raise ValueError("the S3 endpoint URL must be scheme://host[:port] only")
        if not _PREFIX_RE.fullmatch(self.prefix) or any(
            part in (".", "..") for part in self.prefix.split("/")
        ):
            raise ValueError("the S3 prefix must be '/'-separated segments of [A-Za-z0-9._-]")
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise ValueError("the S3 part size must be between 5 MiB and 5 GiB")
        if self.timeout_seconds <= 0 or self.max_retries < 0 or self.upload_concurrency < 1:
            raise ValueError("S3 timeout, retries and concurrency must be positive")

    @property
    def blobs_prefix(self) -> str:
        return f"{self.prefix}blobs/"


def normalize_prefix(prefix: str) -> str:
    """`team-a` and `team-a/` both mean objects under `team-a/`."""
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""
