"""Free text the index keeps: stored by every backend as sent, or refused by all."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfstorage.domain.text import check_storable, check_storable_tree, unstorable_reason
from tfstorage.errors import InvalidArgument


@given(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00")))
def test_text_without_nul_or_lone_surrogates_is_kept(text: str) -> None:
    assert unstorable_reason(text) is None
    assert check_storable(text, "name") == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [("\x00", "NUL"), ("a\x00b", "NUL"), ("\ud800", "surrogate"), ("x\udfff", "surrogate")],
)
def test_nul_and_lone_surrogates_are_refused_naming_the_field(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_storable(text, "the description")
    assert info.value.message.startswith("the description ") and reason in info.value.message
    assert info.value.status == 400 and info.value.code == "InvalidArgument"


def test_a_tree_is_checked_in_keys_and_values_at_any_depth() -> None:
    check_storable_tree({"a": [1, {"b": "c"}], "d": None}, "rules")
    for bad in ({"a\x00": 1}, [[[{"k": "\x00"}]]], ["\ud800"]):
        with pytest.raises(InvalidArgument, match="rules"):
            check_storable_tree(bad, "rules")
    deep: object = "\x00"
    for _ in range(10_000):  # no recursion: hostile nesting cannot exhaust the stack
        deep = [deep]
    with pytest.raises(InvalidArgument):
        check_storable_tree(deep, "rules")
