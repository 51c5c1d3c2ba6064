"""ListObjects (v1) and ListObjectsV2 over the index's listing (byte order, keys and
common prefixes merged, a marker that never yields a prefix twice)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from urllib.parse import quote

from starlette.responses import Response

from tfstorage.domain.names import validate_prefix
from tfstorage.domain.records import EntryListing, ListEntry
from tfstorage.errors import InvalidArgument, InvalidObjectName
from tfstorage.s3api.errors import xml_text
from tfstorage.s3api.request import S3Request
from tfstorage.s3api.responses import Node, RawXml, iso_time, xml_response
from tfstorage.service.authorization import authorize

MAX_KEYS = 1000
Encode = Callable[[str], str]


def max_keys(req: S3Request) -> int:
    text = req.query.get("max-keys", str(MAX_KEYS))
    if not text.isascii() or not text.isdigit():
        raise InvalidArgument("max-keys must be a non-negative integer")
    return min(int(text[:12]) if len(text) <= 12 else MAX_KEYS, MAX_KEYS)


def encoder(req: S3Request) -> tuple[str | None, Encode]:
    encoding = req.query.get("encoding-type")
    if encoding is None:
        return None, lambda text: text
    if encoding != "url":
        raise InvalidArgument("Invalid Encoding Method specified in Request")
    return "url", lambda text: quote(text, safe="/")


def can_start_a_key(prefix: str) -> bool:
    """False for a prefix no key may start with ("/", a control character): S3 lists
    nothing for it, where the service refuses it as a malformed name."""
    try:
        validate_prefix(prefix)
    except InvalidObjectName:
        return False
    return True


async def _list(req: S3Request, marker: str, limit: int) -> EntryListing:
    prefix = req.query.get("prefix", "")
    await authorize(req.storage, req.caller, "read", req.bucket, prefix)
    if limit == 0 or not can_start_a_key(prefix):
        await req.storage.buckets.get(req.bucket)
        return EntryListing(objects=[], common_prefixes=[], truncated=False, next_marker="")
    return await req.storage.objects.list_entries(
        req.bucket,
        prefix=prefix,
        delimiter=req.query.get("delimiter", ""),
        marker=marker,
        limit=limit,
    )


def contents(entries: list[ListEntry], encode: Encode, *, owner: bool) -> RawXml:
    """Every <Contents> of a page in one pass: only the key and the owner can need
    escaping (the ETag is hex, the rest numbers and dates), each escaped once."""
    owners: dict[str, str] = {}
    parts: list[str] = []
    for e in entries:
        who = ""
        if owner:
            who = owners.get(e.created_by, "")
            if not who:
                name = xml_text(e.created_by)
                who = owners[e.created_by] = (
                    f"<Owner><ID>{name}</ID><DisplayName>{name}</DisplayName></Owner>"
                )
        parts.append(
            f"<Contents><Key>{xml_text(encode(e.key))}</Key>"
            f"<LastModified>{iso_time(e.created_at)}</LastModified>"
            f'<ETag>"{e.parts_etag or e.etag}"</ETag><Size>{e.size}</Size>'
            f"<StorageClass>STANDARD</StorageClass>{who}</Contents>"
        )
    return RawXml("".join(parts))


def common_prefixes(listing: EntryListing, encode: Encode) -> list[Node]:
    return prefix_nodes(listing.common_prefixes, encode)


def prefix_nodes(prefixes: list[str], encode: Encode) -> list[Node]:
    return [("CommonPrefixes", [("Prefix", encode(p))]) for p in prefixes]


async def list_objects_v2(req: S3Request) -> Response:
    limit = max_keys(req)
    encoding, encode = encoder(req)
    token = req.query.get("continuation-token")
    start_after = req.query.get("start-after", "")
    marker = _decode_token(token) if token is not None else start_after
    listing = await _list(req, marker, limit)
    owner = req.query.get("fetch-owner", "").lower() == "true"
    delimiter = req.query.get("delimiter")
    truncated = listing.truncated
    return xml_response(
        "ListBucketResult",
        [
            ("Name", req.bucket),
            ("Prefix", encode(req.query.get("prefix", ""))),
            ("Delimiter", encode(delimiter) if delimiter else None),
            ("MaxKeys", limit),
            ("KeyCount", len(listing.objects) + len(listing.common_prefixes)),
            ("IsTruncated", listing.truncated),
            ("EncodingType", encoding),
            ("ContinuationToken", token),
            ("NextContinuationToken", _encode_token(listing.next_marker) if truncated else None),
            ("StartAfter", encode(start_after) if "start-after" in req.query else None),
            contents(listing.objects, encode, owner=owner),
            *common_prefixes(listing, encode),
        ],
    )


async def list_objects_v1(req: S3Request) -> Response:
    limit = max_keys(req)
    encoding, encode = encoder(req)
    marker = req.query.get("marker", "")
    listing = await _list(req, marker, limit)
    delimiter = req.query.get("delimiter")
    return xml_response(
        "ListBucketResult",
        [
            ("Name", req.bucket),
            # V1's Prefix goes back as sent, even with encoding-type=url: SDKs decode
            # Delimiter, Marker, NextMarker and keys there, never Prefix (botocore's
            # decode_list_object), so an encoded one would reach the caller encoded.
            ("Prefix", req.query.get("prefix", "")),
            ("Marker", encode(marker)),
            ("NextMarker", encode(listing.next_marker) if listing.truncated else None),
            ("MaxKeys", limit),
            ("Delimiter", encode(delimiter) if delimiter else None),
            ("IsTruncated", listing.truncated),
            ("EncodingType", encoding),
            contents(listing.objects, encode, owner=True),
            *common_prefixes(listing, encode),
        ],
    )


# The token is the last key or prefix of the page, opaque to clients as S3's is.
def _encode_token(marker: str) -> str:
    return base64.urlsafe_b64encode(marker.encode("utf-8", "surrogatepass")).decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeError):
        raise InvalidArgument("The continuation token provided is incorrect") from None
