from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfstorage.domain.categories import (
    CATEGORIES,
    categorize,
    in_bucket,
    key_category,
)


@pytest.mark.parametrize(
    ("bucket", "key", "content_type", "expected"),
    [
        ("datasets", "imagenet/train-0001.parquet", "application/octet-stream", "datasets"),
        ("data", "logs/2026.JSONL", "application/octet-stream", "datasets"),
        ("data", "shard.tfrecord", "application/octet-stream", "datasets"),
        ("data", "table", "text/csv; charset=utf-8", "datasets"),
        ("models", "resnet/v2/model.safetensors", "application/octet-stream", "models"),
        ("models", "resnet/v2/model.onnx", "application/octet-stream", "models"),
        ("models", "weights", "application/x-onnx", "models"),
        ("jobs", "job_7/epoch_3.pt", "application/octet-stream", "checkpoints"),
        ("jobs", "run/checkpoints/step-100.bin", "application/octet-stream", "checkpoints"),
        ("jobs", "anything.ckpt", "application/octet-stream", "checkpoints"),
        ("checkpoints", "resnet/final.pt", "application/octet-stream", "checkpoints"),
        ("ckpt-llama", "shard-00001.safetensors", "application/octet-stream", "checkpoints"),
        ("checkpoints", "train.csv", "text/csv", "datasets"),  # the hint turns models only
        ("artifacts", "notes.txt", "text/plain", "other"),
        ("artifacts", "epoch_3/notes.txt", "text/plain", "other"),
        ("artifacts", ".pt", "application/octet-stream", "other"),  # a hidden file
        ("artifacts", "dir.pt/readme", "application/octet-stream", "other"),
    ],
)
def test_categories(bucket: str, key: str, content_type: str, expected: str) -> None:
    assert categorize(bucket, key, content_type) == expected


@given(
    bucket=st.sampled_from(["models", "checkpoints", "data", "ckpt-x", "epochs"]),
    key=st.text(alphabet="abcEPOCHkpt._/-0123", max_size=30),
    ext=st.sampled_from(["", ".pt", ".ckpt", ".csv", ".onnx", ".txt", ".PT"]),
    content_type=st.sampled_from(["application/octet-stream", "text/csv", "application/onnx"]),
)
def test_stored_category_plus_bucket_hint_is_the_rule(
    bucket: str, key: str, ext: str, content_type: str
) -> None:
    # What the index stores per version, turned per bucket, equals the whole rule.
    name = key + ext
    whole = categorize(bucket, name, content_type)
    assert in_bucket(key_category(name, content_type), bucket) == whole
    assert whole in CATEGORIES
