"""Parsing and judging If-Match / If-None-Match for writes."""

from __future__ import annotations

import pytest

from tfstorage.domain.conditions import ANY, WriteCondition, parse_condition
from tfstorage.errors import InvalidArgument, PreconditionFailed

ETAG = "9e107d9d372bb6826bd81d3542a419d6"
OTHER = "e4d909c290d0fb1ca068ffaddf22cbd0"


def test_no_header_no_condition() -> None:
    assert parse_condition(None, None) is None


@pytest.mark.parametrize(
    "header",
    [ETAG, f'"{ETAG}"', f' "{OTHER}" , {ETAG} ', ETAG.upper(), f'W/"{OTHER}", "{ETAG}"'],
)
def test_if_match_accepts_quoted_unquoted_and_lists(header: str) -> None:
    condition = parse_condition(header, None)
    assert condition is not None
    condition.check(ETAG)
    with pytest.raises(PreconditionFailed):
        condition.check("0" * 32)
    with pytest.raises(PreconditionFailed):  # a missing key fails If-Match (RFC 9110)
        condition.check(None)


def test_if_match_compares_strongly_and_star_needs_a_current_version() -> None:
    weak = parse_condition(f'W/"{ETAG}"', None)
    assert weak is not None
    with pytest.raises(PreconditionFailed):
        weak.check(ETAG)
    star = parse_condition("*", None)
    assert star == WriteCondition(if_match=ANY)
    star.check(ETAG)
    with pytest.raises(PreconditionFailed):
        star.check(None)


def test_if_none_match() -> None:
    create = parse_condition(None, "*")
    assert create == WriteCondition(if_none_match=ANY)
    create.check(None)
    with pytest.raises(PreconditionFailed):
        create.check(ETAG)
    listed = parse_condition(None, f'W/"{ETAG}"')  # weak comparison for If-None-Match
    assert listed is not None
    listed.check(None)
    listed.check(OTHER)
    with pytest.raises(PreconditionFailed):
        listed.check(ETAG)


def test_multipart_style_etags_are_tokens_that_never_match_an_md5() -> None:
    condition = parse_condition(f'"{ETAG}-3"', None)
    assert condition is not None
    with pytest.raises(PreconditionFailed):
        condition.check(ETAG)


@pytest.mark.parametrize(
    "header", ["", " ", "*, " + ETAG, f"{ETAG},", f'"{ETAG}', f'{ETAG}"', '""', "a b", "é"]
)
def test_malformed_headers_are_refused(header: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_condition(header, None)
    with pytest.raises(InvalidArgument):
        parse_condition(None, header)


def test_too_many_etags() -> None:
    with pytest.raises(InvalidArgument):
        parse_condition(", ".join([ETAG] * 101), None)
