"""User metadata (a bounded JSON object) and tags (`key=value` pairs)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from tfstorage.errors import InvalidMetadata, InvalidTag, MetadataTooLarge

MAX_METADATA_BYTES = 8 * 1024
MAX_METADATA_DEPTH = 32
MAX_TAGS = 50
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
_TAG_KEY_RE = re.compile(r"[A-Za-z0-9_.:/+\-@ ]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def parse_metadata(text: str | None) -> dict[str, Any]:
    """Parse a metadata field sent as JSON text; empty means no metadata."""
    if text is None or not text.strip():
        return {}
    if len(text.encode("utf-8", "surrogatepass")) > MAX_METADATA_BYTES:
        raise MetadataTooLarge(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise InvalidMetadata("metadata is not valid JSON") from None
    return validate_metadata(value)


def _refuse_constant(name: str) -> object:
    # NaN and Infinity are not JSON; PostgreSQL refuses them and SQLite turns them into null.
    raise ValueError(f"{name} is not valid JSON")


def validate_metadata(value: object) -> dict[str, Any]:
    """`value` if every index backend stores it exactly as sent, else the 400 that says why.

    PostgreSQL's jsonb refuses U+0000 in a string (SQLite would keep it) and its numeric
    has no negative zero, so NUL is refused and -0.0 becomes 0.0 on every backend.
    """
    if not isinstance(value, dict):
        raise InvalidMetadata("metadata must be a JSON object")
    negative_zero = _check_tree(value)
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        size = len(text.encode("utf-8"))
    except ValueError:  # NaN / Infinity (UnicodeEncodeError, a lone surrogate, is one too)
        raise InvalidMetadata("metadata must be valid JSON text in UTF-8") from None
    if size > MAX_METADATA_BYTES:
        raise MetadataTooLarge(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    return _without_negative_zero(value) if negative_zero else value


def _check_tree(value: object) -> bool:
    """Depth and NUL checks in one walk; True when a -0.0 needs replacing.

    Iterative, so hostile nesting cannot exhaust the interpreter's stack."""
    negative_zero, stack = False, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH:  # a scalar counts as a level, as it always did
            raise InvalidMetadata(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                _refuse_nul(key, "a key")
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            _refuse_nul(item, "a value")
        elif isinstance(item, float) and item == 0.0 and math.copysign(1.0, item) < 0:
            negative_zero = True
    return negative_zero


def _refuse_nul(text: object, what: str) -> None:
    if isinstance(text, str) and "\x00" in text:
        raise InvalidMetadata(
            f"metadata has {what} containing U+0000 (NUL), which the index cannot store"
        )


def _without_negative_zero(value: Any) -> Any:
    # Recursion is bounded: the depth was checked first.
    if isinstance(value, dict):
        return {k: _without_negative_zero(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_negative_zero(v) for v in value]
    if isinstance(value, float) and value == 0.0:
        return 0.0
    return value


def parse_tag(text: str) -> tuple[str, str]:
    """ "k=v" -> ("k", "v"); the value may be empty, the key may not."""
    key, sep, value = text.partition("=")
    if not sep:
        raise InvalidTag(f"tag {text[:64]!r} is not key=value")
    return validate_tag(key.strip(), value.strip())


def validate_tag(key: str, value: str) -> tuple[str, str]:
    if not key or len(key) > MAX_TAG_KEY or not _TAG_KEY_RE.fullmatch(key):
        raise InvalidTag(
            f"tag keys are 1-{MAX_TAG_KEY} characters of letters, digits, space and _.:/+-@"
        )
    if len(value) > MAX_TAG_VALUE or _CONTROL_RE.search(value) or not _is_utf8(value):
        raise InvalidTag(f"tag values are at most {MAX_TAG_VALUE} printable characters")
    return key, value


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def parse_tags(value: str | list[str] | Mapping[str, object] | None) -> dict[str, str]:
    """Tags from a form field or JSON: "a=1,b=2", ["a=1", "b=2"] or {"a": "1"}."""
    if value is None:
        return {}
    pairs: list[tuple[str, str]]
    if isinstance(value, Mapping):
        pairs = [validate_tag(str(k), _tag_value(v)) for k, v in value.items()]
    else:
        items = value if isinstance(value, list) else _split_tag_text(value)
        pairs = [parse_tag(item) for item in items if item.strip()]
    if len(pairs) > MAX_TAGS:
        raise InvalidTag(f"at most {MAX_TAGS} tags per object")
    return dict(pairs)


def _split_tag_text(text: str) -> list[str]:
    text = text.strip()
    if text.startswith(("{", "[")):
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            raise InvalidTag("tags are not valid JSON") from None
        if isinstance(parsed, dict):
            return [f"{k}={_tag_value(v)}" for k, v in parsed.items()]
        if isinstance(parsed, list) and all(isinstance(i, str) for i in parsed):
            return list(parsed)
        raise InvalidTag("tags must be a JSON object or a list of 'key=value' strings")
    return text.replace("&", ",").split(",")


def _tag_value(value: object) -> str:
    if isinstance(value, str | int | float | bool):
        return str(value).lower() if isinstance(value, bool) else str(value)
    raise InvalidTag("tag values must be strings or numbers")
