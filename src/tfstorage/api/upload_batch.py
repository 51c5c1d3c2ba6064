"""A multi-file form upload that answers for each file (POST /api/v1/files/upload).

Each file is named, checked, stored and checksum-verified on its own; the ones that pass
become visible together in one index transaction, the others are reported with their
own error and leave nothing behind. What breaks the request itself (authentication, an
unknown bucket, a malformed body, too many files, bad form fields) still fails it whole,
with nothing stored. `atomic=true` (a field or the query) asks for all or nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup
from fastapi import Request

from tfstorage.api.conditions import write_condition
from tfstorage.api.deps import authorize
from tfstorage.api.uploads import (
    FORM_FIELDS,
    MAX_FILES_PER_REQUEST,
    declared_length,
    request_body,
)
from tfstorage.domain.caller import Caller
from tfstorage.domain.conditions import WriteCondition
from tfstorage.domain.metadata import parse_metadata, parse_tags
from tfstorage.domain.names import key_from_filename, validate_bucket_name, validate_key
from tfstorage.domain.records import Bucket
from tfstorage.errors import (
    AccessDenied,
    BadDigest,
    EntityTooLarge,
    InvalidArgument,
    InvalidDigest,
    InvalidObjectName,
    MissingFile,
    QuotaExceeded,
    RequestTimeout,
    RequestTooLarge,
    StorageError,
    UnsupportedFileType,
)
from tfstorage.formdata import MultipartStream, Part
from tfstorage.service.hashing import parse_content_md5, parse_sha256
from tfstorage.service.storage import Storage
from tfstorage.service.writes import Checksums, StagedBlob, Target, WriteResult, check_allowed_type

_FIELDS = (*FORM_FIELDS, "atomic")
_FORM_OVERHEAD = 1024 * 1024
_SMALL = 256 * 1024  # files up to this size are staged in the background
_STAGING = 16  # small files written at once
_MAX_FIELD = 64 * 1024
# Refusals that concern one file; any other error breaks the whole request.
PER_FILE_ERRORS = (
    AccessDenied,  # a key outside the token's prefix
    BadDigest,
    EntityTooLarge,
    InvalidDigest,
    InvalidObjectName,
    QuotaExceeded,
    RequestTimeout,  # raised by the commit for a file staged too long ago
    UnsupportedFileType,
)


@dataclass
class FileOutcome:
    """One file of the form: stored (`result`) or refused (`error`), in form order."""

    filename: str
    key: str | None = None
    result: WriteResult | None = None
    error: StorageError | None = None
    blob: StagedBlob | None = None
    content_type: str | None = None
    checksums: Checksums = field(default_factory=Checksums)


@dataclass
class _Form:
    fields: dict[str, str]
    files: list[FileOutcome] = field(default_factory=list)


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


async def receive_files(
    request: Request, storage: Storage, caller: Caller, *, default_bucket: str
) -> list[FileOutcome]:
    writer = storage.writer
    condition = write_condition(request)  # malformed: refused before any byte is read
    length = declared_length(request)
    if length is not None and length > writer.max_size * MAX_FILES_PER_REQUEST + _FORM_OVERHEAD:
        writer.check_declared_size(length - _FORM_OVERHEAD)
    form = _Form({k: v for k, v in request.query_params.items() if k in _FIELDS})
    content_type = request.headers.get("content-type", "")
    try:
        async with _Stager(storage) as stager:
            try:
                async for part in MultipartStream(request_body(request), content_type):
                    if part.filename is None:
                        if part.name in _FIELDS:
                            form.fields[part.name] = await part.read_text(_MAX_FIELD)
                        continue  # unknown fields are skipped unread
                    if len(form.files) >= MAX_FILES_PER_REQUEST:
                        raise RequestTooLarge(f"at most {MAX_FILES_PER_REQUEST} files per request")
                    outcome = FileOutcome(part.filename, content_type=part.content_type)
                    form.files.append(outcome)
                    await _receive_file(
                        storage, caller, form, outcome, part, default_bucket, stager
                    )
            except Exception as exc:
                stager.abort(exc)
        stager.raise_if_failed()
        if not form.files:
            raise MissingFile()
        return await _commit(storage, caller, form, default_bucket, condition)
    except Exception:
        # (Not on cancellation: a blob whose commit may have landed is never deleted
        # here; the orphan sweep checks the index before removing anything.)
        for outcome in form.files:
            if outcome.blob is not None and outcome.result is None:
                await writer.discard(outcome.blob.blob_id)
        raise


async def _receive_file(
    storage: Storage,
    caller: Caller,
    form: _Form,
    outcome: FileOutcome,
    part: Part,
    default_bucket: str,
    stager: _Stager,
) -> None:
    """Stage one file, or record why it is refused (its bytes are then skipped unread)."""
    f = form.fields
    bucket = f.get("bucket") or default_bucket
    # Whole-request refusals first: a caller who may write nothing here learns it now.
    if "bucket" in f:
        await authorize(storage, caller, "write", bucket, caller.prefix or None)
    elif not caller.scopes & {"write", "admin"}:
        await authorize(storage, caller, "write", bucket, None)
    try:
        headers = part.headers
        outcome.checksums = Checksums(
            md5=parse_content_md5(headers.content_md5),
            sha256=parse_sha256(headers.checksum_sha256),
        )
        if "bucket" in f and ("key" in f or "prefix" in f):
            # Everything this file's checks need is known: refuse before reading it.
            outcome.key = key = _key_for(f, outcome.filename, single=False)
            await authorize(storage, caller, "write", bucket, key)
            await storage.writer.check_target(bucket, key)
        await stager.stage(outcome, part)
    except PER_FILE_ERRORS as exc:
        outcome.error = exc


class _Stager:
    """Stages files while the form is still being read.

    A small file (the SDK sends batches of ~100 x 4 KiB) is read into memory and written
    to the blob store in the background, so that the durable writes (an fsync each on
    local disk, a PUT each on S3) of many files overlap; at most `_STAGING` of them at a
    time, so memory stays bounded. A larger file streams straight to the blob store.
    Errors that concern one file land on its outcome; any other stops the form.
    """

    def __init__(self, storage: Storage) -> None:
        self._writer = storage.writer
        self._slots = anyio.Semaphore(_STAGING)
        self._failure: BaseException | None = None
        self._tasks: TaskGroup | None = None

    async def __aenter__(self) -> _Stager:
        self._tasks = await anyio.create_task_group().__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> bool | None:
        assert self._tasks is not None
        return await self._tasks.__aexit__(*exc_info)  # type: ignore[arg-type]

    def abort(self, exc: BaseException) -> None:
        # The stagings under way are left to finish (there are at most `_STAGING` small
        # ones), not cancelled: a write cancelled midway may still land in the store
        # with nobody left to discard it.
        if self._failure is None:
            self._failure = exc

    def raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def stage(self, outcome: FileOutcome, part: Part) -> None:
        self.raise_if_failed()  # a background staging broke the request: stop reading
        head: list[bytes] = []
        size = 0
        async for chunk in part:
            head.append(chunk)
            size += len(chunk)
            if size > _SMALL:
                outcome.blob = await self._writer.stage(_chain(head, part))
                return
        assert self._tasks is not None
        await self._slots.acquire()
        self._tasks.start_soon(self._stage_small, outcome, head)

    async def _stage_small(self, outcome: FileOutcome, head: list[bytes]) -> None:
        try:
            outcome.blob = await self._writer.stage(_chain(head, None))
        except PER_FILE_ERRORS as exc:
            outcome.error = exc
        except Exception as exc:
            self.abort(exc)
        finally:
            self._slots.release()


async def _chain(head: list[bytes], rest: Part | None) -> AsyncIterator[bytes]:
    while head:
        yield head.pop(0)
    if rest is not None:
        async for chunk in rest:
            yield chunk


def _key_for(fields: dict[str, str], filename: str, *, single: bool) -> str:
    """`key` names a single file; `prefix` (or a key ending in '/') prefixes filenames."""
    key, prefix = fields.get("key"), fields.get("prefix")
    if key and not key.endswith("/") and prefix is None:
        if single:
            return validate_key(key)
        prefix = key + "/"
    elif key and key.endswith("/"):
        prefix = key
    prefix = prefix or ""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return validate_key(prefix + key_from_filename(filename))


async def _commit(
    storage: Storage,
    caller: Caller,
    form: _Form,
    default_bucket: str,
    condition: WriteCondition | None,
) -> list[FileOutcome]:
    f = form.fields
    files = form.files
    bucket = validate_bucket_name(f.get("bucket") or default_bucket)
    await authorize(storage, caller, "write", bucket, caller.prefix or None)
    record = await storage.ctx.db(storage.ctx.index.get_bucket, bucket)
    metadata = parse_metadata(f.get("metadata"))
    tags = parse_tags(f.get("tags"))
    single = len(files) == 1
    if not single and ("md5" in f or "sha256" in f):
        raise InvalidArgument(
            "md5/sha256 fields apply to single-file uploads only; send each file's"
            " Content-MD5 or X-Checksum-SHA256 as a header of its part"
        )
    seen: set[str] = set()
    for outcome in files:
        if outcome.error is None:
            await _check_file(storage, caller, record, f, outcome, single=single, seen=seen)
        elif outcome.key is None:
            with contextlib.suppress(StorageError):  # for the report only
                outcome.key = _key_for(f, outcome.filename, single=single)
    atomic = _true(f.get("atomic"))
    failed = next((o.error for o in files if o.error is not None), None)
    if atomic and failed is not None:
        raise failed  # every staged blob is discarded by the caller
    ready = [o for o in files if o.error is None and o.blob is not None and o.key is not None]
    targets = [
        Target(
            o.blob,
            bucket,
            o.key,
            f.get("content_type") or _part_type(o.content_type),
            metadata,
            tags,
            o.checksums,
            condition,  # each file's own: a 412 refuses that file alone (unless atomic)
        )
        for o in ready
        if o.blob is not None and o.key is not None
    ]
    # From here the blobs belong to the writer: it removes the ones it refuses.
    for o in files:
        if o.error is not None and o.blob is not None:
            await storage.writer.discard(o.blob.blob_id)
        o.blob = None
    if not targets:
        return files
    if atomic:
        results: list[WriteResult | StorageError] = list(
            await storage.writer.commit_all(targets, created_by=caller.name)
        )
    else:
        results = await storage.writer.commit_each(targets, created_by=caller.name)
    for outcome, result in zip(ready, results, strict=True):
        if isinstance(result, StorageError):
            outcome.error = result
        else:
            outcome.result = result
    return files


async def _check_file(
    storage: Storage,
    caller: Caller,
    record: Bucket,
    f: dict[str, str],
    outcome: FileOutcome,
    *,
    single: bool,
    seen: set[str],
) -> None:
    try:
        key = _key_for(f, outcome.filename, single=single)
        outcome.key = key
        if key in seen:
            raise InvalidObjectName(f"two files in one upload would have the key {key!r}")
        seen.add(key)
        await authorize(storage, caller, "write", record.name, key)
        check_allowed_type(record, key)
        if single and outcome.checksums == Checksums():
            outcome.checksums = Checksums(
                md5=f["md5"].lower() if f.get("md5") else None,
                sha256=parse_sha256(f["sha256"]) if f.get("sha256") else None,
            )
    except PER_FILE_ERRORS as exc:
        outcome.error = exc


def _part_type(value: str | None) -> str | None:
    # Browsers and curl label unknown files application/octet-stream; a guess from the
    # key's extension is more useful then.
    if value is None or value == "application/octet-stream":
        return None
    return value
