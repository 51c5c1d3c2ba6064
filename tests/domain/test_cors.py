"""CORS rules (domain/cors.py): S3's wildcard matching and rule order, and the checks a
CORSConfiguration must pass; object lock values (domain/object_lock.py)."""

from __future__ import annotations

import fnmatch
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfstorage.domain.cors import CorsConfig, CorsRule, validate_rules, wildcard_match
from tfstorage.domain.object_lock import DefaultRetention, VersionLock
from tfstorage.errors import InvalidArgument, InvalidRequest

_TEXT = st.text(alphabet="ab.:/-", max_size=8)


@given(head=_TEXT, tail=_TEXT, value=st.text(alphabet="ab.:/-", max_size=16))
def test_one_wildcard_matches_as_a_glob_would(head: str, tail: str, value: str) -> None:
    pattern = f"{head}*{tail}"
    assert wildcard_match(pattern, value) == fnmatch.fnmatchcase(value, pattern)


@given(value=_TEXT, other=_TEXT)
def test_without_a_wildcard_only_the_value_itself_matches(value: str, other: str) -> None:
    assert wildcard_match(value, other) == (value == other)


def test_the_first_rule_allowing_origin_method_and_headers_wins() -> None:
    first = CorsRule(("https://*.example",), ("GET",), ("x-amz-*",))
    second = CorsRule(("*",), ("GET", "PUT"), ("*",))
    config = CorsConfig((first, second))
    assert config.matching("https://a.example", "GET", ["X-Amz-Date"]) is first
    assert config.matching("https://a.example", "GET", ["content-type"]) is second
    assert config.matching("https://a.example", "PUT") is second
    assert config.matching("https://a.example", "DELETE") is None
    assert CorsConfig((first,)).matching("http://a.example", "GET") is None


@pytest.mark.parametrize(
    "rule",
    [
        CorsRule(("*",), ("PATCH",)),
        CorsRule(("*.*",), ("GET",)),
        CorsRule(("*",), ("GET",), ("a*b*",)),
        CorsRule((), ("GET",)),
        CorsRule(("*",), ()),
        CorsRule(("*",), ("GET",), max_age_seconds=-1),
    ],
)
def test_invalid_rules_are_refused(rule: CorsRule) -> None:
    with pytest.raises(InvalidRequest):
        validate_rules([rule])


def test_rule_count_is_bounded() -> None:
    with pytest.raises(InvalidRequest):
        validate_rules([])
    with pytest.raises(InvalidRequest):
        validate_rules([CorsRule(("*",), ("GET",))] * 101)
    assert len(validate_rules([CorsRule(("*",), ("GET",))] * 100).rules) == 100


def test_default_retention_and_version_lock_values() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    assert DefaultRetention("GOVERNANCE", days=3).until(created) == created + timedelta(days=3)
    assert DefaultRetention("COMPLIANCE", years=2).until(created) == created + timedelta(days=730)
    for bad in (
        lambda: DefaultRetention("governance", days=1),
        lambda: DefaultRetention("GOVERNANCE", days=1, years=1),
        lambda: DefaultRetention("GOVERNANCE"),
        lambda: DefaultRetention("GOVERNANCE", days=0),
        lambda: VersionLock("GOVERNANCE"),  # a mode needs its date
        lambda: VersionLock(None, created),
    ):
        with pytest.raises(InvalidArgument):
            bad()
    lock = VersionLock("COMPLIANCE", created, legal_hold=True)
    assert VersionLock.from_json(lock.to_json()) == lock
    assert VersionLock(legal_hold=False).empty is False and VersionLock().empty is True
