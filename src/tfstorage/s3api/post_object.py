"""POST Object: a browser form uploads one file, authorised by a signed POST policy.

The form's fields arrive first and are read whole (they are small and bounded); the
`file` part, which S3 requires last, is streamed into the one write path, checked
against the policy's content-length-range as it flows. Fields after the file are
ignored, as on S3. Only SigV4 policies are accepted; SigV2 forms get the answer every
SigV2 request gets here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import quote, urlencode, urlsplit

import anyio.to_thread
from starlette.responses import Response

from tfstorage.domain.caller import Caller
from tfstorage.domain.metadata import parse_tags, validate_metadata
from tfstorage.domain.post_policy import parse_policy
from tfstorage.errors import InvalidArgument, InvalidRequest
from tfstorage.formdata import MultipartStream, Part
from tfstorage.s3api import acl, checksums, sigv4, xml
from tfstorage.s3api.canonical import ALGORITHM
from tfstorage.s3api.errors import (
    PostEntityTooLarge,
    PostEntityTooSmall,
    UnsupportedAuthorization,
)
from tfstorage.s3api.objects import META_PREFIX
from tfstorage.s3api.request import S3Request
from tfstorage.s3api.responses import quoted_etag, xml_response
from tfstorage.service.access import caller_of
from tfstorage.service.authorization import authorize
from tfstorage.service.writes import Checksums

_SIGNED_FIELDS = ("policy", "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature")
_SIGV2_FIELDS = ("awsaccesskeyid", "signature")
_MAX_FIELD = 64 * 1024
_MAX_FIELDS = 200


async def post_object(req: S3Request) -> Response:
    if req.auth is not None:
        raise InvalidRequest("POST Object is signed by its form fields, not an Authorization")
    form = MultipartStream(
        req.raw_body(), req.header("content-type") or "", max_parts=_MAX_FIELDS + 1
    )
    fields, file = await _read_fields(form)
    caller = await _authenticate(req, fields)
    req = replace(req, caller=caller)
    if "policy" in fields:
        policy = parse_policy(fields["policy"])
        policy.check(fields, bucket=req.bucket, now=datetime.now(UTC))
        length_range = policy.length_range
    else:
        length_range = None
    key = fields.get("key")
    if not key:
        raise InvalidArgument("Bucket POST must contain a field named 'key'.")
    # S3's one form variable: the name of the file the browser picked, without its path.
    filename = (file.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    key = key.replace("${filename}", filename)
    req = replace(req, key=key)
    storage = req.storage
    await authorize(storage, caller, "write", req.bucket, key)
    if "acl" in fields:
        acl.check_canned_object_acl(fields["acl"], await storage.buckets.is_public_read(req.bucket))
    metadata = validate_metadata(
        {n[len(META_PREFIX) :]: v for n, v in fields.items() if n.startswith(META_PREFIX)}
    )
    tags = parse_tags(xml.parse_tagging(fields["tagging"].encode())) if "tagging" in fields else {}
    body: AsyncIterator[bytes] = _sized(file, length_range)
    expected = checksums.expected_from_headers(fields)
    if expected:
        body = checksums.verify_stream(body, checksums.ChecksumVerifier(expected))
    result = await storage.writer.put_object(
        req.bucket,
        key,
        body,
        declared_size=None,
        content_type=fields.get("content-type"),
        metadata=metadata,
        tags=tags,
        checksums=Checksums(),  # x-amz-checksum-* fields are verified as the file streams
        created_by=caller.name,
        max_size=caller.max_upload,
    )
    version = result.version
    await req.audit("upload", bucket=req.bucket, key=key, file_id=version.file_id)
    # The bucket's URL as the form addressed it (path or virtual-host style), plus the key.
    url = req.http.url
    location = f"{url.scheme}://{url.netloc}{url.path.rstrip('/')}/{quote(key)}"
    headers = {"ETag": quoted_etag(version.etag), "Location": location}
    if not await _finish(form):
        headers["Connection"] = "close"
    if (await storage.buckets.get(req.bucket)).versioning:
        headers["x-amz-version-id"] = version.file_id
    return _success(fields, req.bucket, key, headers)


async def _read_fields(form: MultipartStream) -> tuple[dict[str, str], Part]:
    """The form's fields, names lowercased (S3 compares them so), and its file part."""
    fields: dict[str, str] = {}
    async for part in form:
        name = part.name.lower()
        if name == "file":
            return fields, part
        if name in fields:
            raise InvalidArgument(f"the form field {part.name!r} is given more than once")
        fields[name] = await part.read_text(_MAX_FIELD)
    raise InvalidArgument("POST requires exactly one file upload per request.")


async def _finish(form: MultipartStream) -> bool:
    """Read what follows the file (ignored, as on S3) so the connection can carry another
    request; False when that is more than a form's tail, and the body is left unread."""
    left = _MAX_FIELD
    async for part in form:
        async for chunk in part:
            left -= len(chunk)
            if left < 0:
                await form.aclose()
                return False
    return True


async def _authenticate(req: S3Request, fields: dict[str, str]) -> Caller:
    """Who the form's signature names; the request's own (anonymous) caller when unsigned."""
    if any(name in fields for name in _SIGV2_FIELDS):
        raise UnsupportedAuthorization()
    if not any(name in fields for name in _SIGNED_FIELDS):
        return req.caller
    for name in _SIGNED_FIELDS:
        if name not in fields:
            raise InvalidArgument(f"Bucket POST must contain a field named '{name}'.")
    if fields["x-amz-algorithm"] != ALGORITHM:
        raise UnsupportedAuthorization()
    storage = req.storage
    found = {}

    def lookup(access_key: str) -> str | None:
        hit = storage.access.s3.lookup(access_key)
        if hit is None:
            return None
        found["token"] = hit[0]
        return hit[1]

    await anyio.to_thread.run_sync(
        lambda: sigv4.verify_post_policy(
            fields["policy"],
            credential=fields["x-amz-credential"],
            amz_date=fields["x-amz-date"],
            signature=fields["x-amz-signature"],
            lookup_secret=lookup,
            region=storage.settings.s3_region,
        )
    )
    if not storage.access.enabled:
        return Caller.unrestricted()
    return caller_of(found["token"])


async def _sized(file: Part, length_range: tuple[int, int] | None) -> AsyncIterator[bytes]:
    # Too large fails at the first byte over, too small at the end: either way before
    # the writer can commit, so nothing is stored.
    low, high = length_range or (0, None)
    size = 0
    async for chunk in file:
        size += len(chunk)
        if high is not None and size > high:
            raise PostEntityTooLarge()
        yield chunk
    if size < low:
        raise PostEntityTooSmall()


def _success(fields: dict[str, str], bucket: str, key: str, headers: dict[str, str]) -> Response:
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    if redirect and urlsplit(redirect).scheme in ("http", "https"):
        query = urlencode({"bucket": bucket, "key": key, "etag": headers["ETag"]})
        separator = "&" if urlsplit(redirect).query else "?"
        return Response(
            status_code=303, headers={**headers, "Location": redirect + separator + query}
        )
    status = fields.get("success_action_status")
    if status == "201":
        response = xml_response(
            "PostResponse",
            [
                ("Location", headers["Location"]),
                ("Bucket", bucket),
                ("Key", key),
                ("ETag", headers["ETag"]),
            ],
            headers=headers,
        )
        response.status_code = 201
        return response
    # S3 answers 204 for any other value, an invalid one included.
    return Response(status_code=200 if status == "200" else 204, headers=headers)
