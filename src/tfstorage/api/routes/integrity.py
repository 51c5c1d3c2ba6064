"""Integrity: verify one file's stored bytes, run and read the scrub (issue 6)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from tfstorage.api.audit import audit
from tfstorage.api.deps import CallerDep, StorageDep, authorize, visible_version
from tfstorage.api.schemas import MAX_INT
from tfstorage.errors import ScrubInProgress
from tfstorage.service.integrity import Digest

router = APIRouter(tags=["integrity"])


def _digest(d: Digest | None) -> dict[str, Any] | None:
    return None if d is None else {"md5": d.md5, "sha256": d.sha256, "size": d.size}


@router.post("/api/v1/files/{file_id}/verify")
async def verify_file(
    request: Request, file_id: str, storage: StorageDep, caller: CallerDep
) -> dict[str, Any]:
    """Re-read the version's stored bytes and compare MD5, SHA-256 and size with the
    index. Damage found marks the blob (downloads then refuse it); with a replica
    holding a good copy, the damaged copy is rewritten from it (`repaired`). `ok` says
    whether the stored bytes match the index now. `damaged_blocks` names the blocks
    whose CRC32C does not match (index, byte offsets); a blob recorded before block
    checksums gets them here when its bytes are intact (`blocks_recorded`)."""
    version = await visible_version(storage, caller, file_id, "read")
    verdict = await storage.integrity.verify_version(version)
    # The index's checksums, or those this verification has just recorded.
    blocks = verdict.blob.blocks or (verdict.primary.blocks if verdict.blocks_recorded else None)
    body: dict[str, Any] = {
        "file_id": version.file_id,
        "bucket": version.bucket,
        "key": version.key,
        "ok": verdict.ok,
        "status": verdict.primary.status,
        "size": version.size,
        "expected": {"md5": version.etag, "sha256": version.sha256, "size": version.size},
        "actual": _digest(verdict.primary.actual),
        "repaired": verdict.repaired,
        # Block checksums (issue 10): the damaged blocks by index, with their byte
        # offsets [start, end); whether this verification recorded missing checksums.
        "block_size": blocks.block_size if blocks else None,
        "damaged_blocks": [b.as_dict() for b in verdict.damaged_blocks],
        "damaged_block_count": verdict.damaged_block_count,
        "blocks_recorded": verdict.blocks_recorded,
    }
    if verdict.replica is not None:
        body["replica"] = {"status": verdict.replica, "repaired": verdict.replica_repaired}
    if not verdict.ok or verdict.repaired or verdict.replica_repaired:
        # Damage found, or stored bytes rewritten: worth a line in the audit log.
        await audit(
            request, storage, caller, "verify", bucket=version.bucket, key=version.key,
            file_id=version.file_id, status=verdict.primary.status, repaired=verdict.repaired,
            replica=body.get("replica"),
        )  # fmt: skip
    return body


@router.post("/api/v1/scrub/run")
async def run_scrub(
    storage: StorageDep,
    caller: CallerDep,
    limit: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
    wait: bool = False,
) -> JSONResponse:
    """Scrub now (admin): go on with the pass under way or start one. `limit` stops after
    that many blobs (the cursor keeps the place); `wait=true` answers with the report
    when done, otherwise the pass runs in the background (202)."""
    await authorize(storage, caller, "admin")
    scrubber = storage.scrubber
    if not wait:
        started = scrubber.start_pass(limit=limit)
        return JSONResponse({"started": started, "running": True}, status_code=202)
    report = await scrubber.run_pass(limit=limit)
    if report is None:
        raise ScrubInProgress()
    return JSONResponse(report)


@router.get("/api/v1/scrub")
async def scrub_status(storage: StorageDep, caller: CallerDep) -> dict[str, Any]:
    """The scrub (admin): the pass under way, the last finished one, and every blob
    marked damaged now with the versions it holds."""
    await authorize(storage, caller, "admin")
    return await storage.scrubber.status()
