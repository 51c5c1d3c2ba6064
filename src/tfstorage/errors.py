"""The one error tree. Each class carries its HTTP status and a stable code.

Codes follow S3's names where S3 has one. Messages are for humans and never carry a
file system path, SQL, a stack trace or a secret; the API's single handler turns any
`StorageError` into `{"error": message, "code": code, "request_id": ...}`.
"""

from __future__ import annotations

from typing import ClassVar


class StorageError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "InternalError"
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None):
        self.message = message or self.default_message
        self.headers = headers or {}
        super().__init__(self.message)


class InternalError(StorageError):
    pass


# 400 ----------------------------------------------------------------------------------
class InvalidRequest(StorageError):
    status = 400
    code = "InvalidRequest"
    default_message = "invalid request"


class InvalidArgument(InvalidRequest):
    code = "InvalidArgument"
    default_message = "invalid argument"


class InvalidBucketName(InvalidRequest):
    code = "InvalidBucketName"
    default_message = "invalid bucket name"


class InvalidObjectName(InvalidRequest):
    code = "InvalidObjectName"
    default_message = "invalid object key"


class KeyTooLong(InvalidObjectName):
    code = "KeyTooLong"
    default_message = "object key is longer than 1024 bytes"


class BadDigest(InvalidRequest):
    code = "BadDigest"
    default_message = "the checksum sent does not match the data received"


class InvalidDigest(InvalidRequest):
    code = "InvalidDigest"
    default_message = "the checksum header is malformed"


class IncompleteBody(InvalidRequest):
    code = "IncompleteBody"
    default_message = "the request body ended before the declared length"


class MalformedMultipart(InvalidRequest):
    code = "MalformedPOSTRequest"
    default_message = "the multipart body is malformed"


class InvalidPolicyDocument(InvalidRequest):
    """An S3 POST policy that is not a well-formed policy document."""

    code = "InvalidPolicyDocument"
    default_message = "Invalid Policy"


class MissingFile(InvalidRequest):
    code = "MissingFile"
    default_message = "no file was sent (expected a multipart field named 'file')"


class InvalidMetadata(InvalidRequest):
    code = "InvalidMetadata"
    default_message = "metadata must be a JSON object"


class MetadataTooLarge(InvalidMetadata):
    code = "MetadataTooLarge"
    default_message = "metadata is larger than allowed"


class InvalidTag(InvalidRequest):
    code = "InvalidTag"
    default_message = "tags must be key=value pairs"


class InvalidPart(InvalidRequest):
    code = "InvalidPart"
    default_message = "a listed part was not uploaded or its etag does not match"


class InvalidPartOrder(InvalidRequest):
    code = "InvalidPartOrder"
    default_message = "the parts must be listed in ascending order of part number"


class EntityTooSmall(InvalidRequest):
    code = "EntityTooSmall"
    default_message = "every part but the last must be at least the minimum part size"


class RequestTimeout(StorageError):
    status = 408
    code = "RequestTimeout"
    default_message = "the request body was not received in time"


# 401 / 403 ----------------------------------------------------------------------------
class Unauthenticated(StorageError):
    status = 401
    code = "Unauthenticated"
    default_message = "a valid token is required"


class AccessDenied(StorageError):
    status = 403
    code = "AccessDenied"
    default_message = "access denied"


class QuotaExceeded(StorageError):
    status = 403
    code = "QuotaExceeded"
    default_message = "the bucket's quota would be exceeded"


# 404 ----------------------------------------------------------------------------------
class NotFound(StorageError):
    status = 404
    code = "NotFound"
    default_message = "not found"


class NoSuchBucket(NotFound):
    code = "NoSuchBucket"
    default_message = "the bucket does not exist"

    def __init__(self, bucket: str):
        super().__init__(f"bucket {bucket!r} does not exist")
        self.bucket = bucket


class NoSuchKey(NotFound):
    code = "NoSuchKey"
    default_message = "the object does not exist"

    def __init__(self, bucket: str, key: str):
        super().__init__(f"object {key!r} does not exist in bucket {bucket!r}")
        self.bucket = bucket
        self.key = key


class NoSuchVersion(NotFound):
    code = "NoSuchVersion"
    default_message = "the object version does not exist"

    def __init__(self, file_id: str):
        super().__init__(f"file {file_id!r} does not exist")
        self.file_id = file_id


class NoSuchUpload(NotFound):
    code = "NoSuchUpload"
    default_message = "the upload does not exist, has expired or was completed or aborted"

    def __init__(self, upload_id: str):
        super().__init__(f"upload {upload_id[:64]!r} does not exist (expired, completed, aborted?)")
        self.upload_id = upload_id


# 405 / 409 / 412 / 413 / 415 / 416 ----------------------------------------------------
class MethodNotAllowed(StorageError):
    status = 405
    code = "MethodNotAllowed"
    default_message = "method not allowed"


class Conflict(StorageError):
    status = 409
    code = "Conflict"
    default_message = "conflict"


class BucketAlreadyExists(Conflict):
    code = "BucketAlreadyExists"

    def __init__(self, bucket: str):
        super().__init__(f"bucket {bucket!r} already exists")
        self.bucket = bucket


class ScrubInProgress(Conflict):
    code = "ScrubInProgress"
    default_message = "a scrub pass is already running (on this or another instance)"


class BucketNotEmpty(Conflict):
    code = "BucketNotEmpty"

    def __init__(self, bucket: str):
        super().__init__(f"bucket {bucket!r} is not empty (use ?force=true to delete it)")
        self.bucket = bucket


class LengthRequired(StorageError):
    status = 411
    code = "MissingContentLength"
    default_message = "this upload needs a Content-Length header"


class PreconditionFailed(StorageError):
    status = 412
    code = "PreconditionFailed"
    default_message = "a precondition did not hold"


class EntityTooLarge(StorageError):
    status = 413
    code = "EntityTooLarge"
    default_message = "the upload is larger than the maximum allowed size"

    def __init__(self, limit: int):
        super().__init__(f"the upload is larger than the maximum of {limit} bytes")
        self.limit = limit


class RequestTooLarge(StorageError):
    status = 413
    code = "RequestTooLarge"
    default_message = "the request body is too large"


class UnsupportedFileType(StorageError):
    status = 415
    code = "UnsupportedFileType"
    default_message = "this file type is not allowed in this bucket"


class InvalidRange(StorageError):
    status = 416
    code = "InvalidRange"
    default_message = "the requested range is not satisfiable"

    def __init__(self, size: int, message: str | None = None):
        super().__init__(message, headers={"Content-Range": f"bytes */{size}"})
        self.size = size


# 5xx ----------------------------------------------------------------------------------
class InsufficientStorage(StorageError):
    status = 507
    code = "InsufficientStorage"
    default_message = "the storage backend is out of space"


class ServiceUnavailable(StorageError):
    status = 503
    code = "ServiceUnavailable"
    default_message = "the storage backend is unavailable; retry later"

    def __init__(self, message: str | None = None, *, retry_after: int = 5):
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class SlowDown(ServiceUnavailable):
    code = "SlowDown"
    default_message = "too many requests; slow down"


class ConfigError(Exception):
    """Invalid configuration: the message names the environment variable."""


class ObjectCorrupted(StorageError):
    """The stored bytes are missing or do not match their recorded checksums."""

    status = 500
    code = "ObjectCorrupted"
    default_message = "the object's stored data is missing or corrupted"


class ObjectLocked(StorageError):
    """A retention date or a legal hold forbids deleting or overwriting this version."""

    status = 403
    code = "ObjectLocked"
    default_message = "the object version is locked (retention date or legal hold)"


class InvalidBucketState(StorageError):
    """The bucket's state forbids the change (object lock without versioning, or
    suspending versioning on a bucket with object lock)."""

    status = 409
    code = "InvalidBucketState"
    default_message = "the request is not valid with the current state of the bucket"
