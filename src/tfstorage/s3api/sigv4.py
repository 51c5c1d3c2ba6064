"""AWS Signature Version 4 for S3, verified on the server side.

Header auth (`Authorization: AWS4-HMAC-SHA256 ...`) and presigned URLs (`X-Amz-*`
query parameters). The canonical request is rebuilt from the request *as sent*: the
raw path (S3 neither normalises nor double-encodes it), the query re-encoded as the
spec says, and the signed headers' values as received, Host included. What the
request claims about its body (`x-amz-content-sha256`) is returned for `chunked.py`
to enforce while the body streams.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from tfstorage.errors import AccessDenied, InvalidArgument, InvalidRequest
from tfstorage.s3api.canonical import (
    ALGORITHM,
    SignedRequest,
    canonical_request,
    hmac_hex,
    parse_query,
    path_candidates,
    signatures_match,
    signing_key,
    string_to_sign,
)
from tfstorage.s3api.errors import (
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    InvalidAccessKeyId,
    MissingSecurityHeader,
    RequestTimeTooSkewed,
    SignatureDoesNotMatch,
    UnsupportedAuthorization,
)

MAX_SKEW = timedelta(minutes=15)
MAX_PRESIGNED_EXPIRY = 604800  # seven days, S3's own limit
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
_PAYLOAD_MODES = {
    UNSIGNED_PAYLOAD,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_AMZ_DATE = "%Y%m%dT%H%M%SZ"

SecretLookup = Callable[[str], str | None]
"""Access key id -> secret access key, or None when the key is unknown."""


@dataclass(frozen=True)
class Credential:
    access_key: str
    date: str  # YYYYMMDD
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(frozen=True)
class Authenticated:
    """A verified request: who signed it, and what it promised about its body."""

    access_key: str
    credential: Credential
    amz_date: str  # the timestamp that was signed, ISO 8601 basic
    signature: str  # the seed of an aws-chunked body's signature chain
    signing_key: bytes = field(repr=False)  # a secret for the day: kept out of logs
    content_sha256: str  # a hex digest or one of the payload modes
    presigned: bool

    @property
    def scope(self) -> str:
        return self.credential.scope


def verify(
    request: SignedRequest,
    lookup_secret: SecretLookup,
    *,
    region: str,
    now: datetime | None = None,
    service: str = "s3",
) -> Authenticated | None:
    """Verify the request's signature; None for an anonymous (unsigned) request."""
    now = now or datetime.now(UTC)
    authorization = request.header("authorization")
    query = parse_query(request.raw_query)
    presigned = any(k == "X-Amz-Algorithm" or k == "X-Amz-Credential" for k, _ in query)
    if authorization is not None and presigned:
        raise InvalidArgument(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter "
            "or the Authorization header should be specified"
        )
    if authorization is not None:
        return _verify_header(request, authorization, lookup_secret, region, service, now)
    if presigned:
        return _verify_query(request, query, lookup_secret, region, service, now)
    if any(k == "AWSAccessKeyId" for k, _ in query):
        raise UnsupportedAuthorization()
    return None


def _verify_header(
    request: SignedRequest,
    authorization: str,
    lookup_secret: SecretLookup,
    region: str,
    service: str,
    now: datetime,
) -> Authenticated:
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise UnsupportedAuthorization()
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name in fields:
            raise AuthorizationHeaderMalformed(f"the Authorization header part {name!r} is bad")
        fields[name] = value
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        raise AuthorizationHeaderMalformed(
            "the Authorization header needs Credential, SignedHeaders and Signature"
        )
    credential = _parse_credential(fields["Credential"], region, service, header=True)
    amz_date = _request_time(request)
    signed_at = _parse_amz_date(amz_date, header=True)
    if amz_date[:8] != credential.date:
        raise AuthorizationHeaderMalformed(
            f"the credential date {credential.date!r} is not the request's date {amz_date[:8]!r}"
        )
    if abs(now - signed_at) > MAX_SKEW:
        raise RequestTimeTooSkewed()
    content_sha256 = request.header("x-amz-content-sha256")
    if content_sha256 is None:
        raise MissingSecurityHeader(
            "Missing required header for this request: x-amz-content-sha256"
        )
    _check_content_sha256(content_sha256)
    signed_headers = _parse_signed_headers(fields["SignedHeaders"], request, header=True)
    return _check_signature(
        request,
        lookup_secret,
        credential=credential,
        amz_date=amz_date,
        signed_headers=signed_headers,
        query=parse_query(request.raw_query),
        payload=content_sha256,
        given=fields["Signature"],
        presigned=False,
    )


def _verify_query(
    request: SignedRequest,
    query: list[tuple[str, str]],
    lookup_secret: SecretLookup,
    region: str,
    service: str,
    now: datetime,
) -> Authenticated:
    params: dict[str, str] = {}
    for name, value in query:
        if name.startswith("X-Amz-"):
            if name in params:
                raise AuthorizationQueryParametersError(f"{name} is given more than once")
            params[name] = value
    needed = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires")
    missing = [n for n in (*needed, "X-Amz-SignedHeaders", "X-Amz-Signature") if n not in params]
    if missing:
        raise AuthorizationQueryParametersError(
            f"Query-string authentication version 4 requires {', '.join(missing)}"
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise UnsupportedAuthorization()
    credential = _parse_credential(params["X-Amz-Credential"], region, service, header=False)
    amz_date = params["X-Amz-Date"]
    signed_at = _parse_amz_date(amz_date, header=False)
    if amz_date[:8] != credential.date:
        raise AuthorizationQueryParametersError(
            f"the credential date {credential.date!r} is not X-Amz-Date's {amz_date[:8]!r}"
        )
    expires_text = params["X-Amz-Expires"]
    if not expires_text.isascii() or not expires_text.isdigit() or len(expires_text) > 19:
        raise AuthorizationQueryParametersError("X-Amz-Expires should be a number")
    expires = int(expires_text)
    if expires > MAX_PRESIGNED_EXPIRY:
        raise AuthorizationQueryParametersError(
            "X-Amz-Expires must be less than a week (in seconds) that is 604800"
        )
    if now + MAX_SKEW < signed_at:
        raise AccessDenied("Request is not valid yet")
    if now > signed_at + timedelta(seconds=expires):
        raise AccessDenied("Request has expired")
    # A presigned URL cannot know its body; a header may still promise one.
    payload = request.header("x-amz-content-sha256") or UNSIGNED_PAYLOAD
    _check_content_sha256(payload)
    signed_headers = _parse_signed_headers(params["X-Amz-SignedHeaders"], request, header=False)
    return _check_signature(
        request,
        lookup_secret,
        credential=credential,
        amz_date=amz_date,
        signed_headers=signed_headers,
        query=[(k, v) for k, v in query if k != "X-Amz-Signature"],
        payload=payload,
        given=params["X-Amz-Signature"],
        presigned=True,
    )


def _check_signature(
    request: SignedRequest,
    lookup_secret: SecretLookup,
    *,
    credential: Credential,
    amz_date: str,
    signed_headers: list[str],
    query: list[tuple[str, str]],
    payload: str,
    given: str,
    presigned: bool,
) -> Authenticated:
    secret = lookup_secret(credential.access_key)
    if secret is None:
        raise InvalidAccessKeyId()
    key = signing_key(secret, credential.date, credential.region, credential.service)
    expected = ""
    matched = False
    for path in path_candidates(request.raw_path):
        canonical = canonical_request(request.method, path, query, signed_headers, request, payload)
        expected = hmac_hex(key, string_to_sign(amz_date, credential.scope, canonical))
        # Both candidates are compared whatever the first gave: no timing difference.
        matched = signatures_match(expected, given) or matched
    if not matched:
        raise SignatureDoesNotMatch()
    return Authenticated(
        access_key=credential.access_key,
        credential=credential,
        amz_date=amz_date,
        signature=given,
        signing_key=key,
        content_sha256=payload,
        presigned=presigned,
    )


def verify_post_policy(
    policy: str,
    *,
    credential: str,
    amz_date: str,
    signature: str,
    lookup_secret: SecretLookup,
    region: str,
    service: str = "s3",
) -> Credential:
    """Verify a POST form's signature: the hex HMAC of the base64 policy, as sent.

    The policy carries the form's expiration and conditions, so signing it signs the
    request; the caller checks those. Blocking (the key lookup): run it in a thread.
    """
    parsed = _parse_credential(credential, region, service, header=False, error=InvalidArgument)
    if not re.fullmatch(r"\d{8}T\d{6}Z", amz_date):
        raise InvalidArgument("x-amz-date must be in the ISO8601 Long Format")
    if amz_date[:8] != parsed.date:
        raise InvalidArgument(
            f"the credential date {parsed.date!r} is not x-amz-date's {amz_date[:8]!r}"
        )
    secret = lookup_secret(parsed.access_key)
    if secret is None:
        raise InvalidAccessKeyId()
    key = signing_key(secret, parsed.date, parsed.region, parsed.service)
    if not signatures_match(hmac_hex(key, policy), signature):
        raise SignatureDoesNotMatch()
    return parsed


def _parse_credential(
    text: str,
    region: str,
    service: str,
    *,
    header: bool,
    error: type[InvalidRequest] | None = None,
) -> Credential:
    error = error or (AuthorizationHeaderMalformed if header else AuthorizationQueryParametersError)
    # The access key itself may contain '/', so the scope is the last four parts.
    parts = text.rsplit("/", 4)
    if len(parts) != 5 or not parts[0] or parts[4] != "aws4_request":
        raise error("the Credential is not <key>/<date>/<region>/<service>/aws4_request")
    credential = Credential(parts[0], parts[1], parts[2], parts[3])
    if not re.fullmatch(r"\d{8}", credential.date):
        raise error(f"the credential date {credential.date!r} is not YYYYMMDD")
    if credential.region != region:
        raise error(f"the region {credential.region!r} is wrong; expecting {region!r}")
    if credential.service != service:
        raise error(f"the service {credential.service!r} is wrong; expecting {service!r}")
    return credential


def _request_time(request: SignedRequest) -> str:
    amz_date = request.header("x-amz-date")
    if amz_date is not None:
        return amz_date.strip()
    date = request.header("date")
    if date is None:
        raise MissingSecurityHeader("the request needs an X-Amz-Date or a Date header")
    try:
        parsed = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        raise AccessDenied("the Date header is not an HTTP date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime(_AMZ_DATE)


def _parse_amz_date(text: str, *, header: bool) -> datetime:
    try:
        if not re.fullmatch(r"\d{8}T\d{6}Z", text):
            raise ValueError(text)
        # Read by hand: strptime cost ~20 us, a tenth of a small GET's authentication.
        year, month, day = int(text[0:4]), int(text[4:6]), int(text[6:8])
        hour, minute, second = int(text[9:11]), int(text[11:13]), int(text[13:15])
        # ValueError for a day 32, say
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        if header:
            raise AccessDenied("X-Amz-Date must be in the ISO8601 Long Format") from None
        raise AuthorizationQueryParametersError(
            "X-Amz-Date must be in the ISO8601 Long Format"
        ) from None


def _parse_signed_headers(text: str, request: SignedRequest, *, header: bool) -> list[str]:
    error = AuthorizationHeaderMalformed if header else AuthorizationQueryParametersError
    names = text.split(";")
    if any(not n or n != n.lower() or n != n.strip() for n in names) or names != sorted(set(names)):
        raise error("SignedHeaders must be sorted, lowercase, ';'-separated header names")
    if "host" not in names:
        raise error("SignedHeaders must include host")
    # S3's rule: an unsigned x-amz-* header could be changed on the way unnoticed.
    unsigned = sorted(
        {k.lower() for k, _ in request.headers if k.lower().startswith("x-amz-")} - set(names)
    )
    if unsigned:
        raise AccessDenied(
            "There were headers present in the request which were not signed: "
            + ", ".join(unsigned)
        )
    return names


def _check_content_sha256(value: str) -> None:
    if value in _PAYLOAD_MODES or _HEX64.fullmatch(value):
        return
    if value.startswith("STREAMING-"):
        raise UnsupportedAuthorization(f"x-amz-content-sha256 {value[:64]!r} is not supported")
    raise InvalidArgument(
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* mode or a SHA-256 hex digest"
    )
