"""Name rules for buckets and keys (S3's, tightened where paths could leak through)."""

from __future__ import annotations

import re

from tfstorage.errors import InvalidBucketName, InvalidObjectName, KeyTooLong

MAX_KEY_BYTES = 1024

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4_RE = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
# C0 controls, DEL and C1 controls: never part of a key a human meant to type.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# "C:" would make a key an absolute path wherever it is joined as a Windows path.
_DRIVE_RE = re.compile(r"[A-Za-z]:")


def validate_bucket_name(name: str) -> str:
    """Return `name` if it follows S3's bucket rules, else raise `InvalidBucketName`."""
    if not _BUCKET_RE.fullmatch(name):
        raise InvalidBucketName(
            "bucket names are 3-63 characters of lowercase letters, digits, '.' and '-',"
            " starting and ending with a letter or digit"
        )
    if ".." in name or ".-" in name or "-." in name:
        raise InvalidBucketName("bucket names cannot contain '..', '.-' or '-.'")
    if _IPV4_RE.fullmatch(name):
        raise InvalidBucketName("bucket names cannot look like an IP address")
    reserved_suffixes = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
    if name.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or name.endswith(reserved_suffixes):
        raise InvalidBucketName("bucket names cannot use S3's reserved prefixes or suffixes")
    return name


def validate_key(key: str) -> str:
    """Return `key` if it is a safe object key, else raise `InvalidObjectName`.

    Keys are opaque to the blob store, but clients map them onto file systems
    (`tfstorage cp -r`, archives), so anything that could climb out of a directory is
    refused: `.`/`..` segments, a leading `/`, backslashes, NUL and control characters.
    U+FFFD is refused too: it is what invalid or overlong UTF-8 decodes to.
    """
    if not key:
        raise InvalidObjectName("the object key is empty")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        raise InvalidObjectName("the object key is not valid UTF-8") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise KeyTooLong()
    if "\ufffd" in key:
        raise InvalidObjectName("the object key is not valid UTF-8")
    if _CONTROL_RE.search(key):
        raise InvalidObjectName("the object key contains control characters")
    if "\\" in key:
        raise InvalidObjectName("the object key contains a backslash")
    if key.startswith("/"):
        raise InvalidObjectName("the object key starts with '/'")
    if _DRIVE_RE.match(key):
        raise InvalidObjectName("the object key starts with a drive letter")
    if any(segment in (".", "..") for segment in key.split("/")):
        raise InvalidObjectName("the object key contains a '.' or '..' segment")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: the same characters as a key, but may be empty or partial."""
    if prefix:
        # A prefix ending in "." ("runs/." of "runs/.hidden") is a legitimate partial
        # key; validate a key of the same length starting like it.
        validate_key(prefix[:-1] + "x" if prefix.endswith(".") else prefix)
    return prefix


def filename_from_key(key: str) -> str:
    """The last segment of a key, used as the download filename."""
    return key.rsplit("/", 1)[-1] or "download"


def key_from_filename(filename: str) -> str:
    """A key from a client-supplied filename: its last path segment, whatever the OS."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return validate_key(base)
