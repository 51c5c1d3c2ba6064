"""Request XML of bucket configuration (CORS, object lock) and of object locks
(retention, legal hold), parsed with xml.parse's safe, capped parser."""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree.ElementTree import Element

from tfstorage.domain.cors import CorsRule
from tfstorage.domain.object_lock import MODES, DefaultRetention, ObjectLockConfig
from tfstorage.errors import InvalidArgument
from tfstorage.s3api.errors import InvalidRetentionPeriod, MalformedXML
from tfstorage.s3api.xml import parse


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _all(element: Element, name: str) -> list[Element]:
    return [child for child in element if _local(child.tag) == name]


def _texts(element: Element, name: str) -> tuple[str, ...]:
    return tuple((child.text or "").strip() for child in _all(element, name))


def _one(element: Element, name: str) -> str | None:
    found = _all(element, name)
    if len(found) > 1:
        raise MalformedXML(f"{name} is given more than once")
    return (found[0].text or "").strip() if found else None


def _count(text: str, name: str) -> int:
    if not text.isascii() or not text.lstrip("-").isdigit() or len(text) > 9:
        raise MalformedXML(f"{name} must be a whole number")
    return int(text)


def parse_cors(body: bytes) -> list[CorsRule]:
    root = parse(body, root="CORSConfiguration")
    rules = []
    for item in _all(root, "CORSRule"):
        age = _one(item, "MaxAgeSeconds")
        rules.append(
            CorsRule(
                allowed_origins=_texts(item, "AllowedOrigin"),
                allowed_methods=_texts(item, "AllowedMethod"),
                allowed_headers=_texts(item, "AllowedHeader"),
                expose_headers=_texts(item, "ExposeHeader"),
                max_age_seconds=None if age is None else _count(age, "MaxAgeSeconds"),
                id=_one(item, "ID"),
            )
        )
    return rules


def parse_object_lock(body: bytes) -> ObjectLockConfig:
    root = parse(body, root="ObjectLockConfiguration")
    if _one(root, "ObjectLockEnabled") != "Enabled":
        raise MalformedXML("ObjectLockEnabled must be Enabled")
    rules = _all(root, "Rule")
    if len(rules) > 1:
        raise MalformedXML("Rule is given more than once")
    if not rules:
        return ObjectLockConfig()
    defaults = _all(rules[0], "DefaultRetention")
    if len(defaults) != 1:
        raise MalformedXML("a Rule has one DefaultRetention")
    default = defaults[0]
    mode = _one(default, "Mode")
    days, years = _one(default, "Days"), _one(default, "Years")
    if mode not in MODES:
        raise MalformedXML("Mode must be GOVERNANCE or COMPLIANCE")
    if (days is None) == (years is None):
        raise MalformedXML("a DefaultRetention has Days or Years, not both")
    count = _count(days or years or "", "Days" if days is not None else "Years")
    if count <= 0:
        raise InvalidRetentionPeriod("the retention period must be a positive integer")
    try:
        rule = DefaultRetention(mode, count if days else None, count if years else None)
    except InvalidArgument as exc:
        raise InvalidRetentionPeriod(exc.message) from None
    return ObjectLockConfig(rule)


def parse_retention(body: bytes) -> tuple[str, datetime] | None:
    """(mode, retain until); None for an empty Retention (S3's way to remove a
    GOVERNANCE retention, with the bypass)."""
    root = parse(body, root="Retention")
    mode, until = _one(root, "Mode"), _one(root, "RetainUntilDate")
    if mode is None and until is None:
        return None
    if mode not in MODES or until is None:
        raise MalformedXML("a Retention has a Mode (GOVERNANCE or COMPLIANCE) and a date")
    return mode, parse_date(until)


def parse_date(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise MalformedXML("RetainUntilDate must be an ISO 8601 date") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_legal_hold(body: bytes) -> bool:
    status = _one(parse(body, root="LegalHold"), "Status")
    if status not in ("ON", "OFF"):
        raise MalformedXML("Status must be ON or OFF")
    return status == "ON"
