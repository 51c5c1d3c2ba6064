"""Request XML (DeleteObjects, CompleteMultipartUpload) parsed into plain dataclasses.

The parser is defusedxml with DTDs, entities and external references forbidden, and
it only ever sees a body read under a size cap: a billion-laughs document, an
external entity or a gigabyte of XML is refused before it can cost anything. S3's
namespace is optional on input, as clients differ in sending it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element  # the type only: parsing goes through defusedxml

import defusedxml.ElementTree as safe_xml
from defusedxml import DefusedXmlException

from tfstorage.errors import InvalidTag
from tfstorage.s3api import checksums
from tfstorage.s3api.errors import MalformedXML, MaxMessageLengthExceeded

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_XML_BODY = 2 * 1024 * 1024  # 1000 DeleteObjects keys of 1024 bytes fit with room
MAX_DELETE_KEYS = 1000
MAX_PART_NUMBER = 10000


async def read_capped(source: AsyncIterable[bytes], limit: int = MAX_XML_BODY) -> bytes:
    """The whole body, refused as soon as it passes `limit` bytes."""
    body = bytearray()
    async for piece in source:
        body += piece
        if len(body) > limit:
            raise MaxMessageLengthExceeded(f"the XML body is larger than {limit} bytes")
    return bytes(body)


def parse(body: bytes, *, root: str, limit: int = MAX_XML_BODY) -> Element:
    if len(body) > limit:
        raise MaxMessageLengthExceeded(f"the XML body is larger than {limit} bytes")
    try:
        element: Element = safe_xml.fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except (safe_xml.ParseError, DefusedXmlException, ValueError):
        raise MalformedXML() from None
    if _local(element.tag) != root:
        raise MalformedXML(f"the root element must be {root}")
    return element


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: Element, name: str) -> list[Element]:
    return [child for child in element if _local(child.tag) == name]


def _text(element: Element, name: str, *, required: bool = True) -> str | None:
    found = _children(element, name)
    if len(found) > 1:
        raise MalformedXML(f"{name} is given more than once")
    if not found:
        if required:
            raise MalformedXML(f"{name} is missing")
        return None
    return found[0].text or ""


@dataclass(frozen=True)
class ObjectIdentifier:
    key: str
    version_id: str | None = None


@dataclass(frozen=True)
class DeleteObjectsRequest:
    objects: list[ObjectIdentifier]
    quiet: bool = False


def parse_delete_objects(body: bytes) -> DeleteObjectsRequest:
    root = parse(body, root="Delete")
    objects = []
    for item in _children(root, "Object"):
        key = _text(item, "Key")
        assert key is not None
        objects.append(ObjectIdentifier(key, _text(item, "VersionId", required=False)))
    if not objects or len(objects) > MAX_DELETE_KEYS:
        raise MalformedXML(f"a Delete request names 1 to {MAX_DELETE_KEYS} objects")
    quiet = (_text(root, "Quiet", required=False) or "false").strip().lower()
    if quiet not in ("true", "false"):
        raise MalformedXML("Quiet must be true or false")
    return DeleteObjectsRequest(objects, quiet == "true")


@dataclass(frozen=True)
class CompletedPart:
    part_number: int
    etag: str
    checksums: dict[str, str] = field(default_factory=dict)  # algorithm -> base64


@dataclass(frozen=True)
class CompleteMultipartUploadRequest:
    parts: list[CompletedPart]


def parse_complete_multipart_upload(body: bytes) -> CompleteMultipartUploadRequest:
    root = parse(body, root="CompleteMultipartUpload")
    parts = []
    for item in _children(root, "Part"):
        number = (_text(item, "PartNumber") or "").strip()
        if (
            not number.isascii()
            or not number.isdigit()
            or len(number) > 5
            or not 1 <= int(number) <= MAX_PART_NUMBER
        ):
            raise MalformedXML(f"PartNumber must be 1 to {MAX_PART_NUMBER}")
        etag = (_text(item, "ETag") or "").strip()
        if not etag:
            raise MalformedXML("ETag is missing")
        sums: dict[str, str] = {}
        for algorithm in checksums.ALGORITHMS:
            value = _text(item, "Checksum" + algorithm.upper(), required=False)
            if value is not None:
                checksums.parse_checksum(algorithm, value, header="Checksum" + algorithm.upper())
                sums[algorithm] = value.strip()
        parts.append(CompletedPart(int(number), etag, sums))
    if not parts:
        raise MalformedXML("a CompleteMultipartUpload request lists at least one part")
    return CompleteMultipartUploadRequest(parts)


MAX_TAGS = 50


def parse_tagging(body: bytes) -> dict[str, str]:
    """`<Tagging><TagSet><Tag><Key/><Value/></Tag>...</TagSet></Tagging>`; keys unique."""
    root = parse(body, root="Tagging")
    sets = _children(root, "TagSet")
    if len(sets) != 1:
        raise MalformedXML("Tagging needs exactly one TagSet")
    tags: dict[str, str] = {}
    for item in _children(sets[0], "Tag"):
        key = _text(item, "Key")
        value = _text(item, "Value")
        assert key is not None and value is not None
        if key in tags:
            raise InvalidTag("Cannot provide multiple Tags with the same key")
        tags[key] = value
    if len(tags) > MAX_TAGS:
        raise InvalidTag(f"Object tags cannot be greater than {MAX_TAGS}")
    return tags


def parse_versioning(body: bytes) -> bool | None:
    """`<VersioningConfiguration><Status>Enabled|Suspended</Status>`: True, False, or None
    when no Status is given (a request that changes nothing)."""
    root = parse(body, root="VersioningConfiguration")
    status = _text(root, "Status", required=False)
    if status is None:
        return None
    if status not in ("Enabled", "Suspended"):
        raise MalformedXML("Status must be Enabled or Suspended")
    return status == "Enabled"
