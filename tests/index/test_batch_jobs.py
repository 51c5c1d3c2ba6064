"""Batch commits, server-side copies and jobs in the index (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tfstorage.domain.jobs import FAILED, RUNNING, SUCCEEDED, JobProgress
from tfstorage.errors import NoSuchKey, QuotaExceeded
from tfstorage.index import ObjectIndex
from tfstorage.index.batch import BatchIndex, CopyItem
from tfstorage.index.jobs import JobIndex, NoSuchJob

from .builders import new_version, refcounts


def test_commit_versions_each_commits_the_good_and_reports_the_rest(index: ObjectIndex) -> None:
    index.create_bucket("small", quota_objects=2)
    news = [new_version("small", f"k{i}", f"data {i}".encode()) for i in range(3)]
    results = index.commit_versions_each(news)
    assert [type(r) for r in results[:2]] == [type(results[0])] * 2
    assert isinstance(results[2], QuotaExceeded)
    keys = [v.key for v in index.list_objects("small").objects]
    assert keys == ["k0", "k1"]
    assert news[2].blob_id not in refcounts(index)  # rolled back alone


def test_commit_versions_each_in_bulk_matches_one_by_one(index: ObjectIndex) -> None:
    index.create_bucket("bulk")
    index.commit_version(new_version("bulk", "old", b"shared"))
    index.commit_version(new_version("bulk", "k1", b"previous k1"))
    news = [
        new_version("bulk", "k0", b"shared", tags={"a": "1"}, metadata={"m": 1}),  # stored
        new_version("bulk", "k1", b"twice"),  # overwrites k1
        new_version("bulk", "k2", b"twice"),  # the same bytes in one batch
        new_version("bulk", "k3", b"alone", content_type="text/plain"),
    ]
    results = index.commit_versions_each(news)
    assert not any(isinstance(r, Exception) for r in results)
    versions = [r.version for r in results if not isinstance(r, Exception)]
    assert [v.key for v in versions] == ["k0", "k1", "k2", "k3"]
    assert versions[0].tags == {"a": "1"} and versions[0].metadata == {"m": 1}
    assert versions[3].content_type == "text/plain" and all(v.is_latest for v in versions)
    counts = refcounts(index)
    shared = index.resolve_latest("bulk", "old").blob_id
    assert versions[0].blob_id == shared and counts[shared] == 2
    assert versions[1].blob_id == versions[2].blob_id and counts[versions[1].blob_id] == 2
    dups = [r.duplicate_blob_id for r in results if not isinstance(r, Exception)]
    assert dups == [news[0].blob_id, None, news[2].blob_id, None]
    assert index.resolve_latest("bulk", "k1").file_id == versions[1].file_id
    assert len(index.list_versions("bulk", "k1")) == 2
    assert versions[0].seq < versions[1].seq < versions[2].seq < versions[3].seq


def test_copy_versions_share_blobs(index: ObjectIndex) -> None:
    index.create_bucket("src")
    index.create_bucket("dst", versioning=False)
    for i in range(3):
        index.commit_version(new_version("src", f"a/{i}", f"bytes {i}".encode(), tags={"t": "1"}))
    index.commit_version(new_version("dst", "b/0", b"old"))
    sources = index.list_objects("src", prefix="a/").objects
    batch = BatchIndex(index.engine)
    items = [CopyItem(v, "dst", "b/" + v.key[2:], overwrite=v.key != "a/1", created_by="c")
             for v in sources]  # fmt: skip
    index.commit_version(new_version("dst", "b/1", b"kept"))
    index.delete_version(sources[2].file_id)  # gone before the copy: reported
    results = batch.copy_versions(items)
    assert results[1] is None  # b/1 exists and overwrite is off
    assert isinstance(results[2], NoSuchKey)
    copied = results[0]
    assert copied is not None and not isinstance(copied, Exception)
    assert copied.version.blob_id == sources[0].blob_id and copied.version.tags == {"t": "1"}
    assert refcounts(index)[sources[0].blob_id] == 2
    assert len(index.list_versions("dst", "b/0")) == 1  # unversioned: the old one went
    # The copy keeps the bytes once the source is gone for good.
    index.delete_version(sources[0].file_id)
    assert refcounts(index)[sources[0].blob_id] == 1


def test_jobs_record_progress_and_finish(index: ObjectIndex) -> None:
    jobs = JobIndex(index.engine)
    job = jobs.create_job(kind="copy", owner="me", token_id="t1", params={"bucket": "x"})
    assert (job.state, job.done, job.total, job.finished_at) == (RUNNING, 0, None, None)
    progress = JobProgress(total=10, done=4, bytes=400)
    progress.fail("k", 404, "NoSuchKey", "gone")
    later = jobs.record_progress(job.job_id, progress)
    assert (later.done, later.total, later.failed, later.bytes) == (4, 10, 1, 400)
    assert later.errors == [{"key": "k", "status": 404, "code": "NoSuchKey", "error": "gone"}]
    assert later.updated_at >= job.updated_at
    done = jobs.record_progress(job.job_id, progress, state=SUCCEEDED)
    assert done.state == SUCCEEDED and done.finished_at is not None
    # A finished job never moves again.
    assert jobs.record_progress(job.job_id, JobProgress(), state=FAILED).state == SUCCEEDED
    with pytest.raises(NoSuchJob):
        jobs.get_job("nope")
    stale = later.as_seen_at(later.updated_at + timedelta(minutes=5), timedelta(seconds=60))
    assert stale.state == FAILED and stale.errors[-1]["code"] == "JobLost"
    assert jobs.purge_jobs(datetime.now(UTC) + timedelta(seconds=1)) == 1
