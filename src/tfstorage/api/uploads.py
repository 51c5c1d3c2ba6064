"""Uploads from HTTP: a raw body (the fast path) or a streamed multipart form.

Form parts are parsed as they arrive (`MultipartStream`), each file going straight to
the blob store; fields may come before or after the files, so every file is staged
first and committed once the whole form has been read. Any failure discards every
staged blob and records nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Request

from tfstorage.api.conditions import write_condition
from tfstorage.api.deps import authorize
from tfstorage.domain.caller import Caller
from tfstorage.domain.conditions import WriteCondition
from tfstorage.domain.content_headers import stored_content_headers
from tfstorage.domain.metadata import parse_metadata, parse_tags
from tfstorage.domain.names import key_from_filename, validate_bucket_name, validate_key
from tfstorage.errors import (
    InvalidArgument,
    InvalidRequest,
    MissingFile,
    RequestTooLarge,
    StorageError,
)
from tfstorage.formdata import MultipartStream
from tfstorage.service.hashing import parse_content_md5, parse_sha256
from tfstorage.service.storage import Storage
from tfstorage.service.writes import Checksums, StagedBlob, Target, WriteResult

FORM_FIELDS = ("bucket", "key", "prefix", "metadata", "tags", "content_type", "sha256", "md5")
MAX_FILES_PER_REQUEST = 100
_FORM_OVERHEAD = 1024 * 1024  # boundaries, part headers and small fields
_MAX_FIELD = 64 * 1024


def request_body(request: Request) -> AsyncIterator[bytes]:
    """The body as it arrives; BodyDeadlineMiddleware cuts off a stalled or slow one (408)."""
    return request.stream()


def declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidRequest("Content-Length is not a number")
    return int(value)


async def put_raw(
    request: Request, storage: Storage, caller: Caller, bucket: str, key: str
) -> WriteResult:
    h = request.headers
    content_type = h.get("content-type")
    if content_type == "application/x-www-form-urlencoded":
        content_type = None  # what curl --data-binary sends when told nothing: guess instead
    return await storage.writer.put_object(
        bucket,
        key,
        request_body(request),
        declared_size=declared_length(request),
        content_type=content_type,
        metadata=parse_metadata(h.get("x-metadata")),
        tags=parse_tags(h.get("x-tags")),
        checksums=Checksums(
            md5=parse_content_md5(h.get("content-md5")),
            sha256=parse_sha256(h.get("x-checksum-sha256")),
        ),
        created_by=caller.name,
        max_size=caller.max_upload,
        condition=write_condition(request),
        content_headers=stored_content_headers(h.get),
    )


@dataclass
class _StagedFile:
    blob: StagedBlob
    filename: str
    content_type: str | None


@dataclass
class _Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: list[_StagedFile] = field(default_factory=list)


async def receive_form(
    request: Request,
    storage: Storage,
    caller: Caller,
    *,
    default_bucket: str,
    max_files: int = MAX_FILES_PER_REQUEST,
    allow_bucket: bool = True,
) -> list[WriteResult]:
    """Store every file of a multipart form; all of them become visible, or none.
    If-Match / If-None-Match apply to each file (judged when they commit)."""
    writer = storage.writer
    condition = write_condition(request)  # malformed: refused before any byte is read
    length = declared_length(request)
    if length is not None and length > writer.max_size * max_files + _FORM_OVERHEAD:
        writer.check_declared_size(length - _FORM_OVERHEAD)
    content_type = request.headers.get("content-type", "")
    accepted = FORM_FIELDS if allow_bucket else tuple(f for f in FORM_FIELDS if f != "bucket")
    form = _Form(fields={k: v for k, v in request.query_params.items() if k in accepted})
    try:
        async for part in MultipartStream(request_body(request), content_type):
            if part.filename is None:
                if part.name in accepted:
                    # Bounded well above the metadata limit, so an oversized metadata
                    # field gets metadata's own 400, and a huge one a prompt 413.
                    form.fields[part.name] = await part.read_text(_MAX_FIELD)
                continue  # unknown fields are skipped unread
            if len(form.files) >= max_files:
                raise RequestTooLarge(f"at most {max_files} files per request")
            filename = part.filename
            bucket = form.fields.get("bucket") or default_bucket
            # Refuse early what can be refused before reading the file. Only what is
            # already known is checked (fields may follow the file); everything is
            # checked again, with the final bucket and keys, before anything commits.
            if "bucket" in form.fields and ("key" in form.fields or "prefix" in form.fields):
                await authorize(storage, caller, "write", bucket, _early_key(form, filename))
            elif not caller.scopes & {"write", "admin"}:
                await authorize(storage, caller, "write", bucket, None)
            if "key" not in form.fields and "prefix" not in form.fields:
                await writer.check_target(bucket, key_from_filename(filename))
            blob = await writer.stage(part)
            form.files.append(_StagedFile(blob, filename, part.content_type))
        if not form.files:
            raise MissingFile()
        return await _commit_all(storage, caller, form, default_bucket, condition)
    except Exception:
        # (Not on cancellation: a blob whose commit may have landed must never be
        # deleted here; the orphan sweep checks the index before removing anything.)
        for staged in form.files:
            await writer.discard(staged.blob.blob_id)
        raise


async def _commit_all(
    storage: Storage,
    caller: Caller,
    form: _Form,
    default_bucket: str,
    condition: WriteCondition | None,
) -> list[WriteResult]:
    f = form.fields
    bucket = validate_bucket_name(f.get("bucket") or default_bucket)
    metadata = parse_metadata(f.get("metadata"))
    tags = parse_tags(f.get("tags"))
    keys = _keys_for(form)
    single = len(form.files) == 1
    checksums = Checksums(
        md5=f["md5"].lower() if single and f.get("md5") else None,
        sha256=parse_sha256(f["sha256"]) if single and f.get("sha256") else None,
    )
    if not single and ("md5" in f or "sha256" in f):
        raise InvalidArgument("md5/sha256 fields apply to single-file uploads only")
    if len(set(keys)) != len(keys):
        raise InvalidArgument("two files in one upload would have the same key")
    for key in keys:
        await authorize(storage, caller, "write", bucket, key)
        await storage.writer.check_target(bucket, key)

    content_type = f.get("content_type")
    targets = [
        Target(
            staged.blob,
            bucket,
            key,
            content_type or _part_type(staged.content_type),
            metadata,
            tags,
            checksums,
            condition,
        )
        for staged, key in zip(form.files, keys, strict=True)
    ]
    # From here the blobs belong to commit_all: it removes them on failure, and on
    # success they belong to the index.
    form.files.clear()
    return await storage.writer.commit_all(targets, created_by=caller.name)


def _keys_for(form: _Form) -> list[str]:
    """`key` names a single file; `prefix` (or a key ending in '/') prefixes filenames."""
    f = form.fields
    key, prefix = f.get("key"), f.get("prefix")
    if key and not key.endswith("/") and prefix is None:
        if len(form.files) == 1:
            return [validate_key(key)]
        prefix = key + "/"
    elif key and key.endswith("/"):
        prefix = key
    prefix = prefix or ""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return [validate_key(prefix + key_from_filename(s.filename)) for s in form.files]


def _early_key(form: _Form, filename: str) -> str | None:
    """The key this file will most likely get, for an early authorization check."""
    try:
        return _keys_for(_Form(form.fields, [_StagedFile(_NO_BLOB, filename, None)]))[0]
    except StorageError:
        return None  # validation reports it properly once the form is complete


_NO_BLOB = StagedBlob("", 0, "", "")


def _part_type(value: str | None) -> str | None:
    # Browsers and curl label unknown files application/octet-stream; a guess from the
    # key's extension is more useful then.
    if value is None or value == "application/octet-stream":
        return None
    return value
