"""The SigV4 canonical request, string to sign and signing key: the arithmetic both
sides of a signature must agree on, kept apart from the rules about who may sign what.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True)
class SignedRequest:
    """What verification needs from an HTTP request, exactly as received.

    Bytes become text as latin-1: Python's http.client (botocore's transport) encodes
    header values that way, and it maps every byte to one character and back.
    """

    method: str
    raw_path: str  # percent-encoded as sent, without the query
    raw_query: str  # as sent, without the '?'
    headers: Sequence[tuple[str, str]]  # every header line, repeats kept

    @classmethod
    def from_asgi(cls, scope: Mapping[str, Any]) -> SignedRequest:
        """From an ASGI HTTP scope: `raw_path` and `query_string` are the bytes as sent."""
        raw_path = scope.get("raw_path") or scope["path"].encode()
        return cls(
            method=scope["method"],
            raw_path=raw_path.decode("latin-1").split("?", 1)[0],
            raw_query=scope.get("query_string", b"").decode("latin-1"),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
        )

    @cached_property
    def _by_name(self) -> dict[str, list[str]]:
        """Every value of each header, by lowercase name, in the order sent: built once,
        as a signature check asks for each signed header and a few more."""
        found: dict[str, list[str]] = {}
        for name, value in self.headers:
            found.setdefault(name.lower(), []).append(value)
        return found

    def header_values(self, name: str) -> list[str]:
        return list(self._by_name.get(name.lower(), ()))  # a copy: the index stays as sent

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return ",".join(values) if values else None


@lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """kSigning; four HMACs per request saved, the same key all day for a client."""
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def hmac_hex(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def signatures_match(expected: str, given: str) -> bool:
    # Constant time, so a forger cannot learn the signature byte by byte from timing.
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def path_candidates(raw_path: str) -> list[str]:
    """The path as sent, and SigV4's own encoding of it when a client sent another.

    SDKs sign exactly what they send. A few clients send `$` or `!` bare but sign
    them percent-encoded, as the spec's UriEncode does; both name the same key.
    """
    sent = raw_path or "/"
    spec = quote(unquote(sent, errors="strict"), safe="/~") if _decodes(sent) else sent
    return [sent] if spec == sent else [sent, spec]


def _decodes(path: str) -> bool:
    try:
        unquote(path, errors="strict")
    except UnicodeDecodeError:
        return False
    return True


def canonical_request(
    method: str,
    path: str,
    query: list[tuple[str, str]],
    signed_headers: list[str],
    request: SignedRequest,
    payload: str,
) -> str:
    encoded = sorted((uri_encode(k), uri_encode(v)) for k, v in query)
    canonical_query = "&".join(f"{k}={v}" for k, v in encoded)
    lines = [
        f"{name}:{','.join(' '.join(v.split()) for v in request.header_values(name))}"
        for name in signed_headers
    ]
    return "\n".join(
        [method.upper(), path, canonical_query, *lines, "", ";".join(signed_headers), payload]
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def uri_encode(value: str) -> str:
    return quote(value, safe="-_.~")


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs; '+' stays a plus, as SigV4 clients encode spaces."""
    pairs = []
    for part in raw_query.split("&") if raw_query else []:
        name, _, value = part.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs
