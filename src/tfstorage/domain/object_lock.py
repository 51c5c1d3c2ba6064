"""S3 object lock as values: a bucket's lock configuration and a version's lock.

The index enforces locks (index/locks.py); these are the rules about what a lock
configuration may say and what date a default retention gives a new version.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tfstorage.errors import InvalidArgument

GOVERNANCE = "GOVERNANCE"
COMPLIANCE = "COMPLIANCE"
MODES = (GOVERNANCE, COMPLIANCE)
MAX_DAYS = 36500  # the index refuses dates past 100 years (domain/lifecycle.MAX_DAYS)
MAX_YEARS = 100


@dataclass(frozen=True, slots=True)
class DefaultRetention:
    """Every new version of the bucket is retained this long from its creation."""

    mode: str
    days: int | None = None
    years: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidArgument("the retention mode must be GOVERNANCE or COMPLIANCE")
        if (self.days is None) == (self.years is None):
            raise InvalidArgument("a default retention has Days or Years, not both")
        if self.days is not None and not 0 < self.days <= MAX_DAYS:
            raise InvalidArgument(f"Days must be 1 to {MAX_DAYS}")
        if self.years is not None and not 0 < self.years <= MAX_YEARS:
            raise InvalidArgument(f"Years must be 1 to {MAX_YEARS}")

    def until(self, created: datetime) -> datetime:
        # A year is 365 days, as S3 counts it for default retention.
        return created + timedelta(
            days=self.days if self.days is not None else 365 * (self.years or 0)
        )


@dataclass(frozen=True, slots=True)
class ObjectLockConfig:
    """A bucket's object lock: enabled for good once set, with an optional default."""

    default: DefaultRetention | None = None

    def to_json(self) -> dict[str, Any]:
        rule = self.default
        return {
            "enabled": True,
            "default": None
            if rule is None
            else {"mode": rule.mode, "days": rule.days, "years": rule.years},
        }

    @classmethod
    def from_json(cls, stored: dict[str, Any] | None) -> ObjectLockConfig | None:
        if not stored or not stored.get("enabled"):
            return None
        rule = stored.get("default")
        if rule is None:
            return cls()
        return cls(DefaultRetention(rule["mode"], rule.get("days"), rule.get("years")))


@dataclass(frozen=True, slots=True)
class VersionLock:
    """A lock asked for with a new version (S3's x-amz-object-lock-* headers)."""

    mode: str | None = None
    retain_until: datetime | None = None
    legal_hold: bool | None = None

    def __post_init__(self) -> None:
        if (self.mode is None) != (self.retain_until is None):
            raise InvalidArgument(
                "x-amz-object-lock-mode and x-amz-object-lock-retain-until-date go together"
            )
        if self.mode is not None and self.mode not in MODES:
            raise InvalidArgument("the retention mode must be GOVERNANCE or COMPLIANCE")

    @property
    def empty(self) -> bool:
        return self.mode is None and self.legal_hold is None

    def to_json(self) -> dict[str, Any]:
        until = None if self.retain_until is None else self.retain_until.isoformat()
        return {"mode": self.mode, "retain_until": until, "legal_hold": self.legal_hold}

    @classmethod
    def from_json(cls, stored: dict[str, Any] | None) -> VersionLock | None:
        if stored is None:
            return None
        until = stored.get("retain_until")
        return cls(
            stored.get("mode"),
            None if until is None else datetime.fromisoformat(until),
            stored.get("legal_hold"),
        )
