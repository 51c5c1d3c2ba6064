"""The SDK's public surface and its error classes."""

from __future__ import annotations

import httpx

import tfstorage.client
from tfstorage import errors as server_errors
from tfstorage.client import errors


def test_all_is_pinned() -> None:
    assert tfstorage.client.__all__ == [
        "AccessDenied",
        "AsyncClient",
        "BadDigest",
        "BucketAlreadyExists",
        "BucketNotEmpty",
        "ChecksumMismatch",
        "Client",
        "ClientConfig",
        "ConfigurationError",
        "EntityTooLarge",
        "IncompleteDownload",
        "InvalidRequest",
        "Listing",
        "NoSuchBucket",
        "NoSuchKey",
        "NoSuchUpload",
        "NoSuchVersion",
        "NotFound",
        "ObjectCorrupted",
        "ObjectInfo",
        "ProgressCallback",
        "ServerError",
        "ServiceUnavailable",
        "TFStorageError",
        "TransferReport",
        "TransportError",
        "Unauthenticated",
        "config_path",
        "resolve_config",
    ]
    for name in tfstorage.client.__all__:
        assert getattr(tfstorage.client, name) is not None


def _server_codes() -> dict[str, int]:
    found: dict[str, int] = {}
    stack: list[type[server_errors.StorageError]] = [server_errors.StorageError]
    while stack:
        cls = stack.pop()
        # The S3 endpoint's own errors (signatures, checksums) are answered in S3's XML
        # to S3 clients, never to this SDK; whether they show here would depend on
        # whether another test imported tfstorage.s3api first.
        if not cls.__module__.startswith("tfstorage.s3api"):
            found[cls.code] = cls.status
        stack.extend(cls.__subclasses__())
    return found


def test_every_server_code_has_its_own_class() -> None:
    for code, status in _server_codes().items():
        cls = errors.ERROR_CLASSES.get(code)
        assert cls is not None, f"no SDK class for the server's code {code}"
        assert cls.code == code
        if status >= 500:
            assert issubclass(cls, errors.ServerError), code


def _answer(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body, headers={"Retry-After": "3"})


def test_error_bodies_become_their_classes() -> None:
    body = {"error": "object 'a' does not exist", "code": "NoSuchKey", "request_id": "r1"}
    exc = errors.error_from_response(_answer(404, body))
    assert type(exc) is errors.NoSuchKey
    assert isinstance(exc, FileNotFoundError) and isinstance(exc, errors.NotFound)
    assert (exc.status, exc.code, exc.message, exc.request_id) == (
        404,
        "NoSuchKey",
        body["error"],
        "r1",
    )
    assert str(exc) == "NoSuchKey: object 'a' does not exist"
    assert exc.retry_after == "3"


def test_unknown_codes_fall_back_on_the_status_and_keep_their_code() -> None:
    exc = errors.error_from_response(_answer(409, {"error": "x", "code": "SomethingNew"}))
    assert type(exc) is errors.Conflict and exc.code == "SomethingNew"
    exc = errors.error_from_response(httpx.Response(502, text="<html>bad gateway</html>"))
    assert isinstance(exc, errors.ServerError) and exc.status == 502
    assert exc.message == "HTTP 502"
