"""The HTTP side of conditional writes: the two headers, parsed. The rule itself lives
in domain/conditions.py and is applied by the index inside the write's transaction."""

from __future__ import annotations

from fastapi import Request

from tfstorage.domain.conditions import WriteCondition, parse_condition
from tfstorage.errors import InvalidArgument


def _header(request: Request, name: str) -> str | None:
    # A list header may arrive as several lines; RFC 9110 5.3 reads them as one.
    values = request.headers.getlist(name)
    return ", ".join(values) if values else None


def write_condition(request: Request) -> WriteCondition | None:
    """`If-Match` / `If-None-Match` of a write request (400 when malformed)."""
    return parse_condition(_header(request, "if-match"), _header(request, "if-none-match"))


def refuse_condition(request: Request, why: str) -> None:
    """For a route where the headers cannot apply: say so rather than ignore them."""
    if write_condition(request) is not None:
        raise InvalidArgument(f"If-Match / If-None-Match are not supported {why}")
