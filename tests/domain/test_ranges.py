"""Range headers against an oracle that selects positions by slicing `range(size)`."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tfstorage.domain.ranges import ByteRange, parse_range
from tfstorage.errors import InvalidRange

MAX_DIGITS = 20  # the module's documented refusal of absurdly long numbers


def _number(text: str) -> int | None:
    if not text or not text.isascii() or not text.isdigit() or len(text) > MAX_DIGITS:
        return None
    return int(text)


IGNORED = (-1, -1)  # a unit other than bytes: the header is ignored (RFC 9110 14.2)


def expected_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end) the header selects from `size` bytes, None for a 416, or IGNORED.

    The service's policy on top of RFC 9110: a unit other than `bytes` (any case) is
    ignored; one range only; malformed byte ranges are 416 (not ignored); spaces between
    tokens are tolerated.
    """
    compact = header.strip().replace(" ", "")
    if not compact.lower().startswith("bytes="):
        return IGNORED
    spec = compact[len("bytes=") :]
    if "," in spec or spec.count("-") != 1:
        return None
    first_text, _, last_text = spec.partition("-")
    if first_text == "":
        suffix = _number(last_text)
        if suffix is None or suffix == 0:
            return None
        picked = range(size)[-suffix:]
    else:
        first = _number(first_text)
        if first is None:
            return None
        if last_text == "":
            picked = range(size)[first:]
        else:
            last = _number(last_text)
            if last is None or last < first:
                return None
            picked = range(size)[first : last + 1]
    if not picked:
        return None
    return picked.start, picked.stop


sizes = st.one_of(st.integers(0, 20), st.integers(0, 2**63))
numbers = st.one_of(
    st.integers(0, 30).map(str),
    st.integers(0, 10**MAX_DIGITS - 1).map(str),
    st.integers(1, 25).map(lambda n: "0" * n + "7"),
    st.integers(10**MAX_DIGITS, 10**30).map(str),
    st.just(""),
    # Headers arrive latin-1 decoded, so "\xb2" is the only kind of non-ASCII digit-like
    # character a client can send (\d and int() would take e.g. Arabic-Indic digits).
    st.sampled_from(["+1", "-1", "1.5", "0x10", "\xb2", "1_0", " 1"]),
)
spaces = st.sampled_from(["", "", "", " ", "  "])


@st.composite
def range_headers(draw: st.DrawFn) -> str:
    unit = draw(st.sampled_from(["bytes"] * 8 + ["items", "", "byte", "bytes="]))
    specs = draw(
        st.lists(
            st.tuples(numbers, spaces, numbers).map(lambda t: f"{t[0]}{t[1]}-{t[1]}{t[2]}"),
            min_size=1,
            max_size=3,
        )
    )
    if draw(st.booleans()) and len(specs) == 1:
        specs = draw(st.sampled_from([specs, [*specs, ""], ["", *specs]]))
    sep = draw(st.sampled_from([",", ", ", " ,"]))
    eq = draw(st.sampled_from(["=", "=", " = ", "= "]))
    return draw(st.sampled_from(["", " ", "\t"])) + unit + eq + sep.join(specs) + draw(spaces)


@given(range_headers(), sizes)
@example("bytes=0-0", 0)
@example("bytes=0-", 0)
@example("bytes=-1", 0)
@example("bytes=-0", 10)
@example("bytes=-10", 10)
@example("bytes=-11", 10)
@example("bytes=9-", 10)
@example("bytes=10-", 10)
@example("bytes=3-2", 10)
@example("bytes=0-99999999999999999999", 10)
@example("bytes=0-100000000000000000000", 10)
@example("bytes=0-1,2-3", 10)
@example("bytes=-", 10)
@example("bytes=--1", 10)
def test_parse_range_agrees_with_oracle(header: str, size: int) -> None:
    expected = expected_range(header, size)
    if expected is None:
        with pytest.raises(InvalidRange) as info:
            parse_range(header, size)
        assert info.value.status == 416
        assert info.value.headers == {"Content-Range": f"bytes */{size}"}
    elif expected == IGNORED:
        assert parse_range(header, size) is None
    else:
        got = parse_range(header, size)
        assert got is not None
        assert (got.start, got.end) == expected
        assert 0 <= got.start < got.end <= size
        assert got.length == got.end - got.start > 0
        assert got.content_range(size) == f"bytes {got.start}-{got.end - 1}/{size}"


@given(st.text(max_size=60) | st.text(st.sampled_from("bytes=0123456789-, \t"), max_size=30), sizes)
def test_parse_range_never_raises_anything_else(header: str, size: int) -> None:
    try:
        got = parse_range(header, size)
    except InvalidRange as exc:
        assert exc.headers["Content-Range"] == f"bytes */{size}"
        return
    if got is None:  # not a bytes range: ignored
        assert not header.strip().replace(" ", "").lower().startswith("bytes=")
        return
    assert isinstance(got, ByteRange)
    assert 0 <= got.start < got.end <= size


@pytest.mark.parametrize(
    ("header", "size", "start", "end"),
    [
        ("bytes=0-9", 100, 0, 10),
        ("bytes=10-", 100, 10, 100),
        ("bytes=-5", 100, 95, 100),
        ("bytes=-500", 100, 0, 100),
        ("bytes=90-200", 100, 90, 100),
        ("bytes=99-99", 100, 99, 100),
        (" bytes = 1 - 2 ", 100, 1, 3),
    ],
)
def test_examples(header: str, size: int, start: int, end: int) -> None:
    got = parse_range(header, size)
    assert got == ByteRange(start, end)
    assert got is not None
    assert got.content_range(size) == f"bytes {start}-{end - 1}/{size}"


def test_thousands_of_ranges_are_refused_without_parsing_them() -> None:
    with pytest.raises(InvalidRange):
        parse_range("bytes=" + ",".join(f"{i}-{i}" for i in range(10_000)), 10)


def test_range_unit_is_case_insensitive() -> None:
    assert parse_range("Bytes=0-1", 10) == ByteRange(0, 2)
