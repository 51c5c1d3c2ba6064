"""Settings to blob stores: STORAGE_TYPE=s3|minio, S3_* and REPLICA_* variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.blobs.contract import chunked, read_all
from tests.s3.fixtures import SeaweedFS, object_keys, s3_settings_overrides
from tfstorage.blobs import new_blob_id
from tfstorage.blobs.local import LocalBlobStore
from tfstorage.blobs.packs import PackedBlobStore
from tfstorage.blobs.replicated import ReplicatedBlobStore
from tfstorage.blobs.s3 import S3BlobStore
from tfstorage.config import Settings, load_settings
from tfstorage.domain.sizes import parse_size
from tfstorage.errors import ConfigError
from tfstorage.service.backends import build_blob_store, replica_s3_config, s3_config

MiB = 1024 * 1024


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(data_dir=tmp_path, **overrides)


def test_minio_variables_make_the_endpoint(tmp_path: Path) -> None:
    config = s3_config(settings(tmp_path, storage_type="MinIO", minio_endpoint="minio:9000"))
    assert (config.endpoint_url, config.bucket, config.prefix) == (
        "http://minio:9000",
        "tensorfleet",
        "",
    )
    assert (config.access_key, config.secret_key, config.region) == (
        "minioadmin",
        "minioadmin",
        "us-east-1",
    )
    secure = s3_config(settings(tmp_path, minio_endpoint="engine:443", minio_secure=True))
    assert secure.endpoint_url == "https://engine:443"


def test_s3_variables_win(tmp_path: Path) -> None:
    config = s3_config(
        settings(
            tmp_path,
            storage_type="s3",
            minio_endpoint="ignored:9000",
            s3_endpoint_url="https://s3.eu-west-1.amazonaws.com/",
            s3_region="eu-west-1",
            s3_bucket="team-blobs",
            s3_prefix="/prod/storage",
            s3_part_size="64MB",
            s3_timeout_seconds=3,
            s3_max_retries=0,
            default_bucket="legacy",
        )
    )
    assert config.endpoint_url == "https://s3.eu-west-1.amazonaws.com"
    assert (config.region, config.bucket, config.prefix) == (
        "eu-west-1",
        "team-blobs",
        "prod/storage/",
    )
    assert (config.part_size, config.timeout_seconds, config.max_retries) == (64 * MiB, 3.0, 0)
    assert config.blobs_prefix == "prod/storage/blobs/"


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"s3_part_size": "1MB"}, "S3_PART_SIZE"),
        ({"s3_part_size": "lots"}, "S3_PART_SIZE"),
        ({"s3_timeout_seconds": 0}, "S3_TIMEOUT_SECONDS"),
        ({"s3_max_retries": -1}, "S3_MAX_RETRIES"),
        ({"s3_endpoint_url": "seaweedfs:8333"}, "S3_ENDPOINT_URL"),
        ({"s3_bucket": "Not_A_Bucket"}, "S3_BUCKET"),
        ({"replica_storage_type": "tape"}, "REPLICA_STORAGE_TYPE"),
    ],
)
def test_bad_values_name_their_variable(
    tmp_path: Path, overrides: dict[str, Any], variable: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        settings(tmp_path, **overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        {"s3_prefix": "../escape"},
        {"s3_prefix": "with space"},
        {"minio_endpoint": "http://minio:9000"},
        {"s3_endpoint_url": "http://user:secret@host:9000"},
    ],
)
def test_bad_s3_configuration_is_refused_without_echoing_it(
    tmp_path: Path, overrides: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError) as raised:
        build_blob_store(settings(tmp_path, storage_type="s3", **overrides))
    assert "secret" not in str(raised.value)


def test_replicas(tmp_path: Path) -> None:
    store = build_blob_store(settings(tmp_path, replica_storage_type="local"))
    assert isinstance(store, ReplicatedBlobStore)
    # The primary packs small blobs (the default PACK_THRESHOLD); the replica never does.
    assert isinstance(store.primary, PackedBlobStore) and type(store.replica) is LocalBlobStore
    assert store.replica.root == tmp_path / "replica"

    s3_replica = settings(
        tmp_path,
        replica_storage_type="s3",
        replica_s3_endpoint_url="http://replica:8333",
        minio_access_key="primary-key",
    )
    config = replica_s3_config(s3_replica)
    assert (config.endpoint_url, config.access_key, config.bucket) == (
        "http://replica:8333",
        "primary-key",
        "tensorfleet",
    )
    with pytest.raises(ConfigError, match="REPLICA_S3_ENDPOINT_URL"):
        build_blob_store(settings(tmp_path, replica_storage_type="s3"))
    with pytest.raises(ConfigError, match="REPLICA_DATA_DIR"):
        build_blob_store(
            settings(tmp_path, replica_storage_type="local", replica_data_dir=tmp_path / "blobs")
        )
    same_place = {
        "storage_type": "s3",
        "s3_endpoint_url": "http://engine:8333",
        "replica_storage_type": "s3",
        "replica_s3_endpoint_url": "http://engine:8333",
    }
    with pytest.raises(ConfigError, match="overlaps"):
        build_blob_store(settings(tmp_path, **same_place))
    store = build_blob_store(settings(tmp_path, **same_place, replica_s3_bucket="other-bucket"))
    assert isinstance(store, ReplicatedBlobStore) and isinstance(store.replica, S3BlobStore)


@pytest.mark.anyio
async def test_settings_overrides_build_a_working_store(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_prefix: str
) -> None:
    overrides = s3_settings_overrides(seaweedfs, seaweedfs.bucket, prefix=s3_prefix)
    store = build_blob_store(Settings(data_dir=tmp_path, **overrides))
    assert isinstance(store, S3BlobStore)
    try:
        await store.check()
        blob_id = new_blob_id()
        await store.put(blob_id, chunked(b"through settings"))
        assert await read_all(store, blob_id) == b"through settings"
        assert object_keys(seaweedfs, s3_prefix) == [f"{s3_prefix}blobs/{blob_id[:2]}/{blob_id}"]
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("max_file_size", "part_size", "expected"),
    [
        ("2GB", None, 6 * MiB),  # the default: 6 MiB parts
        ("100GB", None, 11 * MiB),  # 10,000 parts of 6 MiB would stop at 58 GiB
        ("5TB", None, 525 * MiB),
        ("1GB", "64MB", 64 * MiB),  # S3_PART_SIZE is a floor, never lowered
    ],
)
def test_parts_are_small_unless_max_file_size_needs_them_larger(
    tmp_path: Path, max_file_size: str, part_size: str | None, expected: int
) -> None:
    overrides = {"storage_type": "s3", "s3_endpoint_url": "http://engine:8333"}
    if part_size is not None:
        overrides["s3_part_size"] = part_size
    config = s3_config(settings(tmp_path, max_file_size=max_file_size, **overrides))
    assert config.part_size == expected
    assert config.part_size * 10_000 >= parse_size(max_file_size)
