"""SigV4 verification against botocore's real signers and boto3's real requests."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.crt.auth import CrtS3SigV4Auth, CrtS3SigV4QueryAuth
from hypothesis import given, settings
from hypothesis import strategies as st

from tfstorage.errors import AccessDenied, InvalidArgument, StorageError
from tfstorage.s3api import canonical, sigv4
from tfstorage.s3api.canonical import SignedRequest
from tfstorage.s3api.errors import (
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    InvalidAccessKeyId,
    MissingSecurityHeader,
    RequestTimeTooSkewed,
    SignatureDoesNotMatch,
)

from .clients import ACCESS_KEY, Sent, boto3_presigner, boto3_request, botocore_sign, lookup

KEYS = [
    "plain.txt",
    "with space/and more spaces.bin",
    "ünïcødé/файл/模型.safetensors",
    "a+b+c",
    "literal%2Fslash",
    "dots/../and/./segments",
    "punct $!'()*@=;,&:~",
    "trailing/",
    "//double//slashes",
    "emoji 🤖",
]


def _verify(request: SignedRequest, now: datetime | None = None) -> sigv4.Authenticated:
    auth = sigv4.verify(request, lookup, region="us-east-1", now=now)
    assert auth is not None
    return auth


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("endpoint", ["https://s3.example.test", "http://127.0.0.1:8084"])
def test_boto3_requests_verify(key: str, endpoint: str) -> None:
    for operation, params in [
        ("get_object", {"Bucket": "models", "Key": key, "Range": "bytes=0-9"}),
        ("head_object", {"Bucket": "models", "Key": key, "VersionId": "v 1+2"}),
        (
            "put_object",
            {"Bucket": "models", "Key": key, "Body": b"weights", "Metadata": {"a": "b"}},
        ),
        ("delete_object", {"Bucket": "models", "Key": key}),
        ("list_objects_v2", {"Bucket": "models", "Prefix": key, "Delimiter": "/"}),
    ]:
        sent = boto3_request(operation, endpoint=endpoint, **params)
        auth = _verify(sent.signed())
        assert auth.access_key == ACCESS_KEY
        assert auth.content_sha256 == sent.header("x-amz-content-sha256")


def test_boto3_put_over_https_streams_an_unsigned_trailer() -> None:
    sent = boto3_request("put_object", Bucket="b", Key="k", Body=b"x" * 10)
    assert _verify(sent.signed()).content_sha256 == sigv4.STREAMING_UNSIGNED_TRAILER


def test_boto3_put_over_http_signs_the_payload_hash() -> None:
    sent = boto3_request(
        "put_object", endpoint="http://127.0.0.1:1", Bucket="b", Key="k", Body=b"x"
    )
    assert len(_verify(sent.signed()).content_sha256) == 64


HEADERS = {"x-amz-content-sha256": sigv4.UNSIGNED_PAYLOAD, "x-amz-meta-note": "  two   spaces "}


@pytest.mark.parametrize("signer", [S3SigV4Auth, CrtS3SigV4Auth])
@pytest.mark.parametrize("key", KEYS)
def test_botocore_header_signers_verify(signer: type, key: str) -> None:
    url = f"http://127.0.0.1:8084/models/{quote(key, safe='/~')}?tagging&versionId=a%20b"
    _verify(botocore_sign(signer, "PUT", url, headers=HEADERS).signed())


def test_the_generic_sigv4_signer_verifies_on_a_plain_key() -> None:
    # SigV4Auth (not S3's) normalises dot segments and encodes the path once more; S3
    # does neither, so only keys without such characters sign alike under both.
    url = "http://127.0.0.1:8084/models/plain-key.txt?tagging"
    _verify(botocore_sign(SigV4Auth, "PUT", url, headers=HEADERS).signed())


@pytest.mark.parametrize("signer", [S3SigV4QueryAuth, CrtS3SigV4QueryAuth])
@pytest.mark.parametrize("key", KEYS)
def test_botocore_presigners_verify(signer: type, key: str) -> None:
    url = f"https://s3.example.test/models/{quote(key, safe='/~')}?response-content-type=a%2Fb"
    sent = botocore_sign(signer, "GET", url, expires=600)
    auth = _verify(sent.signed())
    assert auth.presigned
    assert auth.content_sha256 == sigv4.UNSIGNED_PAYLOAD


@pytest.mark.parametrize("key", KEYS)
def test_boto3_presigned_urls_verify(key: str) -> None:
    client = boto3_presigner()
    for method, params in [
        ("get_object", {"Bucket": "models", "Key": key}),
        ("put_object", {"Bucket": "models", "Key": key}),
    ]:
        url = client.generate_presigned_url(method, Params=params, ExpiresIn=3600)
        parts = urlsplit(url)
        verb = "GET" if method == "get_object" else "PUT"
        request = SignedRequest(verb, parts.path, parts.query, [("Host", parts.netloc)])
        assert _verify(request).presigned


@settings(max_examples=60, deadline=None)
@given(key=st.text(min_size=1, max_size=60), value=st.text(max_size=20))
def test_any_key_and_query_value_signed_by_botocore_verifies(key: str, value: str) -> None:
    url = (
        f"http://127.0.0.1:8084/b/{quote(key, safe='/~')}"
        f"?prefix={quote(value, safe='-_.~')}&list-type=2"
    )
    headers = {"x-amz-content-sha256": sigv4.UNSIGNED_PAYLOAD}
    _verify(botocore_sign(S3SigV4Auth, "GET", url, headers=headers).signed())


# --- tampering ------------------------------------------------------------------------
def _signed_get() -> Sent:
    return botocore_sign(
        S3SigV4Auth,
        "GET",
        "http://127.0.0.1:8084/models/a%20b.txt?versionId=7&tagging",
        headers={"Range": "bytes=0-99", "x-amz-content-sha256": sigv4.UNSIGNED_PAYLOAD},
    )


def _with_signature(sent: Sent, signature: str) -> Sent:
    authorization = sent.header("Authorization") or ""
    head, _, _ = authorization.rpartition("Signature=")
    return sent.with_header("Authorization", head + "Signature=" + signature)


def test_every_byte_of_the_signature_matters() -> None:
    sent = _signed_get()
    signature = (sent.header("Authorization") or "").rpartition("Signature=")[2]
    _verify(sent.signed())
    for position in range(len(signature)):
        flipped = "0" if signature[position] != "0" else "1"
        changed = signature[:position] + flipped + signature[position + 1 :]
        with pytest.raises(SignatureDoesNotMatch):
            _verify(_with_signature(sent, changed).signed())
    for bad in [signature[:-1], signature + "0", signature.upper(), ""]:
        with pytest.raises(SignatureDoesNotMatch):
            _verify(_with_signature(sent, bad).signed())


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Range", "bytes=0-100"),
        ("host", "127.0.0.1:8085"),
        ("x-amz-content-sha256", hashlib.sha256(b"other").hexdigest()),
        ("x-amz-content-sha256", sigv4.UNSIGNED_PAYLOAD),
        ("Range", None),
    ],
)
def test_a_changed_or_missing_signed_header_is_refused(header: str, value: str | None) -> None:
    sent = _signed_get()
    if header == "host":
        request = replace(sent.signed(), headers=[*sent.headers, ("host", value or "")])
    else:
        request = sent.with_header(header, value).signed()
    with pytest.raises(SignatureDoesNotMatch):
        _verify(request)


def test_a_changed_date_is_refused() -> None:
    sent = _signed_get()
    moved = datetime.strptime(sent.header("X-Amz-Date") or "", "%Y%m%dT%H%M%SZ") + timedelta(
        seconds=1
    )
    with pytest.raises(SignatureDoesNotMatch):
        _verify(sent.with_header("X-Amz-Date", moved.strftime("%Y%m%dT%H%M%SZ")).signed())


@pytest.mark.parametrize(
    ("path", "query", "method"),
    [
        ("/models/a%20b.txT", "versionId=7&tagging", "GET"),
        ("/models/a+b.txt", "versionId=7&tagging", "GET"),
        ("/models//a%20b.txt", "versionId=7&tagging", "GET"),
        ("/models/a%20b.txt", "versionId=8&tagging", "GET"),
        ("/models/a%20b.txt", "versionId=7", "GET"),
        ("/models/a%20b.txt", "versionId=7&tagging&acl", "GET"),
        ("/models/a%20b.txt", "versionId=7&tagging", "DELETE"),
    ],
)
def test_path_query_and_method_are_signed(path: str, query: str, method: str) -> None:
    signed = _signed_get().signed()
    with pytest.raises(SignatureDoesNotMatch):
        _verify(replace(signed, method=method, raw_path=path, raw_query=query))


def test_query_order_and_encoding_variants_are_the_same_request() -> None:
    signed = _signed_get().signed()
    _verify(replace(signed, raw_query="tagging=&versionId=%37"))


def test_an_unsigned_amz_header_is_refused() -> None:
    sent = _signed_get().with_header("x-amz-meta-injected", "evil")
    with pytest.raises(AccessDenied, match="not signed: x-amz-meta-injected"):
        _verify(sent.signed())


def test_unknown_access_key() -> None:
    sent = botocore_sign(
        S3SigV4Auth, "GET", "http://h/b/k", access_key="AKIDUNKNOWN", secret_key="s"
    )
    with pytest.raises(InvalidAccessKeyId):
        _verify(sent.signed())


def test_wrong_region_names_the_expected_one() -> None:
    sent = botocore_sign(S3SigV4Auth, "GET", "http://h/b/k", region="eu-west-3")
    with pytest.raises(AuthorizationHeaderMalformed, match="expecting 'us-east-1'"):
        _verify(sent.signed())


@pytest.mark.parametrize(
    ("authorization", "error"),
    [
        ("AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=", InvalidArgument),
        ("AWS4-ECDSA-P256-SHA256 Credential=x", InvalidArgument),
        (
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request",
            AuthorizationHeaderMalformed,
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,SignedHeaders=host,Signature=a,Signature=b",
            AuthorizationHeaderMalformed,
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3,SignedHeaders=host,Signature=a",
            AuthorizationHeaderMalformed,
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AK/2013052/us-east-1/s3/aws4_request,SignedHeaders=host,Signature=a",
            AuthorizationHeaderMalformed,
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/ec2/aws4_request,SignedHeaders=host,Signature=a",
            AuthorizationHeaderMalformed,
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,SignedHeaders=x-amz-date,Signature=a",
            AuthorizationHeaderMalformed,
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,SignedHeaders=x-amz-date;host,Signature=a",
            AuthorizationHeaderMalformed,
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,SignedHeaders=Host,Signature=a",
            AuthorizationHeaderMalformed,
        ),
        ("AWS4-HMAC-SHA256 garbage", AuthorizationHeaderMalformed),
    ],
)
def test_malformed_authorization_headers(authorization: str, error: type[StorageError]) -> None:
    request = SignedRequest(
        "GET",
        "/b/k",
        "",
        [
            ("Host", "h"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", sigv4.UNSIGNED_PAYLOAD),
            ("Authorization", authorization),
        ],
    )
    with pytest.raises(error) as caught:
        _verify(request, now=datetime(2013, 5, 24, tzinfo=UTC))
    assert caught.value.status == 400


def test_missing_security_headers() -> None:
    sent = _signed_get()
    with pytest.raises(MissingSecurityHeader, match="x-amz-content-sha256"):
        _verify(sent.with_header("x-amz-content-sha256", None).signed())
    with pytest.raises(MissingSecurityHeader, match="Date"):
        _verify(sent.with_header("X-Amz-Date", None).signed())


@pytest.mark.parametrize(
    "bad",
    [
        "20261306T120000Z",  # month 13
        "20260230T120000Z",  # February 30
        "20261206T250000Z",  # hour 25
        "20261206T126000Z",  # minute 60
        "2026-12-06T12:00:00Z",
        "20261206T120000",
        "20261206t120000z",
    ],
)
def test_an_x_amz_date_not_in_the_long_format_is_refused(bad: str) -> None:
    sent = _signed_get()
    date = sent.header("X-Amz-Date") or ""
    # The credential names the same day (when it is one), so only the date is at fault.
    day = bad[:8] if bad[:8].isdigit() else date[:8]
    authorization = (sent.header("Authorization") or "").replace(date[:8], day)
    sent = sent.with_header("X-Amz-Date", bad).with_header("Authorization", authorization)
    with pytest.raises(AccessDenied, match="ISO8601 Long Format"):
        _verify(sent.signed())


def test_a_date_header_can_stand_in_for_x_amz_date() -> None:
    # botocore signs with Date (and drops X-Amz-Date) when the caller set a Date header.
    sent = botocore_sign(
        S3SigV4Auth, "GET", "http://h/b/k", headers={"Date": "Thu, 01 Jan 2026 00:00:00 GMT"}
    )
    assert sent.header("X-Amz-Date") is None and sent.header("Date") is not None
    auth = _verify(sent.signed())
    assert len(auth.amz_date) == 16 and auth.amz_date.endswith("Z")


def test_a_bad_content_sha256_is_an_invalid_argument() -> None:
    sent = _signed_get().with_header("x-amz-content-sha256", "not-a-hash")
    with pytest.raises(InvalidArgument, match="x-amz-content-sha256"):
        _verify(sent.signed())


def test_anonymous_requests_are_none_and_sigv2_presign_is_refused() -> None:
    assert (
        sigv4.verify(SignedRequest("GET", "/b/k", "", [("Host", "h")]), lookup, region="us-east-1")
        is None
    )
    v2 = SignedRequest("GET", "/b/k", "AWSAccessKeyId=AK&Expires=1&Signature=x", [("Host", "h")])
    with pytest.raises(InvalidArgument, match="AWS4-HMAC-SHA256"):
        sigv4.verify(v2, lookup, region="us-east-1")


def test_header_and_query_auth_together_are_refused() -> None:
    sent = _signed_get()
    request = replace(sent.signed(), raw_query="X-Amz-Algorithm=AWS4-HMAC-SHA256")
    with pytest.raises(InvalidArgument, match="one auth mechanism"):
        _verify(request)


# --- time -----------------------------------------------------------------------------
def _signed_at(sent: Sent) -> datetime:
    return datetime.strptime(sent.header("X-Amz-Date") or "", "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


@pytest.mark.parametrize("minutes", [-14.9, 14.9])
def test_clock_skew_within_fifteen_minutes_is_accepted(minutes: float) -> None:
    sent = _signed_get()
    _verify(sent.signed(), now=_signed_at(sent) + timedelta(minutes=minutes))


@pytest.mark.parametrize("minutes", [-15.1, 15.1, 24 * 60])
def test_clock_skew_beyond_fifteen_minutes_is_refused(minutes: float) -> None:
    sent = _signed_get()
    with pytest.raises(RequestTimeTooSkewed) as caught:
        _verify(sent.signed(), now=_signed_at(sent) + timedelta(minutes=minutes))
    assert caught.value.status == 403


def _presigned(expires: int) -> SignedRequest:
    sent = botocore_sign(S3SigV4QueryAuth, "GET", "https://h/b/k", expires=expires)
    return sent.signed()


def _query_time(request: SignedRequest) -> datetime:
    date = dict(p.split("=", 1) for p in request.raw_query.split("&"))["X-Amz-Date"]
    return datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def test_presigned_expiry() -> None:
    request = _presigned(60)
    start = _query_time(request)
    _verify(request, now=start + timedelta(seconds=60))
    with pytest.raises(AccessDenied, match="Request has expired"):
        _verify(request, now=start + timedelta(seconds=61))
    with pytest.raises(AccessDenied, match="not valid yet"):
        _verify(request, now=start - timedelta(minutes=16))


def test_presigned_expiry_is_at_most_seven_days() -> None:
    week = _presigned(604800)
    _verify(week, now=_query_time(week) + timedelta(days=6, hours=23))
    with pytest.raises(AuthorizationQueryParametersError, match="604800"):
        _verify(_presigned(604801))


def test_presigned_expires_is_signed() -> None:
    request = _presigned(60)
    longer = request.raw_query.replace("X-Amz-Expires=60", "X-Amz-Expires=6000")
    with pytest.raises(SignatureDoesNotMatch):
        _verify(replace(request, raw_query=longer))


@pytest.mark.parametrize(
    "param",
    ["X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"],
)
def test_presigned_missing_parameters(param: str) -> None:
    request = _presigned(60)
    query = "&".join(p for p in request.raw_query.split("&") if not p.startswith(param + "="))
    with pytest.raises(AuthorizationQueryParametersError, match=param):
        _verify(replace(request, raw_query=query))


def test_presigned_every_signature_byte_matters() -> None:
    request = _presigned(60)
    params = request.raw_query.split("&")
    index = next(i for i, p in enumerate(params) if p.startswith("X-Amz-Signature="))
    signature = params[index].split("=", 1)[1]
    for position in range(len(signature)):
        flipped = "0" if signature[position] != "0" else "1"
        params[index] = (
            "X-Amz-Signature=" + signature[:position] + flipped + signature[position + 1 :]
        )
        with pytest.raises(SignatureDoesNotMatch):
            _verify(replace(request, raw_query="&".join(params)))


def test_signing_keys_are_cached_per_day_region_and_secret() -> None:
    canonical.signing_key.cache_clear()
    for _ in range(3):
        _verify(_signed_get().signed())
    assert canonical.signing_key.cache_info().hits >= 2


def test_an_asgi_scope_carries_what_was_signed() -> None:
    sent = boto3_request("get_object", Bucket="models", Key="ünï côdé+%2F", VersionId="a b")
    parts = urlsplit(sent.url)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/decoded/by/the/server",
        "raw_path": parts.path.encode("latin-1"),
        "query_string": parts.query.encode("latin-1"),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in sent.headers],
    }
    assert _verify(SignedRequest.from_asgi(scope)).access_key == ACCESS_KEY
