"""The pure rules of parts: S3's multipart ETag, part locations, completion identity."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from tfstorage.domain.conditions import WriteCondition
from tfstorage.domain.uploads import PartLayout, UploadPart, assembled_layout, parts_digest
from tfstorage.errors import PreconditionFailed


def _part(number: int, data: bytes) -> UploadPart:
    return UploadPart(
        part_number=number,
        size=len(data),
        md5=hashlib.md5(data).hexdigest(),
        sha256=hashlib.sha256(data).hexdigest(),
        handle=f"h{number}",
        stored_at=datetime.now(UTC),
    )


def test_assembled_layout_is_s3s_etag_and_the_part_sizes() -> None:
    # The ETag AWS documents for two parts: MD5 of the concatenated binary MD5s, "-2".
    a, b = b"a" * 10, b"bb"
    joined = hashlib.md5(a).digest() + hashlib.md5(b).digest()
    layout = assembled_layout([_part(1, a), _part(3, b)])
    assert layout == PartLayout(f"{hashlib.md5(joined).hexdigest()}-2", (10, 2))


def test_locate_counts_parts_from_one() -> None:
    layout = PartLayout("x-3", (5, 5, 2))
    assert [layout.locate(n) for n in (0, 1, 2, 3, 4)] == [None, (0, 5), (5, 5), (10, 2), None]


def test_parts_digest_ignores_quotes_and_case_only() -> None:
    same = parts_digest([(1, '"ABC"'), (2, "def")])
    assert same == parts_digest([(1, "abc"), (2, '"DEF"')])
    assert same != parts_digest([(1, "abc")])
    assert same != parts_digest([(1, "abc"), (3, "def")])


def test_a_condition_matches_either_etag_of_an_assembled_version() -> None:
    for etag in ("0123", "abc-2"):
        WriteCondition(if_match=frozenset({etag})).check("0123", "abc-2")
        with pytest.raises(PreconditionFailed):
            WriteCondition(if_none_match=frozenset({etag})).check("0123", "abc-2")
    with pytest.raises(PreconditionFailed):
        WriteCondition(if_match=frozenset({"abc-2"})).check("0123")
