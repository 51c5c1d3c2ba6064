"""Free text the index keeps: what every index backend stores exactly as sent.

PostgreSQL cannot store U+0000 in `text` or `jsonb` (SQLite can), and a lone surrogate
(`"\\ud800"` in a JSON body) has no UTF-8 form for either. Such text is refused with one
400 on every backend, before the index sees it.
"""

from __future__ import annotations

from tfstorage.errors import InvalidArgument


def unstorable_reason(text: str) -> str | None:
    """Why the index cannot store `text` on every backend, or None when it can."""
    if "\x00" in text:
        return "contains U+0000 (NUL), which the index cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 (it contains a lone surrogate)"
    return None


def check_storable(text: str, field: str) -> str:
    """`text` if every backend stores it as sent, else InvalidArgument naming `field`."""
    reason = unstorable_reason(text)
    if reason is not None:
        raise InvalidArgument(f"{field} {reason}")
    return text


def check_storable_tree(value: object, field: str) -> None:
    """Every string (keys included) of a JSON value, as `check_storable` checks one.

    Iterative: callers bound the size, not the depth, of what clients send."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            check_storable(item, field)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
