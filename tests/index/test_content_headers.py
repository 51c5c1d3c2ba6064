"""Stored content headers (revision 0017) on SQLite and PostgreSQL: kept with the
version through every path that makes one (commit, bulk commit, copy, restore, an
upload session), and absent when none was given."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from tfstorage.domain.records import CommitResult, NewVersion
from tfstorage.domain.uploads import UploadSession
from tfstorage.index import ObjectIndex
from tfstorage.index.batch import BatchIndex, CopyItem
from tfstorage.index.tables import versions
from tfstorage.index.uploads import UploadIndex

from .builders import new_version

pytestmark = pytest.mark.timeout(60)

HEADERS = {
    "Cache-Control": "public, max-age=3600",
    "Content-Disposition": 'attachment; filename="weights.bin"',
    "Content-Encoding": "gzip",
    "Content-Language": "de-DE",
    "Expires": "Wed, 21 Oct 2037 07:28:00 GMT",
}


@pytest.fixture
def models(index: ObjectIndex) -> ObjectIndex:
    index.create_bucket("models")
    return index


def with_headers(key: str, data: bytes = b"data", headers: dict[str, str] = HEADERS) -> NewVersion:
    return dataclasses.replace(new_version("models", key, data), content_headers=dict(headers))


def test_commit_keeps_them_and_reads_give_them_back(models: ObjectIndex) -> None:
    made = models.commit_version(with_headers("a.bin")).version
    assert made.content_headers == HEADERS
    assert models.get_version(made.file_id).content_headers == HEADERS
    assert models.resolve_latest("models", "a.bin").content_headers == HEADERS
    [listed] = models.list_versions("models", "a.bin")
    assert listed.content_headers == HEADERS


def test_none_given_is_stored_as_null(models: ObjectIndex) -> None:
    made = models.commit_version(new_version("models", "plain.bin")).version
    assert made.content_headers == {}
    with models.engine.connect() as conn:
        stored = conn.execute(
            select(versions.c.content_headers).where(versions.c.file_id == made.file_id)
        ).scalar_one()
    assert stored is None


def test_bulk_commit_keeps_each_ones_own(models: ObjectIndex) -> None:
    news = [
        with_headers("x.bin", b"x", {"Cache-Control": "no-store"}),
        with_headers("y.bin", b"y", {"Content-Language": "fr"}),
        new_version("models", "z.bin", b"z"),
    ]
    results = models.commit_versions_each(news)
    got = [r.version.content_headers for r in results if isinstance(r, CommitResult)]
    assert got == [{"Cache-Control": "no-store"}, {"Content-Language": "fr"}, {}]


def test_copy_keeps_the_sources_or_takes_the_given(models: ObjectIndex) -> None:
    source = models.commit_version(with_headers("src.bin")).version
    batch = BatchIndex(models.engine)
    kept, replaced = batch.copy_versions(
        [
            CopyItem(source, "models", "copy.bin", True, "tester"),
            CopyItem(source, "models", "new.bin", True, "tester", content_headers={"Expires": "0"}),
        ]
    )
    assert isinstance(kept, CommitResult) and isinstance(replaced, CommitResult)
    assert kept.version.content_headers == HEADERS
    assert replaced.version.content_headers == {"Expires": "0"}
    assert models.resolve_latest("models", "new.bin").content_headers == {"Expires": "0"}


def test_restored_version_keeps_them(models: ObjectIndex) -> None:
    old = models.commit_version(with_headers("r.bin", b"one")).version
    models.commit_version(new_version("models", "r.bin", b"two"))
    restored = models.restore_version(old.file_id, "tester").version
    assert restored.file_id != old.file_id
    assert restored.content_headers == HEADERS


def test_upload_session_keeps_them(models: ObjectIndex) -> None:
    now = datetime.now(UTC)
    session = UploadSession(
        upload_id=uuid.uuid4().hex,
        bucket="models",
        key="big.bin",
        blob_id=uuid.uuid4().hex,
        backend_upload=uuid.uuid4().hex,
        content_type=None,
        metadata={},
        tags={},
        declared_size=None,
        declared_sha256=None,
        part_size=None,
        created_by="tester",
        created_at=now,
        touched_at=now,
        content_headers={"Content-Disposition": "inline"},
    )
    uploads = UploadIndex(models.engine)
    uploads.create_session(session)
    assert uploads.get_session(session.upload_id).content_headers == {
        "Content-Disposition": "inline"
    }
    bare = dataclasses.replace(session, upload_id=uuid.uuid4().hex, content_headers={})
    uploads.create_session(bare)
    assert uploads.get_session(bare.upload_id).content_headers == {}
