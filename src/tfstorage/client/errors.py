"""The SDK's exceptions: one class per error code the server answers with.

Every server error body is `{"error", "code", "request_id"}`; `error_from_response`
turns it into the class registered for its code (or, for a code this SDK does not know
yet, the class of its HTTP status). Transport failures and client-side checks (a
download whose checksum does not match) have their own classes under the same base.
"""

from __future__ import annotations

from typing import ClassVar

import httpx


class TFStorageError(Exception):
    """Base of every SDK error: `status` (0 when no HTTP answer), `code`, `message`,
    `request_id` (the server's, when it answered)."""

    code: ClassVar[str] = "Error"

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id
        self.retry_after: str | None = None  # the server's Retry-After, when it sent one
        if code is not None:
            self.code = code  # type: ignore[misc]  # an unknown code keeps its own name

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# Client-side failures ------------------------------------------------------------------
class TransportError(TFStorageError):
    """The server could not be reached, or the connection broke (after the retries)."""

    code = "TransportError"


class ChecksumMismatch(TFStorageError):
    """Bytes received or stored do not match their expected checksum; nothing was kept."""

    code = "ChecksumMismatch"


class IncompleteDownload(TFStorageError):
    """The download ended before its declared length (the partial file is kept for resume)."""

    code = "IncompleteDownload"


class ConfigurationError(TFStorageError):
    """No usable server URL or token configuration."""

    code = "ConfigurationError"


# Mirrors of the server's codes (src/tfstorage/errors.py) -------------------------------
class ServerError(TFStorageError):
    """The server answered 5xx."""

    code = "InternalError"


class InvalidRequest(TFStorageError):
    code = "InvalidRequest"


class InvalidArgument(InvalidRequest):
    code = "InvalidArgument"


class InvalidBucketName(InvalidRequest):
    code = "InvalidBucketName"


class InvalidObjectName(InvalidRequest):
    code = "InvalidObjectName"


class KeyTooLong(InvalidObjectName):
    code = "KeyTooLong"


class BadDigest(InvalidRequest):
    code = "BadDigest"


class InvalidDigest(InvalidRequest):
    code = "InvalidDigest"


class IncompleteBody(InvalidRequest):
    code = "IncompleteBody"


class MalformedPOSTRequest(InvalidRequest):
    code = "MalformedPOSTRequest"


class MissingFile(InvalidRequest):
    code = "MissingFile"


class InvalidMetadata(InvalidRequest):
    code = "InvalidMetadata"


class MetadataTooLarge(InvalidMetadata):
    code = "MetadataTooLarge"


class InvalidPolicyDocument(InvalidRequest):
    code = "InvalidPolicyDocument"


class InvalidTag(InvalidRequest):
    code = "InvalidTag"


class InvalidPart(InvalidRequest):
    code = "InvalidPart"


class InvalidPartOrder(InvalidRequest):
    code = "InvalidPartOrder"


class EntityTooSmall(InvalidRequest):
    code = "EntityTooSmall"


class RequestTimeout(TFStorageError):
    code = "RequestTimeout"


class Unauthenticated(TFStorageError):
    code = "Unauthenticated"


class AccessDenied(TFStorageError):
    code = "AccessDenied"


class QuotaExceeded(AccessDenied):
    code = "QuotaExceeded"


class ObjectLocked(AccessDenied):
    """A retention date or a legal hold forbids deleting or overwriting this version."""

    code = "ObjectLocked"


class NotFound(TFStorageError, FileNotFoundError):
    """Something named does not exist (also a `FileNotFoundError`)."""

    code = "NotFound"


class NoSuchBucket(NotFound):
    code = "NoSuchBucket"


class NoSuchKey(NotFound):
    code = "NoSuchKey"


class NoSuchVersion(NotFound):
    code = "NoSuchVersion"


class NoSuchUpload(NotFound):
    code = "NoSuchUpload"


class NoSuchToken(NotFound):
    code = "NoSuchToken"


class NoSuchJob(NotFound):
    code = "NoSuchJob"


class MethodNotAllowed(TFStorageError):
    code = "MethodNotAllowed"


class Conflict(TFStorageError):
    code = "Conflict"


class BucketAlreadyExists(Conflict):
    code = "BucketAlreadyExists"


class BucketNotEmpty(Conflict):
    code = "BucketNotEmpty"


class ScrubInProgress(Conflict):
    code = "ScrubInProgress"


class InvalidBucketState(Conflict):
    code = "InvalidBucketState"


class MissingContentLength(TFStorageError):
    code = "MissingContentLength"


class PreconditionFailed(TFStorageError):
    code = "PreconditionFailed"


class EntityTooLarge(TFStorageError):
    code = "EntityTooLarge"


class RequestTooLarge(TFStorageError):
    code = "RequestTooLarge"


class UnsupportedFileType(TFStorageError):
    code = "UnsupportedFileType"


class InvalidRange(TFStorageError):
    code = "InvalidRange"


class InternalError(ServerError):
    code = "InternalError"


class ObjectCorrupted(ServerError):
    code = "ObjectCorrupted"


class ServiceUnavailable(ServerError):
    code = "ServiceUnavailable"


class SlowDown(ServiceUnavailable):
    code = "SlowDown"


class InsufficientStorage(ServerError):
    code = "InsufficientStorage"


def _subclasses(cls: type[TFStorageError]) -> list[type[TFStorageError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


#: code -> class, for every server code this SDK knows.
ERROR_CLASSES: dict[str, type[TFStorageError]] = {
    c.code: c
    for c in _subclasses(TFStorageError)
    if c not in (TransportError, ChecksumMismatch, IncompleteDownload, ConfigurationError)
}
ERROR_CLASSES["InternalError"] = InternalError

_BY_STATUS: dict[int, type[TFStorageError]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    403: AccessDenied,
    404: NotFound,
    405: MethodNotAllowed,
    408: RequestTimeout,
    409: Conflict,
    411: MissingContentLength,
    412: PreconditionFailed,
    413: EntityTooLarge,
    415: UnsupportedFileType,
    416: InvalidRange,
    503: ServiceUnavailable,
    507: InsufficientStorage,
}


def error_from_response(response: httpx.Response) -> TFStorageError:
    """The exception for an error answer (the response body must have been read)."""
    code: str | None = None
    message = f"HTTP {response.status_code}"
    request_id = response.headers.get("x-request-id")
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = body.get("code") if isinstance(body.get("code"), str) else None
        if isinstance(body.get("error"), str):
            message = body["error"]
        elif isinstance(body.get("detail"), str):
            message = body["detail"]
        request_id = body.get("request_id") or request_id
    cls = ERROR_CLASSES.get(code or "") or _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = ServerError if response.status_code >= 500 else TFStorageError
    error = cls(message, status=response.status_code, code=code, request_id=request_id)
    error.retry_after = response.headers.get("retry-after")
    return error
