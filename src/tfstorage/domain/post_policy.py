"""S3 POST policies: the signed JSON document that says what a browser form may upload.

A policy is `{"expiration": ISO 8601, "conditions": [...]}`, sent base64-encoded. Each
condition is `{"field": "value"}` or `["eq", "$field", "value"]` (exact),
`["starts-with", "$field", "prefix"]`, or `["content-length-range", min, max]`. Field
names compare case-insensitively, values exactly. Every field the form sends must be
named by some condition, except the few S3 exempts, so a signed policy is never stretched
to fields its author did not think of.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tfstorage.errors import AccessDenied, InvalidPolicyDocument

# The fields S3 lets a form send without a condition: the signature itself, the file and
# the policy (they cannot sign themselves), and whatever the form marks as ignorable.
_EXEMPT = frozenset({"x-amz-signature", "file", "policy"})
_IGNORED_PREFIX = "x-ignore-"
# The policy is a form field; S3 bounds the document well below the field limit too.
MAX_POLICY_SIZE = 20 * 1024


@dataclass(frozen=True)
class Condition:
    operator: str  # "eq" or "starts-with"
    field: str  # lowercase, without the "$"
    value: str

    def holds(self, actual: str) -> bool:
        if self.operator == "eq":
            return actual == self.value
        return actual.startswith(self.value)

    def __str__(self) -> str:
        return f'["{self.operator}", "${self.field}", "{self.value}"]'


@dataclass(frozen=True)
class PostPolicy:
    expiration: datetime
    conditions: tuple[Condition, ...]
    length_range: tuple[int, int] | None  # inclusive bounds on the file's size

    def check(self, fields: Mapping[str, str], *, bucket: str, now: datetime) -> None:
        """Refuse (AccessDenied, S3's wording) a form the policy does not allow.

        `fields` are the form's fields, names lowercased, the file excluded.
        """
        if now >= self.expiration:
            raise _violation("Policy expired.")
        values = {**fields, "bucket": bucket}
        named = {c.field for c in self.conditions}
        if "bucket" not in named:
            # A policy that names no bucket would be good for every bucket its key can
            # write; S3's own generators always name it, so refuse rather than guess.
            raise _violation("Policy Condition failed: the policy names no bucket")
        for condition in self.conditions:
            if not condition.holds(values.get(condition.field, "")):
                raise _violation(f"Policy Condition failed: {condition}")
        extra = sorted(
            name
            for name in fields
            if name not in named and name not in _EXEMPT and not name.startswith(_IGNORED_PREFIX)
        )
        if extra:
            raise _violation(f"Extra input fields: {', '.join(extra)}")


def _violation(reason: str) -> AccessDenied:
    return AccessDenied(f"Invalid according to Policy: {reason}")


def parse_policy(encoded: str) -> PostPolicy:
    """The policy document of a form's `policy` field (base64 JSON)."""
    if len(encoded) > MAX_POLICY_SIZE:
        raise InvalidPolicyDocument("Invalid Policy: the policy document is too large")
    try:
        document = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        raise InvalidPolicyDocument("Invalid Policy: Invalid JSON.") from None
    if not isinstance(document, dict):
        raise InvalidPolicyDocument("Invalid Policy: the policy is not a JSON object")
    # Both names are case-sensitive, as on S3: "Expiration" is not "expiration".
    expiration = document.get("expiration")
    if not isinstance(expiration, str):
        raise InvalidPolicyDocument("Invalid Policy: Policy missing expiration.")
    raw_conditions = document.get("conditions")
    if not isinstance(raw_conditions, list):
        raise InvalidPolicyDocument("Invalid Policy: Policy missing conditions.")
    conditions: list[Condition] = []
    length_range: tuple[int, int] | None = None
    for raw in raw_conditions:
        if isinstance(raw, list) and raw and raw[0] == "content-length-range":
            length_range = _length_range(raw)
        else:
            conditions.extend(_conditions(raw))
    return PostPolicy(_expiration(expiration), tuple(conditions), length_range)


def _expiration(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidPolicyDocument(
            f"Invalid Policy: Invalid 'expiration' value: '{text[:64]}'"
        ) from None
    if when.tzinfo is None:
        raise InvalidPolicyDocument("Invalid Policy: 'expiration' needs a time zone (Z)")
    return when.astimezone(UTC)


def _conditions(raw: Any) -> list[Condition]:
    if isinstance(raw, dict):
        if not raw:
            raise InvalidPolicyDocument("Invalid Policy: an empty condition")
        found = []
        for name, value in raw.items():
            if not isinstance(value, str):
                raise InvalidPolicyDocument(f"Invalid Policy: the condition on {name!r} is bad")
            found.append(Condition("eq", name.lower().removeprefix("$"), value))
        return found
    if (
        isinstance(raw, list)
        and len(raw) == 3
        and isinstance(raw[0], str)
        and raw[0].lower() in ("eq", "starts-with")
        and isinstance(raw[1], str)
        and raw[1].startswith("$")
        and isinstance(raw[2], str)
    ):
        return [Condition(raw[0].lower(), raw[1][1:].lower(), raw[2])]
    raise InvalidPolicyDocument(f"Invalid Policy: Invalid Condition: {json.dumps(raw)[:128]}")


def _length_range(raw: list[Any]) -> tuple[int, int]:
    if len(raw) != 3:
        raise InvalidPolicyDocument("Invalid Policy: content-length-range needs a min and a max")
    bounds = []
    for value in raw[1:]:
        # Browsers' policy generators write the bounds as numbers or as digit strings.
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidPolicyDocument(
                "Invalid Policy: content-length-range bounds must be whole numbers"
            )
        bounds.append(value)
    low, high = bounds
    if low > high:
        raise InvalidPolicyDocument("Invalid Policy: content-length-range min is above max")
    return low, high
