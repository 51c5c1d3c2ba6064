"""HTTP byte ranges (RFC 9110 section 14): one range per request, end-exclusive."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tfstorage.errors import InvalidRange

_RANGE_RE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.IGNORECASE)  # units are case-insensitive
_MAX_DIGITS = 20  # refuse absurd numbers before int() has to parse them


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


def parse_range(header: str, size: int) -> ByteRange | None:
    """Parse a `Range` header against an object of `size` bytes.

    A unit other than bytes is ignored (None: send the whole object, RFC 9110 14.2).
    Only a single `bytes=` range is served; several ranges, malformed values and
    unsatisfiable ranges raise `InvalidRange` (416).
    """
    value = header.strip().replace(" ", "")
    if not value.lower().startswith("bytes="):
        return None
    if "," in value:
        raise InvalidRange(size, "only a single byte range is supported")
    match = _RANGE_RE.fullmatch(value)
    if not match:
        raise InvalidRange(size, "malformed Range header")
    first, last = match.groups()
    if len(first) > _MAX_DIGITS or len(last) > _MAX_DIGITS:
        raise InvalidRange(size, "malformed Range header")
    if not first:
        if not last:
            raise InvalidRange(size, "malformed Range header")
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise InvalidRange(size)
        return ByteRange(max(0, size - suffix), size)
    start = int(first)
    if last and int(last) < start:
        raise InvalidRange(size, "malformed Range header")
    if start >= size:
        raise InvalidRange(size)
    end = size if not last else min(int(last) + 1, size)
    return ByteRange(start, end)
