"""Human sizes: parse_size for configuration, format_size for responses."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tfstorage.domain.sizes import MAX_SIZE, format_size, parse_size

MULTIPLIERS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
UNIT_SPELLINGS = {
    "": [""],
    "B": ["B", "b"],
    "K": ["K", "k", "KB", "kb", "Kb", "KiB", "kib", "KIB"],
    "M": ["M", "m", "MB", "mb", "MiB", "mib"],
    "G": ["G", "g", "GB", "gB", "GiB", "GIB"],
    "T": ["T", "t", "TB", "tb", "TiB", "tib"],
}
EXACT_FLOAT = 2**53  # integers below this survive float(); fixed


@st.composite
def sized_texts(draw: st.DrawFn) -> tuple[str, int]:
    unit = draw(st.sampled_from(sorted(MULTIPLIERS)))
    number = draw(st.integers(1, min(EXACT_FLOAT - 1, MAX_SIZE // MULTIPLIERS[unit])))
    spelling = draw(st.sampled_from(UNIT_SPELLINGS[unit]))
    gap = draw(st.sampled_from(["", " ", "  "])) if spelling else ""
    pad = draw(st.sampled_from(["", " ", "\t", "\n"]))
    return f"{pad}{number}{gap}{spelling}{pad}", number * MULTIPLIERS[unit]


@given(sized_texts())
@example(("100MB", 100 * 2**20))
@example(("1024", 1024))
@example(("1 b", 1))
def test_integers_with_units_round_trip(case: tuple[str, int]) -> None:
    text, expected = case
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", [str(MAX_SIZE + 1), "8589934592G"])
def test_sizes_beyond_what_the_index_holds_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="larger than"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.5GiB", 3 * 2**29), ("0.5 KB", 512), ("2.25m", 9 * 2**18), ("1.0", 1)],
)
def test_decimals(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", " ", "MB", "0", "0KB", "0.0001KB", "-1MB", "+1MB", "1e3", "1XB", "1 M B", "1,000",
     "1.", ".5MB", "1PB", "0x10", "1 2"],
)  # fmt: skip
def test_invalid_sizes_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@given(st.text(max_size=30) | st.text(st.sampled_from("0123456789. kKmMgGtTiIbB"), max_size=30))
def test_parse_size_returns_a_positive_int_or_raises_value_error(text: str) -> None:
    try:
        value = parse_size(text)
    except ValueError:
        return
    assert isinstance(value, int) and value > 0


def test_huge_numbers_raise_value_error() -> None:
    with pytest.raises(ValueError):
        parse_size("9" * 400)


def test_integers_beyond_float_precision_round_trip() -> None:
    assert parse_size(str(2**53 + 1)) == 2**53 + 1


_FORMAT = re.compile(r"(\d+) B|(\d+\.\d) (KB|MB|GB|TB)")


@given(st.integers(0, 2**62))
@example(0)
@example(1023)
@example(1024)
@example(1234567)
@example(2**50)
def test_format_size_is_parseable_and_close(size: int) -> None:
    text = format_size(size)
    match = _FORMAT.fullmatch(text)
    assert match, text
    if size < 1024:
        assert text == f"{size} B"
        return
    unit = 2 ** (10 * ("KB", "MB", "GB", "TB").index(match.group(3)) + 10)
    # Only display rounding moves a size up a unit (1048575 bytes is "1.0 MB").
    assert size >= unit * 1023.95 / 1024
    if match.group(3) != "TB":
        assert size < unit * 1024
    # One decimal: within half a tenth of the unit, as parse_size reads it back.
    assert abs(parse_size(text) - size) <= unit * 0.05 + 1


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KB"), (1536, "1.5 KB"),
     (1234567, "1.2 MB"), (5 * 2**30, "5.0 GB"), (3 * 2**40, "3.0 TB"), (2**50, "1024.0 TB")],
)  # fmt: skip
def test_format_size_examples(size: int, text: str) -> None:
    assert format_size(size) == text


def test_format_size_never_shows_1024_of_a_unit_below_tb() -> None:
    assert format_size(2**20 - 1) == "1.0 MB"
