"""How the index writes and reads its JSON columns, so both backends answer alike.

PostgreSQL's jsonb keeps numbers as `numeric`, which prints `1e+16` as
`10000000000000000`: read back through `json.loads` a float became an int (and
`1.7976931348623157e308` a different int). `dumps` writes such floats in plain notation
with a fraction (`10000000000000000.0`), so they stay the same float.

jsonb also reorders object keys (shortest first), where SQLite keeps the order they were
written in; `loads` gives every object back with its keys sorted, on both backends.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

# Python writes floats from this magnitude on in exponent notation (repr's rule).
_EXPONENT_FROM = 1e16


def dumps(value: object) -> str:
    """JSON text for PostgreSQL's jsonb that reads back as the value that was written."""
    if isinstance(value, float) and math.isfinite(value) and abs(value) >= _EXPONENT_FROM:
        # repr is the shortest text that reads back as the same float; spelled out
        # without the exponent it still does.
        return f"{Decimal(repr(value)):f}.0"
    if isinstance(value, dict):
        items = (f"{json.dumps(_key(k))}:{dumps(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def loads(text: str | bytes) -> Any:
    """A JSON column's value, objects with their keys in code point order."""
    if text == "{}":  # most objects' metadata: no parser needed
        return {}
    return json.loads(text, object_pairs_hook=_sorted_object)


def _sorted_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return dict(sorted(pairs, key=lambda pair: pair[0]))


def _key(key: object) -> str:
    # json.dumps's own rule for keys that are not strings: "1", "true", "null".
    return key if isinstance(key, str) else json.dumps(key)
