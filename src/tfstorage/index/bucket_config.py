"""A bucket's S3 configuration in the index: its tag set, CORS rules and object lock.

Each lives on the bucket row (revision 0014), so it goes with the bucket; None is
"not configured". Object lock needs versioning and, once on, stays on (S3's rules).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select, update

from tfstorage.domain.cors import CorsConfig, CorsRule
from tfstorage.domain.object_lock import ObjectLockConfig
from tfstorage.errors import InvalidBucketState, NoSuchBucket
from tfstorage.index.tables import buckets
from tfstorage.index.transactions import IndexStore


class BucketConfigIndex(IndexStore):
    # tags ------------------------------------------------------------------------
    def get_tags(self, bucket: str) -> dict[str, str] | None:
        stored = self._read(lambda conn: _column(conn, bucket, "tag_set"))
        return None if stored is None else dict(stored)

    def set_tags(self, bucket: str, tag_set: Mapping[str, str] | None) -> None:
        value = None if tag_set is None else dict(tag_set)
        self._write(lambda conn: _store(conn, bucket, tag_set=value))

    # CORS ------------------------------------------------------------------------
    def get_cors(self, bucket: str) -> CorsConfig | None:
        stored = self._read(lambda conn: _column(conn, bucket, "cors_rules"))
        if stored is None:
            return None
        return CorsConfig(tuple(CorsRule.from_json(rule) for rule in stored))

    def set_cors(self, bucket: str, config: CorsConfig | None) -> None:
        value = None if config is None else [rule.to_json() for rule in config.rules]
        self._write(lambda conn: _store(conn, bucket, cors_rules=value))

    # object lock -----------------------------------------------------------------
    def get_object_lock(self, bucket: str) -> ObjectLockConfig | None:
        return ObjectLockConfig.from_json(
            self._read(lambda conn: _column(conn, bucket, "object_lock"))
        )

    def set_object_lock(self, bucket: str, config: ObjectLockConfig) -> None:
        def run(conn: Connection) -> None:
            row = conn.execute(
                select(buckets.c.versioning).where(buckets.c.name == bucket).with_for_update()
            ).first()
            if row is None:
                raise NoSuchBucket(bucket)
            if not row.versioning:
                raise InvalidBucketState(
                    "Object Lock configuration cannot be enabled on a bucket without versioning"
                )
            _store(conn, bucket, object_lock=config.to_json())

        self._write(run)


def _column(conn: Connection, bucket: str, name: str) -> Any:
    row = conn.execute(select(buckets.c[name]).where(buckets.c.name == bucket)).first()
    if row is None:
        raise NoSuchBucket(bucket)
    return row[0]


def _store(conn: Connection, bucket: str, **values: Any) -> None:
    if conn.execute(update(buckets).where(buckets.c.name == bucket).values(**values)).rowcount == 0:
        raise NoSuchBucket(bucket)
