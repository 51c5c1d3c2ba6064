"""What kind of ML artifact an object is: datasets, models, checkpoints or other.

Decided from the key's extension and the content type, with a checkpoint hint from
the names (a `.pt` under `checkpoints/` or `job_1/epoch_3.pt` is a checkpoint, the
same file under `resnet/v2/` a model). The index's statistics group its rows by the
inputs below (a known extension, a known content type, the hint) and this module
turns each group into its category, so the rule lives in one place.
"""

from __future__ import annotations

from typing import Final, Literal

from tfstorage.domain.filetypes import extension_of

Category = Literal["datasets", "models", "checkpoints", "other"]
CATEGORIES: Final[tuple[Category, ...]] = ("datasets", "models", "checkpoints", "other")

CHECKPOINT_EXTENSIONS: Final = (".ckpt", ".distcp")
# Weights: a model, or a checkpoint when the names say so.
MODEL_EXTENSIONS: Final = (
    ".pt", ".pth", ".safetensors", ".onnx", ".h5", ".hdf5", ".keras", ".bin", ".gguf",
    ".pb", ".tflite", ".mlmodel", ".joblib", ".pkl", ".pickle", ".msgpack", ".model",
)  # fmt: skip
DATASET_EXTENSIONS: Final = (
    ".parquet", ".csv", ".tsv", ".jsonl", ".ndjson", ".tfrecord", ".tfrecords", ".arrow",
    ".feather", ".avro", ".orc", ".npy", ".npz", ".lance", ".zarr", ".webdataset",
)  # fmt: skip
KNOWN_EXTENSIONS: Final = CHECKPOINT_EXTENSIONS + MODEL_EXTENSIONS + DATASET_EXTENSIONS

# Media types (without parameters) that settle it when the extension does not.
DATASET_CONTENT_TYPES: Final = (
    "text/csv", "text/tab-separated-values", "application/jsonl", "application/x-ndjson",
    "application/vnd.apache.parquet", "application/x-parquet",
    "application/vnd.apache.arrow.file", "application/vnd.apache.arrow.stream",
    "application/avro", "application/x-tfrecord",
)  # fmt: skip
MODEL_CONTENT_TYPES: Final = ("application/onnx", "application/x-onnx", "application/x-hdf5")
KNOWN_CONTENT_TYPES: Final = DATASET_CONTENT_TYPES + MODEL_CONTENT_TYPES

# Lower-case fragments of a key or bucket name that mark training checkpoints.
CHECKPOINT_HINTS: Final = ("checkpoint", "ckpt", "epoch")


def known_extension(key: str) -> str:
    """The key's extension if it is one of KNOWN_EXTENSIONS, else ""."""
    ext = extension_of(key)
    return ext if ext in KNOWN_EXTENSIONS else ""


def known_content_type(content_type: str) -> str:
    """The media type without parameters, lower-case, if it is known, else ""."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media if media in KNOWN_CONTENT_TYPES else ""


def has_checkpoint_hint(name: str) -> bool:
    lowered = name.lower()
    return any(hint in lowered for hint in CHECKPOINT_HINTS)


def category_of(extension: str, content_type: str, *, checkpoint_hint: bool) -> Category:
    """The category of an object with this (known) extension and (known) media type."""
    if extension in CHECKPOINT_EXTENSIONS:
        return "checkpoints"
    if extension in MODEL_EXTENSIONS:
        return "checkpoints" if checkpoint_hint else "models"
    if extension in DATASET_EXTENSIONS or content_type in DATASET_CONTENT_TYPES:
        return "datasets"
    if content_type in MODEL_CONTENT_TYPES:
        return "checkpoints" if checkpoint_hint else "models"
    return "other"


def key_category(key: str, content_type: str) -> Category:
    """The category the key and content type alone give (stored with each version)."""
    return category_of(
        known_extension(key),
        known_content_type(content_type),
        checkpoint_hint=has_checkpoint_hint(key),
    )


def in_bucket(category: Category, bucket: str) -> Category:
    """A bucket named like checkpoints makes its models checkpoints."""
    return "checkpoints" if category == "models" and has_checkpoint_hint(bucket) else category


def categorize(bucket: str, key: str, content_type: str) -> Category:
    """The category of one object: `category_of` with the hint from key or bucket."""
    return in_bucket(key_category(key, content_type), bucket)
