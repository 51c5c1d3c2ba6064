"""CORS on the S3 endpoint, by the bucket's rules: the unsigned OPTIONS preflight, and
the Access-Control-* headers on actual responses (errors too: a browser script can
read an error only if its response carries them)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tfstorage.domain.cors import CorsRule
from tfstorage.errors import InvalidRequest, StorageError
from tfstorage.s3api.errors import CORSForbidden
from tfstorage.service.storage import Storage


def _allow_headers(rule: CorsRule, origin: str) -> dict[str, str]:
    headers = {
        "Access-Control-Allow-Origin": "*" if "*" in rule.allowed_origins else origin,
        "Access-Control-Allow-Methods": ", ".join(rule.allowed_methods),
        "Vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
    }
    if rule.expose_headers:
        headers["Access-Control-Expose-Headers"] = ", ".join(rule.expose_headers)
    if rule.max_age_seconds is not None:
        headers["Access-Control-Max-Age"] = str(rule.max_age_seconds)
    return headers


async def preflight(storage: Storage, bucket: str, http: Request) -> Response:
    """OPTIONS: 200 with what the first matching rule allows, else 403 (S3's CORSResponse)."""
    origin = http.headers.get("origin")
    method = http.headers.get("access-control-request-method")
    if not bucket:
        raise InvalidRequest("a CORS preflight names a bucket")
    if not origin or not method:
        raise InvalidRequest("Insufficient information. Origin request header needed.")
    config = await storage.bucket_config.cors(bucket)
    asked = [
        h.strip() for h in (http.headers.get("access-control-request-headers") or "").split(",")
    ]
    rule = None if config is None else config.matching(origin, method, asked)
    if rule is None:
        raise CORSForbidden()
    headers = _allow_headers(rule, origin)
    if any(asked):
        headers["Access-Control-Allow-Headers"] = ", ".join(h for h in asked if h)
    return Response(status_code=200, headers=headers)


async def add_cors_headers(
    storage: Storage, bucket: str, http: Request, response: Response
) -> None:
    """The matching rule's headers on an actual response to a request with an Origin.

    The method matched is Access-Control-Request-Method when sent, as S3 does."""
    origin = http.headers.get("origin")
    if not origin or not bucket or http.method == "OPTIONS":
        return
    try:
        config = await storage.bucket_config.cors(bucket)
    except StorageError:
        return  # no bucket, or the index is down: the response goes as it is
    if config is None:
        return
    method = http.headers.get("access-control-request-method") or http.method
    rule = config.matching(origin, method)
    if rule is not None:
        response.headers.update(_allow_headers(rule, origin))
