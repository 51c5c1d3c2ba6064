"""The one place errors become HTTP responses: JSON, a stable code, the request id."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from tfstorage.errors import IncompleteBody, InternalError, StorageError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "InvalidRequest",
    401: "Unauthenticated",
    403: "AccessDenied",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "RequestTooLarge",
    415: "UnsupportedMediaType",
}


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def error_response(request: Request, exc: StorageError) -> JSONResponse:
    metrics = getattr(request.app.state, "storage", None)
    if metrics is not None:
        metrics.ctx.metrics.errors.labels(code=exc.code).inc()
    return JSONResponse(
        {"error": exc.message, "code": exc.code, "request_id": request_id(request)},
        status_code=exc.status,
        headers=exc.headers,
    )


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StorageError)
    if exc.status >= 500:
        log.warning("%s: %s (request %s)", exc.code, exc.message, request_id(request))
    return error_response(request, exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    from tfstorage.errors import InvalidArgument

    return error_response(request, InvalidArgument("; ".join(problems) or "invalid request"))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error = StorageError(str(exc.detail), headers=dict(exc.headers or {}))
    error.status = exc.status_code  # type: ignore[misc]
    error.code = _HTTP_CODES.get(exc.status_code, "InvalidRequest")  # type: ignore[misc]
    return error_response(request, error)


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    # Nobody is listening any more; the answer matters only for logs and metrics.
    return error_response(request, IncompleteBody("the client disconnected mid-request"))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error (request %s)", request_id(request))
    return error_response(request, InternalError())


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
