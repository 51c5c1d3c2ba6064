"""Recording who did what, from where, after an operation succeeded."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from tfstorage.api.errors import request_id
from tfstorage.domain.caller import Caller
from tfstorage.service.storage import Storage


async def audit(
    request: Request, storage: Storage, caller: Caller, action: str, **fields: Any
) -> None:
    client = request.client.host if request.client else None
    await storage.access.record(
        caller, action, client=client, request_id=request_id(request), **fields
    )


async def audit_many(
    request: Request, storage: Storage, caller: Caller, action: str, entries: list[dict[str, Any]]
) -> None:
    """One action on many objects, recorded in one transaction."""
    client = request.client.host if request.client else None
    common = {"client": client, "request_id": request_id(request)}
    await storage.access.record_many(caller, action, [common | e for e in entries])
