"""Revision 0014 on a populated index, SQLite and PostgreSQL: buckets start with no
configuration, a version locked before it keeps its date with no mode (COMPLIANCE's
rule), and the versions table keeps SQLite's AUTOINCREMENT."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, text

from tfstorage.index import create_index_engine, migrate
from tfstorage.index.bucket_config import BucketConfigIndex
from tfstorage.index.lifecycle import LifecycleIndex
from tfstorage.index.tables import blobs, buckets, object_keys, versions

pytestmark = pytest.mark.timeout(60)

UNTIL = datetime(2030, 6, 1, tzinfo=UTC)


def test_revision_0014_keeps_existing_buckets_and_locks(empty_url: str) -> None:
    engine = create_index_engine(empty_url)
    now = datetime.now(UTC)
    try:
        migrate(engine, "0012")
        with engine.begin() as conn:
            bid = conn.execute(
                insert(buckets)
                .values(name="old", created_at=now, versioning=True, description="")
                .returning(buckets.c.id)
            ).scalar_one()
            conn.execute(
                insert(blobs).values(
                    blob_id="b" * 32, sha256="a" * 64, md5="c" * 32, size=1, refcount=1,
                    created_at=now,
                )
            )  # fmt: skip
            seq = conn.execute(
                insert(versions)
                .values(
                    file_id="f" * 32, bucket_id=bid, key="k", blob_id="b" * 32, size=1,
                    etag="c" * 32, sha256="a" * 64, content_type="text/plain",
                    user_metadata={}, created_at=now, created_by="t", retain_until=UNTIL,
                )
                .returning(versions.c.id)
            ).scalar_one()  # fmt: skip
            conn.execute(insert(object_keys).values(bucket_id=bid, key="k", current_id=seq))
        migrate(engine)
        config = BucketConfigIndex(engine)
        assert config.get_tags("old") is None
        assert config.get_cors("old") is None
        assert config.get_object_lock("old") is None
        retention = LifecycleIndex(engine).get_retention("f" * 32)
        assert (retention.retain_until, retention.mode, retention.locked) == (UNTIL, None, True)
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                ddl = conn.execute(
                    text("SELECT sql FROM sqlite_master WHERE name = 'versions'")
                ).scalar_one()
            assert "AUTOINCREMENT" in ddl
    finally:
        engine.dispose()
