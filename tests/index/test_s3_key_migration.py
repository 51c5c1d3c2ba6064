"""Revision 0012: the S3 server key leaves the index (service/s3keys.py says why)."""

from __future__ import annotations

from sqlalchemy import select

from tfstorage.index import create_index_engine, migrate
from tfstorage.index.tables import server_secrets


def test_revision_0012_deletes_the_stored_s3_key_and_keeps_the_others(empty_url: str) -> None:
    engine = create_index_engine(empty_url)
    try:
        migrate(engine, "0011")
        with engine.begin() as conn:
            conn.execute(
                server_secrets.insert(),
                [
                    {"name": "s3-secret-key", "value": "ab" * 32},
                    {"name": "presign-signing-key", "value": "cd" * 32},
                ],
            )
        migrate(engine)
        with engine.connect() as conn:
            rows = dict(conn.execute(select(server_secrets.c.name, server_secrets.c.value)).all())
        assert rows == {"presign-signing-key": "cd" * 32}
    finally:
        engine.dispose()
