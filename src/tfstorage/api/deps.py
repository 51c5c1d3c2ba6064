"""Dependencies every route resolves: the storage services and the caller.

`get_caller` is the single place a request's identity is decided. Every route takes
`CallerDep` (a test walks the route table to make sure), so access control can fill
it in without touching the routes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tfstorage.domain.caller import Caller
from tfstorage.service.storage import Storage


def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


async def get_caller(request: Request) -> Caller:
    return Caller.anonymous()


StorageDep = Annotated[Storage, Depends(get_storage)]
CallerDep = Annotated[Caller, Depends(get_caller)]
