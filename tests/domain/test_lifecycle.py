"""Lifecycle rules: validation, and the pure "what goes and why" evaluation."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfstorage.domain.lifecycle import (
    DEFAULT_RULE_ID,
    Candidate,
    evaluate,
    metadata_number,
    parse_protected_tags,
    parse_rules,
)
from tfstorage.errors import InvalidArgument

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PROTECTED = (("protected", "true"), ("alias", "prod"))


def version(
    key: str,
    seq: int,
    *,
    age_days: float = 1.0,
    current: bool = True,
    tags: dict[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
    replaced_days: float | None = None,
    retain_until: datetime | None = None,
    legal_hold: bool = False,
    deleted: bool = False,
    size: int = 10,
) -> Candidate:
    return Candidate(
        file_id=f"{seq:032x}",
        seq=seq,
        key=key,
        size=size,
        content_type="application/octet-stream",
        metadata=metadata or {},
        tags=tags or {},
        created_at=NOW - timedelta(days=age_days),
        is_current=current,
        deleted=deleted,
        successor_created_at=None if replaced_days is None else NOW - timedelta(days=replaced_days),
        retain_until=retain_until,
        legal_hold=legal_hold,
    )


def plan(
    rules: list[dict[str, Any]], candidates: list[Candidate], now: datetime = NOW
) -> list[Any]:
    return evaluate(
        parse_rules(rules), candidates, now, retention_days=30, protected_tags=PROTECTED
    )


def checkpoints(jobs: int = 5, epochs: int = 20) -> list[Candidate]:
    out, seq = [], 0
    for epoch in range(epochs):  # uploaded epoch by epoch, every job in turn
        for job in range(jobs):
            seq += 1
            out.append(version(f"job_{job}/epoch_{epoch:03d}.ckpt", seq, age_days=epochs - epoch))
    return out


KEEP_LAST_3 = [{"id": "last3", "filter": {"key_pattern": "job_*/epoch_*.ckpt"},
                "keep_last": {"count": 3, "group_depth": 1}}]  # fmt: skip


# validation --------------------------------------------------------------------------
def test_valid_rules_are_kept_as_sent() -> None:
    raw = [
        {"id": "old", "filter": {"prefix": "tmp/", "min_size": 1}, "expire_days": 7},
        {"id": "best", "keep_top": {"field": "metrics.val_loss", "count": 5, "order": "lowest"}},
        {"id": "v", "keep_versions": 2, "filter": {"tags": {"stage": "ckpt"}}},
        {"id": "g", "keep_last": {"count": 3, "group_pattern": r"^(job_[^/]+)/"}},
    ]
    rules = parse_rules(raw)
    assert [r.id for r in rules] == ["old", "best", "v", "g"]
    assert [dict(r.raw) for r in rules] == raw
    assert parse_rules({"rules": raw}) == rules


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"id": "x"}, "must be a JSON list"),
        ([{"id": "x"}], "needs an action"),
        ([{"id": "bad id!", "expire_days": 1}], "'id' must be"),
        ([{"id": "x", "expire_days": 0}], "expire_days must be an integer from 1"),
        ([{"id": "x", "expire_days": True}], "expire_days must be an integer"),
        ([{"id": "x", "expire_days": 1}, {"id": "x", "expire_days": 2}], "unique"),
        ([{"id": DEFAULT_RULE_ID, "expire_days": 1}], "unique"),
        ([{"id": "x", "expire_days": 1, "colour": "red"}], "unknown field(s) colour"),
        ([{"id": "x", "keep_top": {"field": "a..b", "count": 1}}], "dotted path"),
        ([{"id": "x", "keep_top": {"field": "a", "count": 1, "order": "up"}}], "'lowest'"),
        ([{"id": "x", "keep_last": {"count": 0}}], "keep_last.count must be an integer"),
        ([{"id": "x", "keep_last": {"count": 1, "group_pattern": "("}}], "not a valid regex"),
        (
            [{"id": "x", "keep_last": {"count": 1, "group_depth": 1, "group_pattern": "a"}}],
            "not both",
        ),
        ([{"id": "x", "expire_days": 1, "filter": {"tags": {"a": 1}}}], "tags must be"),
        ([{"id": "x", "expire_days": 1, "filter": []}], "filter must be a JSON object"),
        ([{"id": "x", "expire_days": 1}] * 101, "at most 100"),
    ],
)
def test_bad_rules_are_refused_with_the_reason(raw: object, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_rules(raw)
    assert message in caught.value.message


def test_protected_tags_setting() -> None:
    assert parse_protected_tags(" protected=true, alias=prod ,") == PROTECTED
    with pytest.raises(ValueError, match="not key=value"):
        parse_protected_tags("protected")


def test_metadata_number() -> None:
    meta = {"metrics": {"val_loss": 0.25, "acc": "0.9", "flag": True, "name": "x"}}
    assert metadata_number(meta, "metrics.val_loss") == 0.25
    assert metadata_number(meta, "metrics.acc") == 0.9
    assert metadata_number(meta, "metrics.flag") is None
    assert metadata_number(meta, "metrics.name") is None
    assert metadata_number(meta, "metrics.missing") is None
    assert metadata_number(meta, "metrics.val_loss.deeper") is None


# evaluation --------------------------------------------------------------------------
def test_keep_last_3_per_job_expires_exactly_85_of_100() -> None:
    found = plan(KEEP_LAST_3, checkpoints())
    assert len(found) == 85
    assert {e.kind for e in found} == {"expire"} and {e.rule_id for e in found} == {"last3"}
    kept = {c.key for c in checkpoints()} - {e.key for e in found}
    assert kept == {f"job_{j}/epoch_{e:03d}.ckpt" for j in range(5) for e in (17, 18, 19)}
    assert "in group 'job_0'; keeping 3" in next(
        e.reason for e in found if e.key.startswith("job_0/")
    )


def test_protected_and_locked_objects_never_go_but_keep_their_rank() -> None:
    rows = checkpoints(jobs=1, epochs=6)
    rows[0] = version(rows[0].key, rows[0].seq, tags={"protected": "true"})
    rows[1] = version(rows[1].key, rows[1].seq, tags={"alias": "prod"})
    rows[2] = version(rows[2].key, rows[2].seq, retain_until=NOW + timedelta(days=1))
    assert plan(KEEP_LAST_3, rows) == []  # the 3 newest kept; the 3 oldest spared
    rows[2] = version(rows[2].key, rows[2].seq, retain_until=NOW - timedelta(seconds=1))
    assert [e.key for e in plan(KEEP_LAST_3, rows)] == [rows[2].key]  # the lock has ended


def test_a_key_with_a_locked_old_version_is_not_expired() -> None:
    rows = [
        version("a", 1, current=False, legal_hold=True, replaced_days=1),
        version("a", 2, age_days=100),
        version("b", 3, age_days=100),
    ]
    found = plan([{"id": "old", "expire_days": 30}], rows)
    assert [(e.key, e.kind, e.rule_id, e.reason) for e in found] == [
        ("b", "expire", "old", "older than 30 days")
    ]


def test_keep_top_keeps_exactly_the_k_best() -> None:
    losses = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8]
    rows = [
        version(f"m/{i}.pt", i + 1, metadata={"metrics": {"val_loss": loss}})
        for i, loss in enumerate(losses)
    ]
    rows.append(version("m/no-metric.pt", 100))
    rule = {"id": "best", "keep_top": {"field": "metrics.val_loss", "count": 3}}
    gone = {e.key for e in plan([rule], rows)}
    assert gone == {"m/0.pt", "m/2.pt", "m/4.pt", "m/6.pt"}  # all but 0.1, 0.2, 0.3
    rule["keep_top"]["order"] = "highest"  # type: ignore[index]
    gone = {e.key for e in plan([rule], rows)}
    assert gone == {"m/1.pt", "m/3.pt", "m/5.pt", "m/2.pt"}  # all but 0.9, 0.8, 0.7


def test_expire_days_with_filters() -> None:
    rows = [
        version("tmp/a", 1, age_days=10, tags={"kind": "scratch"}),
        version("tmp/b", 2, age_days=10),
        version("tmp/c", 3, age_days=3, tags={"kind": "scratch"}),
        version("keep/d", 4, age_days=10, tags={"kind": "scratch"}),
        version("tmp/e", 5, age_days=10, tags={"kind": "scratch"}, size=1),
    ]
    rule = {"id": "scratch", "expire_days": 7,
            "filter": {"prefix": "tmp/", "tags": {"kind": "scratch"}, "min_size": 5}}  # fmt: skip
    assert [e.key for e in plan([rule], rows)] == ["tmp/a"]


def test_keep_versions_and_the_default_rule() -> None:
    rows = [
        version("k", 1, current=False, replaced_days=40),
        version("k", 2, current=False, replaced_days=20),
        version("k", 3, current=False, replaced_days=10),
        version("k", 4),
    ]
    default = plan([], rows)
    assert [(e.seq, e.kind, e.rule_id) for e in default] == [(1, "delete_version", DEFAULT_RULE_ID)]
    found = plan([{"id": "two", "keep_versions": 2}], rows)
    assert [(e.seq, e.rule_id) for e in found] == [(1, "two"), (2, "two")]


def test_nothing_created_after_now_is_touched() -> None:
    # The clock went back: these rows look like they come from the future.
    rows = [version(f"f/{i}", i + 1, age_days=-1 - i) for i in range(5)]
    rows.append(version("k", 50, current=False, age_days=-5, replaced_days=100))
    rules = [{"id": "all", "expire_days": 1, "keep_last": {"count": 1}}]
    assert plan(rules, rows) == []


def test_deleted_keys_are_left_to_garbage_collection() -> None:
    rows = [version("gone", 1, age_days=100, deleted=True)]
    assert plan([{"id": "old", "expire_days": 1}], rows) == []


def test_group_pattern_leaves_unmatched_keys_alone() -> None:
    rows = [version(f"runs/job_{j}/e{i}", j * 10 + i + 1) for j in range(2) for i in range(3)]
    rows.append(version("runs/readme", 99, age_days=0.5))
    rule = {"id": "g", "keep_last": {"count": 1, "group_pattern": r"/(job_[^/]+)/"}}
    gone = sorted(e.key for e in plan([rule], rows))
    assert gone == ["runs/job_0/e0", "runs/job_0/e1", "runs/job_1/e0", "runs/job_1/e1"]


# properties ----------------------------------------------------------------------------
objects = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c/d", "c/e"]),  # group
        st.integers(min_value=0, max_value=50),  # name
        st.floats(min_value=-2, max_value=60),  # age in days
        st.booleans(),  # protected
        st.booleans(),  # locked
        st.one_of(st.none(), st.floats(min_value=0, max_value=10)),  # val_loss
    ),
    max_size=40,
    unique_by=lambda t: (t[0], t[1]),
)


def candidates_of(specs: list[Any]) -> list[Candidate]:
    return [
        version(
            f"{group}/{name}",
            seq,
            age_days=age,
            tags={"protected": "true"} if protected else {},
            retain_until=NOW + timedelta(days=1) if locked else None,
            metadata={} if loss is None else {"metrics": {"val_loss": loss}},
        )
        for seq, (group, name, age, protected, locked, loss) in enumerate(specs, start=1)
    ]


RULE_SETS = st.sampled_from(
    [
        [{"id": "last", "keep_last": {"count": 2, "group_depth": 2}}],
        [{"id": "top", "keep_top": {"field": "metrics.val_loss", "count": 2, "group_depth": 1}}],
        [{"id": "old", "expire_days": 30}],
        [{"id": "last", "keep_last": {"count": 1}}, {"id": "old", "expire_days": 10}],
    ]
)


@settings(max_examples=200, deadline=None)
@given(specs=objects, rules=RULE_SETS)
def test_plans_spare_what_must_stay_and_are_idempotent(specs: list[Any], rules: Any) -> None:
    rows = candidates_of(specs)
    found = plan(rules, rows)
    by_seq = {c.seq: c for c in rows}
    assert len({e.key for e in found}) == len(found)  # each key at most once
    for e in found:
        c = by_seq[e.seq]
        assert c.created_at <= NOW and not c.locked(NOW) and c.tags.get("protected") != "true"
    gone = {e.seq for e in found}
    remaining = [c for c in rows if c.seq not in gone]
    assert plan(rules, remaining) == []  # what is left is exactly what the rules keep


@settings(max_examples=200, deadline=None)
@given(specs=objects)
def test_keep_last_keeps_the_newest_n_of_every_group(specs: list[Any]) -> None:
    rows = candidates_of(specs)
    gone = {e.seq for e in plan([{"id": "l", "keep_last": {"count": 2, "group_depth": 1}}], rows)}
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for c in rows:
        groups[c.key.split("/")[0]].append(c)
    for members in groups.values():
        members.sort(key=lambda c: c.seq, reverse=True)
        newest = {c.seq for c in members[:2]}
        assert not newest & gone
        for c in members[2:]:
            spared = c.created_at > NOW or c.locked(NOW) or c.tags.get("protected") == "true"
            assert (c.seq in gone) != spared


def test_a_key_that_goes_whole_is_listed_once() -> None:
    rows = [
        version("k", 1, current=False, replaced_days=100, age_days=200),
        version("k", 2, age_days=100),
    ]
    found = plan([{"id": "old", "expire_days": 30, "keep_versions": 1}], rows)
    assert [(e.kind, e.seq) for e in found] == [("expire", 2)]


def test_archive_spares_protected_archived_and_expired_objects() -> None:
    rows = [
        version("a", 1, age_days=100),
        version("b", 2, age_days=100, tags={"alias": "prod"}),
        version("c", 3, age_days=5),
        version("d", 4, age_days=100, legal_hold=True),  # a lock forbids removal, not moving
        replace(version("e", 5, age_days=100), archived=True),
        version("gone/f", 6, age_days=400),
    ]
    rules = [
        {"id": "purge", "filter": {"prefix": "gone/"}, "expire_days": 365},
        {"id": "cold", "archive_days": 30},
    ]
    found = [(e.key, e.kind, e.rule_id) for e in plan(rules, rows)]
    assert found == [
        ("a", "archive", "cold"),
        ("d", "archive", "cold"),
        ("gone/f", "expire", "purge"),
    ]
