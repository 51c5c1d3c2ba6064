"""User metadata (bounded JSON objects) and tags."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tfstorage.domain.metadata import (
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_TAG_KEY,
    MAX_TAG_VALUE,
    MAX_TAGS,
    parse_metadata,
    parse_tag,
    parse_tags,
    validate_metadata,
)
from tfstorage.errors import InvalidMetadata, InvalidTag, MetadataTooLarge

# Strings every index backend stores: any code point but lone surrogates and NUL.
json_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    json_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=30,
)
json_objects = st.dictionaries(json_text, json_values, max_size=6)


def compact_size(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def container_depth(value: object) -> int:
    """Containers on the deepest path (a scalar adds nothing); recursion is fine here
    because the generated values are shallow."""
    if isinstance(value, dict):
        return 1 + max((container_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((container_depth(v) for v in value), default=0)
    return 0


def nested(depth: int, *, leaf: object, kinds: list[str] | None = None) -> object:
    """`depth` containers inside each other, built without recursion."""
    value = leaf
    for level in range(depth):
        kind = kinds[level % len(kinds)] if kinds else "dict"
        value = {"k": value, "s": 1} if kind == "dict" else [1, value]
    return value


@given(json_objects)
def test_objects_within_limits_round_trip(value: dict[str, Any]) -> None:
    text = json.dumps(value)
    small = len(text.encode()) <= MAX_METADATA_BYTES and compact_size(value) <= MAX_METADATA_BYTES
    depth = container_depth(value)
    if small and depth < MAX_METADATA_DEPTH:
        assert parse_metadata(text) == value
        assert validate_metadata(value) == value  # -0.0 comes back as 0.0, equal
    elif not small or depth > MAX_METADATA_DEPTH:
        with pytest.raises(InvalidMetadata):
            parse_metadata(text)


@given(st.text(max_size=200) | json_values.map(json.dumps))
@example("[]")
@example("null")
@example('"x"')
@example("{")
@example('{"a":1} x')
def test_parse_metadata_returns_a_dict_or_raises_invalid_metadata(text: str) -> None:
    try:
        value = parse_metadata(text)
    except InvalidMetadata as exc:
        assert exc.status == 400
        return
    assert isinstance(value, dict)
    if text.strip():
        assert value == json.loads(text)
    else:
        assert value == {}


@pytest.mark.parametrize("text", [None, "", "  ", "\n"])
def test_empty_metadata_is_no_metadata(text: str | None) -> None:
    assert parse_metadata(text) == {}


@pytest.mark.parametrize("value", [[], [1], "x", 1, None, True])
def test_metadata_must_be_an_object(value: object) -> None:
    with pytest.raises(InvalidMetadata) as info:
        validate_metadata(value)
    assert type(info.value) is InvalidMetadata
    with pytest.raises(InvalidMetadata):
        parse_metadata(json.dumps(value))


@given(st.integers(2, 45), st.lists(st.sampled_from(["dict", "list"]), min_size=1, max_size=5))
def test_depth_limit_counts_nested_containers(depth: int, kinds: list[str]) -> None:
    # An empty innermost container: the boundary does not depend on whether a scalar
    # leaf counts as a level.
    value = {"top": nested(depth - 2, leaf={}, kinds=kinds)}
    assert container_depth(value) == depth
    if depth <= MAX_METADATA_DEPTH:
        assert validate_metadata(value) == value
        assert parse_metadata(json.dumps(value)) == value
    else:
        with pytest.raises(InvalidMetadata) as info:
            validate_metadata(value)
        assert type(info.value) is InvalidMetadata
        with pytest.raises(InvalidMetadata):
            parse_metadata(json.dumps(value))


@pytest.mark.parametrize("kinds", [["dict"], ["list"], ["dict", "list"]])
def test_hostile_nesting_is_refused_without_recursion_error(kinds: list[str]) -> None:
    value = {"top": nested(10_000, leaf=1, kinds=kinds)}
    with pytest.raises(InvalidMetadata) as info:
        validate_metadata(value)
    assert type(info.value) is InvalidMetadata  # the depth check, before json.dumps
    opening = "".join('{"k":' if kinds[i % len(kinds)] == "dict" else "[" for i in range(10_000))
    closing = "".join("}" if kinds[i % len(kinds)] == "dict" else "]" for i in range(10_000))
    with pytest.raises(MetadataTooLarge):  # refused on size, before json.loads sees it
        parse_metadata('{"top":' + opening + "1" + closing[::-1] + "}")


@pytest.mark.parametrize(
    "text",
    ["[" * 4000 + "]" * 4000, '{"a":' + "[" * 4000 + "]" * 4000 + "}", "[" * 8000, "{" * 8000],
)
def test_deep_json_under_the_size_limit_is_invalid_metadata(text: str) -> None:
    assert len(text) <= MAX_METADATA_BYTES
    with pytest.raises(InvalidMetadata):
        parse_metadata(text)


def test_size_limit_is_bytes_of_utf8() -> None:
    fits = {"k": "x" * (MAX_METADATA_BYTES - len('{"k":""}'))}
    assert compact_size(fits) == MAX_METADATA_BYTES
    assert validate_metadata(fits) == fits
    assert parse_metadata(json.dumps(fits, separators=(",", ":"))) == fits
    over = {"k": "x" * (MAX_METADATA_BYTES - len('{"k":""}') + 1)}
    with pytest.raises(MetadataTooLarge):
        validate_metadata(over)
    # Multi-byte characters count as their UTF-8 length, in the text and in the value.
    wide = {"k": "é" * (MAX_METADATA_BYTES // 2)}
    with pytest.raises(MetadataTooLarge):
        validate_metadata(wide)
    with pytest.raises(MetadataTooLarge):
        parse_metadata(json.dumps(wide, ensure_ascii=False))
    # Escaped text over the limit is refused even though the value would fit.
    with pytest.raises(MetadataTooLarge):
        parse_metadata(json.dumps({"k": "é" * 2000}))


def test_lone_surrogate_in_metadata_is_invalid_metadata() -> None:
    with pytest.raises(InvalidMetadata):
        parse_metadata('{"a": "\\ud800"}')


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "\\u0000"}',
        '{"a\\u0000": 1}',
        '{"a": ["x", {"b": "y\\u0000z"}]}',
        '{"a": {"\\u0000": null}}',
    ],
)
def test_nul_anywhere_in_metadata_is_invalid_metadata(text: str) -> None:
    # PostgreSQL's jsonb cannot hold U+0000; SQLite could, so both refuse it.
    with pytest.raises(InvalidMetadata) as info:
        parse_metadata(text)
    assert type(info.value) is InvalidMetadata
    assert "NUL" in info.value.message and "metadata" in info.value.message


def test_negative_zero_is_stored_as_zero() -> None:
    # PostgreSQL's numeric has no -0; SQLite would keep it. Both store 0.0.
    value = parse_metadata('{"a": -0.0, "b": [1, {"c": -0.0}], "d": 0, "e": -0}')
    assert value == {"a": 0.0, "b": [1, {"c": 0.0}], "d": 0, "e": 0}
    assert json.dumps(value) == '{"a": 0.0, "b": [1, {"c": 0.0}], "d": 0, "e": 0}'
    untouched = {"a": 1.5}
    assert validate_metadata(untouched) is untouched


@pytest.mark.parametrize("text", ['{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}'])
def test_non_finite_numbers_are_invalid_metadata(text: str) -> None:
    try:
        value = parse_metadata(text)
    except InvalidMetadata:
        return
    assert not math.isfinite(value["a"])
    raise AssertionError(f"{text} was accepted as {value!r}")


# Tags ----------------------------------------------------------------------------------

tag_keys = st.text(
    st.sampled_from("abcXYZ019_.:/+-@"), min_size=1, max_size=MAX_TAG_KEY
)  # no spaces: parse_tag strips them from the ends
tag_values = st.text(
    st.characters(exclude_categories=["Cc", "Cs"], exclude_characters=",&"), max_size=40
).map(str.strip)
tag_maps = st.dictionaries(tag_keys, tag_values, max_size=MAX_TAGS)


@given(tag_maps)
def test_tags_round_trip_in_every_form(tags: dict[str, str]) -> None:
    as_text = ",".join(f"{k}={v}" for k, v in tags.items())
    assert parse_tags(as_text) == tags
    assert parse_tags(as_text.replace(",", "&")) == tags
    assert parse_tags([f"{k}={v}" for k, v in tags.items()]) == tags
    assert parse_tags(dict(tags)) == tags
    assert parse_tags(json.dumps(tags)) == tags
    assert parse_tags(json.dumps([f"{k}={v}" for k, v in tags.items()])) == tags


@given(st.text(max_size=80) | st.lists(st.text(max_size=20), max_size=5))
@example("a=1,,b=2")
@example("[1]")
@example('{"a": {"b": 1}}')
@example('{"a": [1]}')
@example("=v")
def test_parse_tags_returns_valid_tags_or_raises_invalid_tag(value: str | list[str]) -> None:
    try:
        tags = parse_tags(value)
    except InvalidTag as exc:
        assert exc.status == 400
        return
    assert len(tags) <= MAX_TAGS
    for key, tag_value in tags.items():
        assert parse_tag(f"{key}={tag_value}") == (key, tag_value)


@pytest.mark.parametrize(
    ("text", "pair"),
    [("k=v", ("k", "v")), (" k = v ", ("k", "v")), ("k=", ("k", "")), ("k=a=b", ("k", "a=b")),
     ("team:ml/x@y+z-1.2_3=ok", ("team:ml/x@y+z-1.2_3", "ok")), ("a b=c", ("a b", "c"))],
)  # fmt: skip
def test_parse_tag_examples(text: str, pair: tuple[str, str]) -> None:
    assert parse_tag(text) == pair


@pytest.mark.parametrize(
    "text",
    ["k", "=v", " =v", "k!=v", "ké=v", "k" * (MAX_TAG_KEY + 1) + "=v",
     "k=" + "v" * (MAX_TAG_VALUE + 1), "k=a\x00b", "k=a\nb", "k=a\x7fb"],
)  # fmt: skip
def test_parse_tag_refuses(text: str) -> None:
    with pytest.raises(InvalidTag):
        parse_tag(text)


def test_tag_limits_are_inclusive() -> None:
    key, value = "k" * MAX_TAG_KEY, "v" * MAX_TAG_VALUE
    assert parse_tag(f"{key}={value}") == (key, value)
    many = {f"k{i}": str(i) for i in range(MAX_TAGS)}
    assert parse_tags(many) == many
    with pytest.raises(InvalidTag):
        parse_tags({**many, "one-more": "x"})


def test_json_tag_values_are_stringified() -> None:
    assert parse_tags({"a": True, "b": 1, "c": 1.5, "d": "x"}) == {
        "a": "true",
        "b": "1",
        "c": "1.5",
        "d": "x",
    }
    assert parse_tags('{"a": false, "b": 2}') == {"a": "false", "b": "2"}
    for bad in ({"a": None}, {"a": [1]}, {"a": {"b": 1}}):
        with pytest.raises(InvalidTag):
            parse_tags(bad)
    for text in ('{"a": null}', "[1, 2]", '"a=1"', "[", "{"):
        with pytest.raises(InvalidTag):
            parse_tags(text)


def test_deeply_nested_json_tags_are_invalid_tags() -> None:
    with pytest.raises(InvalidTag):
        parse_tags("[" * 10_000)


def test_tag_values_must_be_utf8() -> None:
    with pytest.raises(InvalidTag):
        parse_tags('{"a": "\\ud800"}')


def test_tag_values_refuse_c1_controls() -> None:
    with pytest.raises(InvalidTag):
        parse_tag("k=a\x85b")
