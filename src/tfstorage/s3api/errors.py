"""S3-only errors (subclasses of the one tree) and their S3 XML rendering.

Everything the service raises is already a `StorageError` whose code follows S3's
name; the few codes that exist only in this project are mapped to the S3 code a
client knows how to handle, so an SDK retries, reports or gives up as it would
against S3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from xml.sax.saxutils import escape

from tfstorage.errors import (
    AccessDenied,
    IncompleteBody,
    InvalidArgument,
    InvalidRequest,
    StorageError,
)


class SignatureDoesNotMatch(AccessDenied):
    code = "SignatureDoesNotMatch"
    default_message = (
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method."
    )


class InvalidAccessKeyId(AccessDenied):
    code = "InvalidAccessKeyId"
    default_message = "The AWS access key Id you provided does not exist in our records."


class RequestTimeTooSkewed(AccessDenied):
    code = "RequestTimeTooSkewed"
    default_message = "The difference between the request time and the server's time is too large."


class AuthorizationHeaderMalformed(InvalidRequest):
    code = "AuthorizationHeaderMalformed"
    default_message = "The authorization header is malformed."


class AuthorizationQueryParametersError(InvalidRequest):
    code = "AuthorizationQueryParametersError"
    default_message = "The authorization query parameters are malformed."


class MissingSecurityHeader(InvalidRequest):
    code = "MissingSecurityHeader"
    default_message = "Your request is missing a required header."


class XAmzContentSHA256Mismatch(InvalidRequest):
    code = "XAmzContentSHA256Mismatch"
    default_message = "The provided 'x-amz-content-sha256' header does not match what was computed."


class MalformedTrailerError(InvalidRequest):
    code = "MalformedTrailerError"
    default_message = "The request contained trailing data that was not well-formed."


class ChunkFramingError(IncompleteBody):
    """The aws-chunked framing is broken: S3 answers these with `IncompleteBody`."""

    default_message = "The aws-chunked request body is malformed."


class MalformedXML(InvalidRequest):
    code = "MalformedXML"
    default_message = (
        "The XML you provided was not well-formed or did not validate against our published schema."
    )


class MaxMessageLengthExceeded(InvalidRequest):
    code = "MaxMessageLengthExceeded"
    default_message = "Your request was too big."


class NotImplementedOperation(StorageError):
    status = 501
    code = "NotImplemented"
    default_message = (
        "A header or query you provided implies functionality that is not implemented."
    )


class InvalidRetentionPeriod(InvalidRequest):
    code = "InvalidRetentionPeriod"
    default_message = "The retention period must be a positive integer."


class NoSuchTagSet(StorageError):
    status = 404
    code = "NoSuchTagSet"
    default_message = "The TagSet does not exist"


class NoSuchCORSConfiguration(StorageError):
    status = 404
    code = "NoSuchCORSConfiguration"
    default_message = "The CORS configuration does not exist"


class ObjectLockConfigurationNotFound(StorageError):
    status = 404
    code = "ObjectLockConfigurationNotFoundError"
    default_message = "Object Lock configuration does not exist for this bucket"


class NoSuchObjectLockConfiguration(StorageError):
    status = 404
    code = "NoSuchObjectLockConfiguration"
    default_message = "The specified object does not have a ObjectLock configuration"


class CORSForbidden(AccessDenied):
    """A preflight no CORS rule of the bucket allows."""

    code = "AccessForbidden"
    default_message = "CORSResponse: This CORS request is not allowed."


class InvalidPartNumber(StorageError):
    status = 416
    code = "InvalidPartNumber"
    default_message = "The requested partnumber is not satisfiable"


class MethodNotAllowed(StorageError):
    status = 405
    code = "MethodNotAllowed"
    default_message = "The specified method is not allowed against this resource."


class UnsupportedAuthorization(InvalidArgument):
    """SigV2, SigV4a and anything else that is not AWS4-HMAC-SHA256."""

    default_message = (
        "The authorization mechanism you have provided is not supported. "
        "Please use AWS4-HMAC-SHA256."
    )


class PostEntityTooLarge(InvalidRequest):
    """A POST form's file above its policy's content-length-range: 400 on S3, not 413."""

    code = "EntityTooLarge"
    default_message = "Your proposed upload exceeds the maximum allowed size"


class PostEntityTooSmall(InvalidRequest):
    code = "EntityTooSmall"
    default_message = "Your proposed upload is smaller than the minimum allowed size"


# Codes of this project's tree that S3 does not have, as (S3 code, status). The
# status stays the tree's unless S3's differs, so the REST and S3 doors agree.
_S3_CODES: dict[str, tuple[str, int]] = {
    "Unauthenticated": ("AccessDenied", 403),
    "NotFound": ("NoSuchKey", 404),
    "Conflict": ("OperationAborted", 409),
    "ScrubInProgress": ("OperationAborted", 409),
    "MalformedPOSTRequest": ("MalformedPOSTRequest", 400),
    "MissingFile": ("InvalidArgument", 400),
    "InvalidMetadata": ("InvalidArgument", 400),
    "UnsupportedFileType": ("InvalidArgument", 400),
    "RequestTooLarge": ("MaxMessageLengthExceeded", 400),
    "ObjectCorrupted": ("InternalError", 500),
    "InsufficientStorage": ("ServiceUnavailable", 503),
    "ObjectLocked": ("AccessDenied", 403),  # S3's answer to a locked version
}


# XML 1.0 cannot carry these at all, escaped or not; a key or path may contain them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# Anything xml_text changes: most keys have none, and one search is a quarter of the
# four passes (a listing page escapes 1000 keys).
_NEEDS_WORK = re.compile("[&<>]|" + _NOT_XML.pattern)


def xml_text(value: str) -> str:
    """Text for an XML element: escaped, and characters XML cannot carry replaced."""
    if _NEEDS_WORK.search(value) is None:
        return value
    return escape(_NOT_XML.sub("\ufffd", value))


_text = xml_text


@dataclass(frozen=True)
class S3ErrorResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def s3_code(exc: StorageError) -> tuple[str, int]:
    """The S3 code and status S3 clients expect for an error of the tree."""
    return _S3_CODES.get(exc.code, (exc.code, exc.status))


def render_error(exc: StorageError, *, resource: str, request_id: str) -> S3ErrorResponse:
    """S3's `<Error>` document for any error of the tree.

    A 5xx keeps the tree's fixed, safe message: internal details never reach a client.
    """
    code, status = s3_code(exc)
    message = exc.message if status < 500 or exc.status < 500 else exc.default_message
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{_text(code)}</Code><Message>{_text(message)}</Message>"
        f"<Resource>{_text(resource)}</Resource><RequestId>{_text(request_id)}</RequestId>"
        "</Error>"
    ).encode()
    headers = {**exc.headers, "Content-Type": "application/xml", "x-amz-request-id": request_id}
    return S3ErrorResponse(status=status, headers=headers, body=body)
