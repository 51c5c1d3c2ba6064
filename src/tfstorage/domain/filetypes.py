"""Which file types the standard buckets accept, and content-type guessing."""

from __future__ import annotations

import mimetypes
import re

from tfstorage.errors import InvalidArgument

# The original service's lists, extended with what ML teams store today.
MODEL_TYPES = (
    ".pkl", ".h5", ".pt",  # the original's
    ".pth", ".safetensors", ".ckpt", ".onnx", ".gguf", ".bin", ".joblib", ".keras",
    ".pb", ".tflite", ".mlmodel", ".pickle", ".hdf5", ".msgpack", ".npz", ".json",
    ".txt", ".model", ".tar", ".gz", ".tgz", ".zip",
)  # fmt: skip
DATASET_TYPES = (
    ".csv", ".json", ".parquet",  # the original's
    ".jsonl", ".ndjson", ".arrow", ".feather", ".npy", ".npz", ".tfrecord", ".tfrecords",
    ".avro", ".orc", ".h5", ".hdf5", ".tsv", ".txt", ".xml", ".yaml", ".yml",
    ".zarr", ".lance", ".webdataset", ".tar", ".gz", ".tgz", ".zip", ".zst", ".bz2", ".xz",
    ".png", ".jpg", ".jpeg", ".wav", ".flac", ".mp3", ".mp4",
)  # fmt: skip

STANDARD_BUCKET_TYPES: dict[str, tuple[str, ...] | None] = {
    "models": MODEL_TYPES,
    "datasets": DATASET_TYPES,
    "checkpoints": None,
    "artifacts": None,
    "jobs": None,
}

# The system's MIME tables know some of these extensions as something else entirely
# (".pt" is a SNES page table there); ML formats are opaque binary unless listed.
_BINARY_TYPES = (
    ".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".onnx", ".gguf", ".pkl", ".pickle",
    ".h5", ".hdf5", ".joblib", ".keras", ".npy", ".npz", ".tfrecord", ".tfrecords", ".pb",
    ".tflite", ".msgpack", ".model", ".lance", ".feather", ".avro", ".orc",
)  # fmt: skip
_EXTRA_TYPES = {
    **dict.fromkeys(_BINARY_TYPES, "application/octet-stream"),
    ".parquet": "application/vnd.apache.parquet",
    ".jsonl": "application/jsonl",
    ".ndjson": "application/x-ndjson",
    ".arrow": "application/vnd.apache.arrow.file",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
}


def extension_of(name: str) -> str:
    """Lower-case extension with the dot (".pt"), or "" when there is none."""
    base = name.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return base[dot:].lower() if dot > 0 else ""


def is_allowed(name: str, allowed: tuple[str, ...] | None) -> bool:
    return allowed is None or extension_of(name) in allowed


def normalize_types(types: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Accept "pt", ".PT" or ".pt" and store ".pt"."""
    out = []
    for item in types:
        ext = item.strip().lower()
        if not ext:
            continue
        out.append(ext if ext.startswith(".") else "." + ext)
    return tuple(sorted(set(out)))


def guess_content_type(name: str) -> str:
    ext = extension_of(name)
    if ext in _EXTRA_TYPES:
        return _EXTRA_TYPES[ext]
    guessed, _ = mimetypes.guess_type("x" + ext, strict=False) if ext else (None, None)
    return guessed or "application/octet-stream"


_TCHARS = r"[A-Za-z0-9!#$&^_.+-]+"  # RFC 9110 token characters
_CONTENT_TYPE_RE = re.compile(rf"{_TCHARS}/{_TCHARS}(\s*;\s*{_TCHARS}=(?:{_TCHARS}|\"[ -~]*\"))*")


def validate_content_type(value: str | None) -> str | None:
    """A media type as HTTP allows it (`type/subtype; param=value`), or InvalidArgument.

    It is sent back as a response header, so anything else (CR/LF, non-ASCII) would
    make the object impossible to download.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > 255 or not _CONTENT_TYPE_RE.fullmatch(value):
        raise InvalidArgument("Content-Type must be a media type such as application/octet-stream")
    return value
