"""Dependencies every route resolves: the storage services and the caller.

`get_caller` is the single place a request's identity is decided (a test walks the
route table to make sure every route takes `CallerDep`). Routes then ask `authorize`
for the scope their operation needs, before they look anything up, so that a 403
never reveals whether an object exists.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tfstorage.domain.caller import Caller
from tfstorage.domain.records import ObjectVersion
from tfstorage.errors import AccessDenied, NoSuchVersion, StorageError, Unauthenticated
from tfstorage.service.access import SIGNATURE_PARAMS
from tfstorage.service.authorization import authorize as authorize
from tfstorage.service.storage import Storage

# Tokens travel only in the Authorization header: query strings end up in logs,
# browser history and Referer headers.
_QUERY_TOKEN_NAMES = ("token", "access_token", "api_key", "apikey", "auth")
_PRESIGNABLE = {
    "GET": "/api/v1/download/",
    "HEAD": "/api/v1/download/",
    "PUT": "/api/v1/objects/",
}


def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


# Declares the bearer scheme in the OpenAPI document (so /docs has an Authorize button
# and "Try it out" sends the header); the header itself is parsed by `_resolve_caller`.
_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API token: `Authorization: Bearer <token>` (see `tfstorage token`).",
)


async def get_caller(
    request: Request,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
) -> Caller:
    return await _identify(request)


async def _identify(request: Request) -> Caller:
    caller = await _resolve_caller(request)
    # For the access log: the token's name, never its secret.
    request.state.caller_name = None if caller.anonymous else caller.name
    request.state.caller = caller  # for `refusal_before_validation`
    return caller


async def refusal_before_validation(request: Request) -> StorageError | None:
    """The answer a request gets before its input is judged malformed, if any.

    FastAPI validates bodies and parameters before a route can call `authorize`, so a
    caller without a token would otherwise learn what a route expects. A bad token
    (or a token in the URL, a bad signature) is refused as such; an anonymous caller
    gets 401 unless the request is one anonymous callers may make: a read of a
    public-read bucket. None: judge the input.
    """
    try:
        caller = getattr(request.state, "caller", None)
        if not isinstance(caller, Caller):
            caller = await _identify(request)  # the body was refused before the dependencies ran
    except StorageError as exc:
        return exc
    if not caller.anonymous or await _public_read(request):
        return None
    return Unauthenticated("a token is required", headers={"WWW-Authenticate": "Bearer"})


async def _public_read(request: Request) -> bool:
    if request.method not in ("GET", "HEAD"):
        return False
    storage = get_storage(request)
    bucket = request.path_params.get("bucket")
    if request.url.path.startswith("/api/v1/buckets/"):
        bucket = request.path_params.get("name")  # the bucket's own routes
    elif bucket is None and "filename" in request.path_params:
        bucket = storage.settings.default_bucket  # the legacy download route
    return isinstance(bucket, str) and await storage.buckets.is_public_read(bucket)


async def _resolve_caller(request: Request) -> Caller:
    storage = get_storage(request)
    if not storage.access.enabled:
        return Caller.unrestricted()
    query = request.query_params
    if any(name in query for name in _QUERY_TOKEN_NAMES):
        raise Unauthenticated(
            "tokens are accepted only in the Authorization header, never in the URL",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if "X-Tfs-Signature" in query:
        bucket = request.path_params.get("bucket")
        key = request.path_params.get("key")
        path = request.url.path
        # A signature covers exactly its method, bucket and key on the download or upload
        # route: not the version listing, not another version (?version_id=).
        on_object_route = path.startswith(_PRESIGNABLE.get(request.method, "\0"))
        extra = set(query) - set(SIGNATURE_PARAMS)
        if not isinstance(bucket, str) or not isinstance(key, str) or not on_object_route or extra:
            raise AccessDenied("a presigned URL grants only its own download or upload")
        params = {name: query[name] for name in SIGNATURE_PARAMS if name in query}
        return await storage.access.verify_presigned(request.method, bucket, key, params)
    header = request.headers.get("authorization")
    if header is None:
        return Caller.nobody()
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated(
            "the Authorization header must be 'Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        return await storage.access.authenticate(secret.strip())
    except Unauthenticated as exc:
        exc.headers.setdefault("WWW-Authenticate", 'Bearer error="invalid_token"')
        raise


async def _storage(request: Request) -> Storage:
    # `async`: FastAPI runs a plain `def` dependency in a worker thread, a hop on every
    # request for an attribute read.
    return get_storage(request)


async def storage_and_caller(request: Request) -> tuple[Storage, Caller]:
    """StorageDep and CallerDep without FastAPI's dependency solving, for the routes
    that carry nearly every request (PUT, GET and HEAD of an object): solving the two,
    with the bearer scheme under the caller, cost about a fifth of a HEAD's CPU. Such
    a route declares the scheme for the OpenAPI document with BEARER_ONLY."""
    return get_storage(request), await _identify(request)


# The security requirement an operation with CallerDep gets from the bearer scheme.
BEARER_ONLY: dict[str, Any] = {"security": [{"bearer": []}]}
StorageDep = Annotated[Storage, Depends(_storage)]
CallerDep = Annotated[Caller, Depends(get_caller)]


_FILE_ID = re.compile(r"[0-9a-f]{32}")


async def visible_version(
    storage: Storage, caller: Caller, file_id: str, scope: str
) -> ObjectVersion:
    """The version, if this caller may see it; else the same answer as for no version,
    so ids of objects in other buckets reveal nothing."""
    if not _FILE_ID.fullmatch(file_id):
        if caller.anonymous:
            raise Unauthenticated("a token is required", headers={"WWW-Authenticate": "Bearer"})
        raise NoSuchVersion(file_id[:64])  # not an id: names nothing
    try:
        version = await storage.reader.by_id(file_id)
        await authorize(storage, caller, "read", version.bucket, version.key)
    except (NoSuchVersion, AccessDenied, Unauthenticated):
        if caller.anonymous:
            raise Unauthenticated(
                "a token is required", headers={"WWW-Authenticate": "Bearer"}
            ) from None
        raise NoSuchVersion(file_id) from None
    if scope != "read":
        await authorize(storage, caller, scope, version.bucket, version.key)
    return version
