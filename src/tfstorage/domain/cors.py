"""CORS rules of a bucket (S3's CORSConfiguration): validation and matching.

S3's matching: the first rule whose AllowedOrigin matches the request's Origin, whose
AllowedMethod has the (requested) method, and whose AllowedHeader patterns cover every
requested header. Origins and headers may hold one `*` wildcard; header names compare
case-insensitively, origins as sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tfstorage.errors import InvalidRequest

METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "HEAD"})
MAX_RULES = 100


@dataclass(frozen=True, slots=True)
class CorsRule:
    allowed_origins: tuple[str, ...]
    allowed_methods: tuple[str, ...]
    allowed_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age_seconds: int | None = None
    id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "origins": list(self.allowed_origins),
            "methods": list(self.allowed_methods),
            "headers": list(self.allowed_headers),
            "expose": list(self.expose_headers),
            "max_age": self.max_age_seconds,
        }

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> CorsRule:
        return cls(
            allowed_origins=tuple(stored["origins"]),
            allowed_methods=tuple(stored["methods"]),
            allowed_headers=tuple(stored.get("headers") or ()),
            expose_headers=tuple(stored.get("expose") or ()),
            max_age_seconds=stored.get("max_age"),
            id=stored.get("id"),
        )

    def allows(self, origin: str, method: str, headers: Iterable[str] = ()) -> bool:
        return (
            any(wildcard_match(p, origin) for p in self.allowed_origins)
            and method in self.allowed_methods
            and all(
                any(wildcard_match(p.lower(), h.lower()) for p in self.allowed_headers)
                for h in headers
            )
        )


@dataclass(frozen=True, slots=True)
class CorsConfig:
    rules: tuple[CorsRule, ...] = field(default_factory=tuple)

    def matching(self, origin: str, method: str, headers: Iterable[str] = ()) -> CorsRule | None:
        wanted = [h for h in headers if h]
        return next((r for r in self.rules if r.allows(origin, method, wanted)), None)


def wildcard_match(pattern: str, value: str) -> bool:
    """`*` matches any run of characters (one `*` per pattern, as S3 allows)."""
    head, star, tail = pattern.partition("*")
    if not star:
        return pattern == value
    return len(value) >= len(head) + len(tail) and value.startswith(head) and value.endswith(tail)


def validate_rules(rules: Sequence[CorsRule]) -> CorsConfig:
    """S3's checks on a CORSConfiguration; InvalidRequest names what is wrong."""
    if not rules:
        raise InvalidRequest("a CORS configuration has at least one CORSRule")
    if len(rules) > MAX_RULES:
        raise InvalidRequest(f"a CORS configuration has at most {MAX_RULES} rules")
    for rule in rules:
        if not rule.allowed_origins or not rule.allowed_methods:
            raise InvalidRequest("every CORSRule has an AllowedOrigin and an AllowedMethod")
        for method in rule.allowed_methods:
            if method not in METHODS:
                raise InvalidRequest(
                    f"Found unsupported HTTP method in CORS config. Unsupported method is {method}"
                )
        for origin in rule.allowed_origins:
            if origin.count("*") > 1:
                raise InvalidRequest(
                    f'AllowedOrigin "{origin}" can not have more than one wildcard.'
                )
        for header in rule.allowed_headers:
            if header.count("*") > 1:
                raise InvalidRequest(
                    f'AllowedHeader "{header}" can not have more than one wildcard.'
                )
        if rule.max_age_seconds is not None and rule.max_age_seconds < 0:
            raise InvalidRequest("MaxAgeSeconds must not be negative")
        if rule.id is not None and len(rule.id) > 255:
            raise InvalidRequest("a CORSRule ID is at most 255 characters")
    return CorsConfig(tuple(rules))
