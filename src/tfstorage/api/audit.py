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
