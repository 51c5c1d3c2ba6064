"""Bucket configuration (tags, CORS rules, object lock) and retention modes in the index,
on SQLite and PostgreSQL (issue 12)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from tests.index.builders import new_version
from tfstorage.domain.cors import CorsConfig, CorsRule
from tfstorage.domain.object_lock import (
    COMPLIANCE,
    GOVERNANCE,
    DefaultRetention,
    ObjectLockConfig,
    VersionLock,
)
from tfstorage.errors import (
    InvalidBucketState,
    InvalidRequest,
    NoSuchBucket,
    NoSuchKey,
    ObjectLocked,
)
from tfstorage.index import ObjectIndex
from tfstorage.index.bucket_config import BucketConfigIndex
from tfstorage.index.lifecycle import LifecycleIndex

pytestmark = pytest.mark.timeout(60)


def test_tags_and_cors_are_kept_with_the_bucket_and_go_with_it(index: ObjectIndex) -> None:
    config = BucketConfigIndex(index.engine)
    index.create_bucket("cfg")
    assert config.get_tags("cfg") is None
    assert config.get_cors("cfg") is None
    config.set_tags("cfg", {"team": "vision", "cost-centre": "é 42"})
    rules = CorsConfig(
        (
            CorsRule(("https://app.example",), ("GET", "PUT"), ("*",), ("ETag",), 600, "web"),
            CorsRule(("*",), ("GET",)),
        )
    )
    config.set_cors("cfg", rules)
    assert config.get_tags("cfg") == {"team": "vision", "cost-centre": "é 42"}
    assert config.get_cors("cfg") == rules
    config.set_tags("cfg", {})  # an empty tag set is a tag set, not "none"
    assert config.get_tags("cfg") == {}
    config.set_tags("cfg", None)
    config.set_cors("cfg", None)
    assert config.get_tags("cfg") is None
    assert config.get_cors("cfg") is None
    config.set_tags("cfg", {"a": "1"})
    index.delete_bucket("cfg", force=False)
    index.create_bucket("cfg")
    assert config.get_tags("cfg") is None  # a new bucket of the same name starts bare
    with pytest.raises(NoSuchBucket):
        config.set_tags("nope", {"a": "1"})
    with pytest.raises(NoSuchBucket):
        config.get_cors("nope")


def test_object_lock_needs_versioning_and_then_keeps_it(index: ObjectIndex) -> None:
    config = BucketConfigIndex(index.engine)
    index.create_bucket("plain", versioning=False)
    with pytest.raises(InvalidBucketState):
        config.set_object_lock("plain", ObjectLockConfig())
    assert config.get_object_lock("plain") is None
    index.create_bucket("locked")
    lock = ObjectLockConfig(DefaultRetention(GOVERNANCE, days=2))
    config.set_object_lock("locked", lock)
    assert config.get_object_lock("locked") == lock
    with pytest.raises(InvalidBucketState):
        index.update_bucket("locked", versioning=False)
    assert index.get_bucket("locked").versioning is True


def test_new_versions_take_the_default_retention_or_the_asked_lock(index: ObjectIndex) -> None:
    config = BucketConfigIndex(index.engine)
    index.create_bucket("locked")
    config.set_object_lock("locked", ObjectLockConfig(DefaultRetention(COMPLIANCE, days=3)))
    before = datetime.now(UTC)
    default = index.commit_version(new_version("locked", "a")).version
    assert default.retention_mode == COMPLIANCE
    assert default.retain_until is not None
    assert (
        before + timedelta(days=3) <= default.retain_until <= datetime.now(UTC) + timedelta(days=3)
    )
    until = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    asked = dataclasses.replace(
        new_version("locked", "b"), lock=VersionLock(GOVERNANCE, until, legal_hold=True)
    )
    version = index.commit_version(asked).version
    assert (version.retention_mode, version.retain_until, version.legal_hold) == (
        GOVERNANCE,
        until,
        True,
    )
    assert index.get_version(version.file_id).retain_until == until  # read back, not echoed
    # A lock asked of a bucket without object lock: refused, nothing recorded.
    index.create_bucket("plain")
    refused = dataclasses.replace(new_version("plain", "c"), lock=VersionLock(legal_hold=True))
    with pytest.raises(InvalidRequest):
        index.commit_version(refused)
    with pytest.raises(NoSuchKey):
        index.list_versions("plain", "c")


def test_governance_gives_way_to_a_bypass_compliance_never(index: ObjectIndex) -> None:
    index.create_bucket("locked")
    BucketConfigIndex(index.engine).set_object_lock("locked", ObjectLockConfig())
    lifecycle = LifecycleIndex(index.engine)
    until = datetime.now(UTC) + timedelta(days=30)
    gov = index.commit_version(new_version("locked", "gov")).version.file_id
    comp = index.commit_version(new_version("locked", "comp")).version.file_id
    lifecycle.set_retention(gov, retain_until=until, legal_hold=None, mode=GOVERNANCE)
    lifecycle.set_retention(comp, retain_until=until, legal_hold=None, mode=COMPLIANCE)
    shorter = until - timedelta(days=10)
    for file_id in (gov, comp):
        with pytest.raises(ObjectLocked):
            lifecycle.set_retention(file_id, retain_until=shorter, legal_hold=None)
        with pytest.raises(ObjectLocked):
            index.delete_version(file_id)
    # GOVERNANCE: no mode change without the bypass; with it, shortened and deletable.
    with pytest.raises(ObjectLocked):
        lifecycle.set_retention(gov, retain_until=until, legal_hold=None, mode=COMPLIANCE)
    state = lifecycle.set_retention(
        gov, retain_until=shorter, legal_hold=None, mode=GOVERNANCE, bypass_governance=True
    )
    assert (state.mode, state.retain_until) == (GOVERNANCE, shorter)
    # COMPLIANCE: the bypass changes nothing.
    with pytest.raises(ObjectLocked):
        lifecycle.set_retention(
            comp, retain_until=shorter, legal_hold=None, mode=COMPLIANCE, bypass_governance=True
        )
    with pytest.raises(ObjectLocked):
        index.delete_version(comp, bypass_governance=True)
    # A legal hold holds whatever the mode.
    lifecycle.set_retention(gov, retain_until=None, legal_hold=True)
    with pytest.raises(ObjectLocked):
        index.delete_version(gov, bypass_governance=True)
    lifecycle.set_retention(gov, retain_until=None, legal_hold=False)
    index.delete_version(gov, bypass_governance=True)
    with pytest.raises(NoSuchKey):
        index.list_versions("locked", "gov")
    assert lifecycle.get_retention(comp).mode == COMPLIANCE


def test_a_lock_from_before_modes_is_kept_as_compliance(index: ObjectIndex) -> None:
    index.create_bucket("old")
    lifecycle = LifecycleIndex(index.engine)
    file_id = index.commit_version(new_version("old", "k")).version.file_id
    until = datetime.now(UTC) + timedelta(days=5)
    lifecycle.set_retention(file_id, retain_until=until, legal_hold=None)  # the REST door
    assert lifecycle.get_retention(file_id).mode is None
    with pytest.raises(ObjectLocked):
        index.delete_version(file_id, bypass_governance=True)
    with pytest.raises(ObjectLocked):
        lifecycle.set_retention(
            file_id, retain_until=until, legal_hold=None, mode=GOVERNANCE, bypass_governance=True
        )


def test_only_a_governance_retention_is_removed_and_only_with_the_bypass(
    index: ObjectIndex,
) -> None:
    index.create_bucket("locked")
    lifecycle = LifecycleIndex(index.engine)
    until = datetime.now(UTC) + timedelta(days=30)
    gov = index.commit_version(new_version("locked", "gov")).version.file_id
    comp = index.commit_version(new_version("locked", "comp")).version.file_id
    lifecycle.set_retention(gov, retain_until=until, legal_hold=None, mode=GOVERNANCE)
    lifecycle.set_retention(comp, retain_until=until, legal_hold=None, mode=COMPLIANCE)
    with pytest.raises(ObjectLocked):
        lifecycle.set_retention(gov, retain_until=None, legal_hold=None, clear_retention=True)
    with pytest.raises(ObjectLocked):
        lifecycle.set_retention(
            comp, retain_until=None, legal_hold=None, clear_retention=True, bypass_governance=True
        )
    state = lifecycle.set_retention(
        gov, retain_until=None, legal_hold=None, clear_retention=True, bypass_governance=True
    )
    assert (state.retain_until, state.mode, state.locked) == (None, None, False)
    index.delete_version(gov)
    assert lifecycle.get_retention(comp).retain_until == until
