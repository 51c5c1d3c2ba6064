"""Human sizes: "100MB" in configuration, "2.3 GB" in responses (powers of 1024)."""

from __future__ import annotations

import re
from decimal import Decimal

_UNITS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KB": 1024,
    "KIB": 1024,
    "M": 1024**2,
    "MB": 1024**2,
    "MIB": 1024**2,
    "G": 1024**3,
    "GB": 1024**3,
    "GIB": 1024**3,
    "T": 1024**4,
    "TB": 1024**4,
    "TIB": 1024**4,
}
MAX_SIZE = 2**63 - 1  # what the index's BIGINT columns hold
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")


def parse_size(text: str) -> int:
    """Parse "100MB", "1.5GiB", "1024" into bytes; raise ValueError otherwise."""
    match = _SIZE_RE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a size: {text!r} (expected e.g. 100MB, 1GB, 512KiB)")
    number, unit = match.groups()
    multiplier = _UNITS.get(unit.upper())
    if multiplier is None:
        raise ValueError(f"unknown size unit {unit!r} (use B, KB, MB, GB or TB)")
    # Decimal, not float: "9007199254740993" must not round, and a 400-digit number
    # must be a clean error rather than an OverflowError.
    value = int(Decimal(number) * multiplier)
    if value > MAX_SIZE:
        raise ValueError(f"size {text[:32]!r} is larger than 8 EiB")
    if value <= 0:
        raise ValueError("size must be positive")
    return value


def format_size(size: int) -> str:
    """1234567 -> "1.2 MB", as the original service showed sizes."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if round(value, 1) < 1024 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
