"""The index's JSON codec: what PostgreSQL's jsonb is given reads back as it was written.

The codec is checked against real PostgreSQL (and SQLite) through the app in
tests/api/test_backend_parity.py; here, its text and its key order alone.
"""

from __future__ import annotations

import json
import math

from hypothesis import example, given
from hypothesis import strategies as st

from tfstorage.index import json_codec


@given(st.floats(allow_nan=False, allow_infinity=False))
@example(1e16)
@example(-1.7976931348623157e308)
@example(5e-324)
@example(123456789012345678.0)
def test_floats_read_back_as_the_same_float(value: float) -> None:
    text = json_codec.dumps({"v": [value]})
    back = json.loads(text)["v"][0]
    assert isinstance(back, float) and back == value
    assert math.copysign(1.0, back) == math.copysign(1.0, value)
    # Never an exponent with a positive power: numeric would print it as an integer.
    assert "e+" not in text.lower()


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    )
)
def test_everything_else_is_plain_json(value: object) -> None:
    assert json.loads(json_codec.dumps(value)) == value


def test_objects_come_back_with_sorted_keys() -> None:
    text = '{"bb": 1, "a": {"z": 1, "y": [{"d": 0, "c": 1}]}, "A": 2}'
    value = json_codec.loads(text)
    assert json.dumps(value) == '{"A": 2, "a": {"y": [{"c": 1, "d": 0}], "z": 1}, "bb": 1}'
