"""Lifecycle rules per bucket, lifecycle runs, and retention locks of versions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, ConfigDict

from tfstorage.api.audit import audit
from tfstorage.api.deps import CallerDep, StorageDep, authorize, visible_version
from tfstorage.api.errors import request_id
from tfstorage.api.schemas import StoredText
from tfstorage.domain.lifecycle import DEFAULT_RULE_ID
from tfstorage.errors import InvalidArgument
from tfstorage.index.lifecycle import Retention
from tfstorage.service.lifecycle import RunReport
from tfstorage.service.storage import Storage

router = APIRouter(prefix="/api/v1", tags=["lifecycle"])


class LifecycleRules(BaseModel):
    bucket: str
    rules: list[dict[str, Any]]
    # Always on: non-current versions go RETENTION_DAYS after they were replaced (and
    # garbage collection purges deleted keys after as long).
    default_rule: dict[str, Any]
    protected_tags: list[str]


class RunAction(BaseModel):
    bucket: str
    key: str
    file_id: str
    action: str
    rule: str
    reason: str
    size: int


class RunResponse(BaseModel):
    run_id: str
    dry_run: bool
    # done | capped (stopped at LIFECYCLE_MAX_DELETIONS_PER_RUN) | busy (another instance
    # holds the runners' lease, or took it over from this run: it stopped)
    status: str
    count: int
    bytes: int
    skipped: int
    actions: list[RunAction]

    @classmethod
    def of(cls, report: RunReport) -> RunResponse:
        return cls(
            run_id=report.run_id,
            dry_run=report.dry_run,
            status=report.status,
            count=len(report.actions),
            bytes=report.bytes,
            skipped=report.skipped,
            actions=[RunAction.model_validate(a, from_attributes=True) for a in report.actions],
        )


class RetentionChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retain_until: datetime | None = None
    legal_hold: bool | None = None


class RetentionInfo(BaseModel):
    file_id: str
    bucket: str
    key: str
    retain_until: datetime | None
    legal_hold: bool
    locked: bool
    # S3's retention mode when set over S3 (GOVERNANCE, COMPLIANCE); null: set here, kept
    # as COMPLIANCE (extended, never shortened).
    mode: str | None = None

    @classmethod
    def of(cls, r: Retention) -> RetentionInfo:
        return cls(file_id=r.file_id, bucket=r.bucket, key=r.key, retain_until=r.retain_until,
                   legal_hold=r.legal_hold, locked=r.locked, mode=r.mode)  # fmt: skip


def _rules_response(storage: Storage, bucket: str, rules: list[dict[str, Any]]) -> LifecycleRules:
    lifecycle = storage.lifecycle
    return LifecycleRules(
        bucket=bucket,
        rules=rules,
        default_rule={"id": DEFAULT_RULE_ID, "noncurrent_days": storage.settings.retention_days},
        protected_tags=[f"{k}={v}" for k, v in lifecycle.protected_tags],
    )


@router.get("/buckets/{name}/lifecycle")
async def get_lifecycle(name: str, storage: StorageDep, caller: CallerDep) -> LifecycleRules:
    """The bucket's lifecycle rules (an empty list: only the default rule applies)."""
    await authorize(storage, caller, "read", name)
    await storage.buckets.get(name)
    return _rules_response(storage, name, await storage.lifecycle.get_rules(name))


@router.put("/buckets/{name}/lifecycle")
async def put_lifecycle(
    name: str,
    request: Request,
    storage: StorageDep,
    caller: CallerDep,
    rules: Annotated[Any, Body(description='a list of rules, or {"rules": [...]}')],
) -> LifecycleRules:
    """Replace the bucket's lifecycle rules (validated: 400 with the reason). Needs `admin`."""
    await authorize(storage, caller, "admin", name)
    stored = await storage.lifecycle.set_rules(name, rules)
    await audit(request, storage, caller, "lifecycle_set", bucket=name, rules=len(stored))
    return _rules_response(storage, name, stored)


@router.delete("/buckets/{name}/lifecycle")
async def delete_lifecycle(
    name: str, request: Request, storage: StorageDep, caller: CallerDep
) -> dict[str, Any]:
    """Remove the bucket's rules (the default rule stays). Needs `admin`."""
    await authorize(storage, caller, "admin", name)
    deleted = await storage.lifecycle.delete_rules(name)
    await audit(request, storage, caller, "lifecycle_delete", bucket=name)
    return {"success": True, "bucket": name, "deleted": deleted}


@router.post("/lifecycle/run")
async def run_lifecycle(
    request: Request,
    storage: StorageDep,
    caller: CallerDep,
    dry_run: bool = False,
    bucket: Annotated[StoredText | None, Query(max_length=63)] = None,
) -> RunResponse:
    """Run the rules now over one bucket or all; `dry_run` lists what would go and why.
    Needs `admin`."""
    await authorize(storage, caller, "admin", bucket)
    report = await storage.lifecycle.run(
        bucket=bucket,
        dry_run=dry_run,
        actor=f"lifecycle (run by {caller.name})",
        token_id=caller.token_id,
        request_id=request_id(request),
    )
    return RunResponse.of(report)


@router.get("/files/{file_id}/retention")
async def get_retention(file_id: str, storage: StorageDep, caller: CallerDep) -> RetentionInfo:
    """The version's retention date and legal hold."""
    await visible_version(storage, caller, file_id, "read")
    return RetentionInfo.of(await storage.lifecycle.retention(file_id))


@router.put("/files/{file_id}/retention")
async def put_retention(
    file_id: str, change: RetentionChange, request: Request, storage: StorageDep, caller: CallerDep
) -> RetentionInfo:
    """Lock a version: `retain_until` (can be extended, never shortened) and/or
    `legal_hold` (set or cleared). Needs `write` on the version's bucket; clearing a
    legal hold needs `admin` (else whoever may write and delete could lift it, then
    delete)."""
    version = await visible_version(storage, caller, file_id, "write")
    if change.legal_hold is False:
        await authorize(storage, caller, "admin", version.bucket)
    until = change.retain_until
    if until is not None and until.tzinfo is None:
        raise InvalidArgument("retain_until must carry a time zone, e.g. 2027-01-01T00:00:00Z")
    state = await storage.lifecycle.set_retention(
        file_id, retain_until=until, legal_hold=change.legal_hold
    )
    await audit(
        request,
        storage,
        caller,
        "retention",
        bucket=version.bucket,
        key=version.key,
        file_id=file_id,
        retain_until=None if state.retain_until is None else state.retain_until.isoformat(),
        legal_hold=state.legal_hold,
    )
    return RetentionInfo.of(state)
