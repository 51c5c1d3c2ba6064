"""The HTTP headers an object keeps from its upload and sends with every download.

S3 stores Cache-Control, Content-Disposition, Content-Encoding, Content-Language and
Expires with the version: a site or a dataset served from a bucket relies on them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tfstorage.errors import InvalidArgument

STORED_HEADERS = (
    "Cache-Control",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Expires",
)
# A transfer encoding of the request body (SigV4 streaming), never the object's own.
_TRANSPORT_ENCODINGS = frozenset({"aws-chunked"})
_MAX_VALUE = 1024


def stored_content_headers(header: Callable[[str], str | None]) -> dict[str, str]:
    """The headers to keep, read with `header(lowercase name)`; empty ones are left out,
    one that cannot be sent back as it came (a control character, over 1024 characters)
    is refused rather than silently dropped."""
    found: dict[str, str] = {}
    for name in STORED_HEADERS:
        value = header(name.lower())
        if value is None:
            continue
        if name == "Content-Encoding":
            codings = [c.strip() for c in value.split(",")]
            value = ", ".join(c for c in codings if c and c.lower() not in _TRANSPORT_ENCODINGS)
        value = value.strip()
        if not value:
            continue
        if not value.isprintable() or len(value) > _MAX_VALUE:
            raise InvalidArgument(
                f"{name} must be printable and at most {_MAX_VALUE} characters to be stored"
            )
        found[name] = value
    return found


def known_content_headers(stored: Mapping[str, object] | None) -> dict[str, str]:
    """What the index gave back, limited to the names this module stores."""
    if not stored:
        return {}
    return {name: str(stored[name]) for name in STORED_HEADERS if name in stored}
