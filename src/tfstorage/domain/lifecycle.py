"""Lifecycle rules and their evaluation: given a bucket's versions and a time, what goes
and why. Pure: the index supplies the rows, the service acts on the answer.

Decisions the rules encode:
- Ranking rules (`keep_last`, `keep_top`, `keep_versions`) rank every matching object,
  protected or locked ones included; protection and locks only take an object off the
  list of what goes, never give its slot to another.
- An expired object goes with all its versions (its bytes come back at the next GC); a
  key holding any protected or locked version is never expired.
- Nothing created after `now` is ever acted on, whatever the rule (a clock that jumped
  back must not make young objects look due).
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from tfstorage.domain.text import check_storable_tree
from tfstorage.errors import InvalidArgument

MAX_RULES = 100
MAX_DAYS = 36_500
MAX_COUNT = 1_000_000
DEFAULT_RULE_ID = "default-retention"
_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_FIELD_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}(\.[A-Za-z0-9_\-]{1,64}){0,7}")

Kind = Literal["expire", "delete_version", "archive"]


@dataclass(frozen=True, slots=True)
class RuleFilter:
    prefix: str = ""
    key_pattern: str = ""  # glob on the whole key (`*` crosses `/`), e.g. job_*/epoch_*.ckpt
    tags: tuple[tuple[str, str], ...] = ()  # all must be present
    content_type: str = ""  # exact, or `image/*`
    min_size: int = 0

    def matches(self, key: str, tags: Mapping[str, str], content_type: str, size: int) -> bool:
        if not key.startswith(self.prefix) or size < self.min_size:
            return False
        if self.key_pattern and not fnmatch.fnmatchcase(key, self.key_pattern):
            return False
        if any(tags.get(k) != v for k, v in self.tags):
            return False
        if self.content_type.endswith("/*"):
            return content_type.startswith(self.content_type[:-1])
        return not self.content_type or content_type == self.content_type


@dataclass(frozen=True, slots=True)
class Grouping:
    """How objects are grouped before ranking: by the first `depth` path segments after
    the rule's prefix, or by a regex (its first group, else the whole match)."""

    depth: int = 0
    pattern: str = ""

    def group_of(self, key: str, prefix: str) -> str | None:
        if self.pattern:
            found = re.search(self.pattern, key)
            if found is None:
                return None  # keys the pattern does not place are left alone
            return found.group(1) if found.re.groups else found.group(0)
        parts = key[len(prefix) :].split("/")
        return prefix + "/".join(parts[: min(self.depth, len(parts) - 1)])


@dataclass(frozen=True, slots=True)
class KeepLast:
    count: int
    grouping: Grouping = Grouping()


@dataclass(frozen=True, slots=True)
class KeepTop:
    field: str  # dotted path into the user metadata, e.g. metrics.val_loss
    count: int
    order: Literal["lowest", "highest"] = "lowest"
    grouping: Grouping = Grouping()


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    filter: RuleFilter = RuleFilter()
    expire_days: int | None = None
    keep_versions: int | None = None
    keep_last: KeepLast | None = None
    keep_top: KeepTop | None = None
    archive_days: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)  # as stored


@dataclass(frozen=True, slots=True)
class Candidate:
    """One version of a key, as the index sees it."""

    file_id: str
    seq: int
    key: str
    size: int
    content_type: str
    metadata: Mapping[str, Any]
    tags: Mapping[str, str]
    created_at: datetime
    is_current: bool  # the head of its key
    deleted: bool  # its key is in the trash
    successor_created_at: datetime | None  # when a newer version replaced it
    retain_until: datetime | None = None
    legal_hold: bool = False
    blob_id: str = ""
    sha256: str = ""
    archived: bool = False  # its blob is in the archive tier already

    def locked(self, now: datetime) -> bool:
        return self.legal_hold or (self.retain_until is not None and self.retain_until > now)


@dataclass(frozen=True, slots=True)
class Expiry:
    """One thing a run does: remove a whole key (`expire`, conditional on `seq` still
    being its live head) or one non-current version (`delete_version`), or move the
    version's blob to the archive tier (`archive`)."""

    kind: Kind
    file_id: str
    seq: int
    key: str
    size: int
    rule_id: str
    reason: str
    blob_id: str = ""
    sha256: str = ""


# parsing ---------------------------------------------------------------------------
def parse_rules(raw: object) -> tuple[Rule, ...]:
    """Validate rules sent by a client (a list, or {"rules": [...]}); 400 on any error."""
    check_storable_tree(raw, "lifecycle rules")  # stored as sent: no NUL, no lone surrogate
    if isinstance(raw, dict) and set(raw) == {"rules"}:
        raw = raw["rules"]
    if not isinstance(raw, list):
        raise InvalidArgument("lifecycle rules must be a JSON list of rule objects")
    if len(raw) > MAX_RULES:
        raise InvalidArgument(f"at most {MAX_RULES} lifecycle rules per bucket")
    rules = tuple(_parse_rule(item, i) for i, item in enumerate(raw))
    ids = [r.id for r in rules]
    if len(set(ids)) != len(ids) or DEFAULT_RULE_ID in ids:
        raise InvalidArgument(f"rule ids must be unique and not {DEFAULT_RULE_ID!r}")
    return rules


_RULE_FIELDS = {
    "id", "filter", "expire_days", "keep_versions", "keep_last", "keep_top", "archive_days",
}  # fmt: skip
_ACTIONS = ("expire_days", "keep_versions", "keep_last", "keep_top", "archive_days")


def _parse_rule(item: object, index: int) -> Rule:
    where = f"rule {index}"
    obj = _object(item, where, _RULE_FIELDS)
    rule_id = obj.get("id")
    if not isinstance(rule_id, str) or not _ID_RE.fullmatch(rule_id):
        raise InvalidArgument(f"{where}: 'id' must be 1-64 characters of A-Z a-z 0-9 . _ -")
    where = f"rule {rule_id!r}"
    if not any(obj.get(name) is not None for name in _ACTIONS):
        raise InvalidArgument(f"{where}: needs an action: {', '.join(_ACTIONS)}")
    keep_last = keep_top = None
    if (spec := obj.get("keep_last")) is not None:
        spec = _object(spec, f"{where}.keep_last", {"count", "group_depth", "group_pattern"})
        keep_last = KeepLast(_count(spec.get("count"), f"{where}.keep_last.count"),
                             _grouping(spec, f"{where}.keep_last"))  # fmt: skip
    if (spec := obj.get("keep_top")) is not None:
        allowed = {"field", "count", "order", "group_depth", "group_pattern"}
        spec = _object(spec, f"{where}.keep_top", allowed)
        path = spec.get("field")
        if not isinstance(path, str) or not _FIELD_RE.fullmatch(path):
            raise InvalidArgument(
                f"{where}.keep_top.field must be a dotted path like metrics.val_loss"
            )
        order = spec.get("order", "lowest")
        if order not in ("lowest", "highest"):
            raise InvalidArgument(f"{where}.keep_top.order must be 'lowest' or 'highest'")
        count = _count(spec.get("count"), f"{where}.keep_top.count")
        keep_top = KeepTop(path, count, order, _grouping(spec, f"{where}.keep_top"))
    expire = obj.get("expire_days")
    versions = obj.get("keep_versions")
    archive = obj.get("archive_days")
    return Rule(
        id=rule_id,
        filter=_parse_filter(obj.get("filter", {}), f"{where}.filter"),
        expire_days=None if expire is None else _int(expire, f"{where}.expire_days", 1, MAX_DAYS),
        keep_versions=None if versions is None else _count(versions, f"{where}.keep_versions"),
        keep_last=keep_last,
        keep_top=keep_top,
        archive_days=None
        if archive is None
        else _int(archive, f"{where}.archive_days", 1, MAX_DAYS),
        raw=obj,
    )


def _parse_filter(item: object, where: str) -> RuleFilter:
    obj = _object(item, where, {"prefix", "key_pattern", "tags", "content_type", "min_size"})
    texts = {}
    for name, limit in (("prefix", 1024), ("key_pattern", 1024), ("content_type", 255)):
        value = obj.get(name, "")
        if not isinstance(value, str) or len(value) > limit:
            raise InvalidArgument(f"{where}.{name} must be a string of at most {limit} characters")
        texts[name] = value
    tags = obj.get("tags", {})
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise InvalidArgument(
            f'{where}.tags must be an object of strings, e.g. {{"stage": "ckpt"}}'
        )
    min_size = _int(obj.get("min_size", 0), f"{where}.min_size", 0, 2**62)
    return RuleFilter(
        prefix=texts["prefix"],
        key_pattern=texts["key_pattern"],
        tags=tuple(sorted(tags.items())),
        content_type=texts["content_type"],
        min_size=min_size,
    )


def _grouping(spec: Mapping[str, Any], where: str) -> Grouping:
    depth = _int(spec.get("group_depth", 0), f"{where}.group_depth", 0, 64)
    pattern = spec.get("group_pattern", "")
    if not isinstance(pattern, str) or len(pattern) > 256:
        raise InvalidArgument(f"{where}.group_pattern must be a regex of at most 256 characters")
    if pattern:
        if depth:
            raise InvalidArgument(f"{where}: give group_depth or group_pattern, not both")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise InvalidArgument(f"{where}.group_pattern is not a valid regex: {exc}") from None
    return Grouping(depth=depth, pattern=pattern)


def _object(item: object, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InvalidArgument(f"{where} must be a JSON object")
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise InvalidArgument(f"{where}: unknown field(s) {', '.join(map(str, unknown))}")
    return item


def _int(value: object, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{where} must be an integer from {low} to {high}")
    return value


def _count(value: object, where: str) -> int:
    return _int(value, where, 1, MAX_COUNT)


# evaluation ------------------------------------------------------------------------
def metadata_number(metadata: Mapping[str, Any], path: str) -> float | None:
    """The number at a dotted path (numbers or numeric strings), else None."""
    value: Any = metadata
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def evaluate(
    rules: Sequence[Rule],
    candidates: Iterable[Candidate],
    now: datetime,
    *,
    retention_days: int,
    protected_tags: Collection[tuple[str, str]],
) -> list[Expiry]:
    """What goes, and why: each key or version at most once, the first rule naming it
    winning (the default retention rule last), in key and version order."""
    by_key: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_key[c.key].append(c)
    for versions in by_key.values():
        versions.sort(key=lambda c: c.seq, reverse=True)

    def spared(c: Candidate) -> bool:
        return (
            c.created_at > now
            or c.locked(now)
            or any(c.tags.get(k) == v for k, v in protected_tags)
        )

    live = [vs[0] for vs in by_key.values() if vs[0].is_current and not vs[0].deleted]
    chosen: dict[int, Expiry] = {}
    expired_keys: set[str] = set()

    def expire(c: Candidate, rule_id: str, reason: str) -> None:
        if c.key in expired_keys or any(spared(v) for v in by_key[c.key]):
            return
        expired_keys.add(c.key)
        chosen[c.seq] = Expiry("expire", c.file_id, c.seq, c.key, c.size, rule_id, reason)

    def drop_version(c: Candidate, rule_id: str, reason: str) -> None:
        if c.seq in chosen or c.is_current or spared(c):
            return
        chosen[c.seq] = Expiry("delete_version", c.file_id, c.seq, c.key, c.size, rule_id, reason)

    for rule in rules:
        matching = [c for c in live if rule.filter.matches(c.key, c.tags, c.content_type, c.size)]
        if rule.expire_days is not None:
            cutoff = now - timedelta(days=rule.expire_days)
            for c in matching:
                if c.created_at <= cutoff:
                    expire(c, rule.id, f"older than {rule.expire_days} days")
        if rule.keep_last is not None:
            _keep_last(rule, rule.keep_last, matching, expire)
        if rule.keep_top is not None:
            _keep_top(rule, rule.keep_top, matching, expire)
        if rule.keep_versions is not None:
            n = rule.keep_versions
            for versions in by_key.values():
                for rank, c in enumerate(versions[n:], start=n + 1):
                    if rule.filter.matches(c.key, c.tags, c.content_type, c.size):
                        drop_version(c, rule.id, f"version {rank} of its key; keeping {n}")

    for rule in rules:
        if rule.archive_days is None:
            continue
        cutoff = now - timedelta(days=rule.archive_days)
        for c in live:
            if (
                c.created_at <= cutoff
                and not c.archived
                and c.seq not in chosen
                and c.key not in expired_keys
                and not any(c.tags.get(k) == v for k, v in protected_tags)
                and rule.filter.matches(c.key, c.tags, c.content_type, c.size)
            ):
                reason = f"older than {rule.archive_days} days"
                chosen[c.seq] = Expiry("archive", c.file_id, c.seq, c.key, c.size, rule.id,
                                       reason, c.blob_id, c.sha256)  # fmt: skip

    cutoff = now - timedelta(days=retention_days)
    for versions in by_key.values():
        for c in versions:
            replaced = c.successor_created_at
            if not c.is_current and replaced is not None and replaced <= cutoff:
                drop_version(c, DEFAULT_RULE_ID, f"non-current for over {retention_days} days")
    # A key that goes whole takes its old versions along: they are not listed twice.
    found = [e for e in chosen.values() if e.kind == "expire" or e.key not in expired_keys]
    return sorted(found, key=lambda e: (e.key, e.seq))


def _keep_last(rule: Rule, keep: KeepLast, matching: list[Candidate], expire: Any) -> None:
    for group, members in _groups(matching, keep.grouping, rule.filter.prefix).items():
        members.sort(key=lambda c: c.seq, reverse=True)
        for rank, c in enumerate(members[keep.count :], start=keep.count + 1):
            expire(c, rule.id, f"number {rank} by age in group {group!r}; keeping {keep.count}")


def _keep_top(rule: Rule, keep: KeepTop, matching: list[Candidate], expire: Any) -> None:
    for group, members in _groups(matching, keep.grouping, rule.filter.prefix).items():
        scored = [
            (v, c) for c in members if (v := metadata_number(c.metadata, keep.field)) is not None
        ]
        sign = 1.0 if keep.order == "lowest" else -1.0
        # Ties: the newer object ranks first.
        scored.sort(key=lambda item: (sign * item[0], -item[1].seq))
        for rank, (value, c) in enumerate(scored[keep.count :], start=keep.count + 1):
            expire(
                c,
                rule.id,
                f"{keep.field}={value:g} ranks {rank} in group {group!r}; "
                f"keeping the {keep.count} {keep.order}",
            )


def _groups(
    members: Iterable[Candidate], grouping: Grouping, prefix: str
) -> dict[str, list[Candidate]]:
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for c in members:
        group = grouping.group_of(c.key, prefix)
        if group is not None:
            groups[group].append(c)
    return groups


def parse_protected_tags(text: str) -> tuple[tuple[str, str], ...]:
    """LIFECYCLE_PROTECTED_TAGS: `protected=true,alias=prod`."""
    pairs = []
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.strip().partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item.strip()!r} is not key=value")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)
