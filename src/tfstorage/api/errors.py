"""The one place errors become HTTP responses: JSON, a stable code, the request id."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from tfstorage.api.deps import refusal_before_validation
from tfstorage.errors import IncompleteBody, InternalError, InvalidArgument, StorageError

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


# Answers that judge the request's input: a caller who may not make the request at all
# is told that first (routes may parse before they call `authorize`).
_INPUT_STATUSES = frozenset({400, 411, 413, 415})


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StorageError)
    if exc.status in _INPUT_STATUSES:
        refusal = await refusal_before_validation(request)
        if refusal is not None:
            return error_response(request, refusal)
    if exc.status >= 500:
        log.warning("%s: %s (request %s)", exc.code, exc.message, request_id(request))
    return error_response(request, exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    refusal = await refusal_before_validation(request)
    if refusal is not None:
        return error_response(request, refusal)
    problems = [_describe(err, request) for err in exc.errors()[:5]]
    return error_response(request, InvalidArgument("; ".join(problems) or "invalid request"))


def _describe(err: Any, request: Request) -> str:
    loc = tuple(err.get("loc", ()))
    msg = str(err.get("msg", "invalid"))
    if err.get("type") == "json_invalid":
        return f"body: not valid JSON ({err.get('ctx', {}).get('error', msg)})"
    if loc != ("body",):
        return f"{'.'.join(str(p) for p in loc if p != 'body')}: {msg}"
    # The whole body is wrong (a form, a query string or nothing instead of JSON):
    # pydantic names no field, so say what the route expects and what came.
    expected = _expected_body(request)
    if err.get("type") == "missing":
        hint = " (query parameters are not read for it)" if request.query_params else ""
        return f"body: required: {expected}{hint}"
    sent = request.headers.get("content-type") or "a body without Content-Type"
    return f"body: expected {expected}, got {sent}"


def _expected_body(request: Request) -> str:
    route = request.scope.get("route")
    field = getattr(route, "body_field", None)
    annotation = getattr(getattr(field, "field_info", None), "annotation", None)
    json = "Content-Type: application/json"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = annotation.model_fields
        required = [f.alias or name for name, f in fields.items() if f.is_required()]
        optional = [f.alias or name for name, f in fields.items() if not f.is_required()]
        described = ", ".join(required) or "no required fields"
        if optional:
            described += f" (optional: {', '.join(optional)})"
        return f"a JSON object ({json}) with the fields {described}"
    return f"a JSON body ({json})"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in _INPUT_STATUSES:
        refusal = await refusal_before_validation(request)
        if refusal is not None:
            return error_response(request, refusal)
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
