"""Allowed file types per bucket, extensions, and content-type guessing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfstorage.domain.filetypes import (
    DATASET_TYPES,
    MODEL_TYPES,
    STANDARD_BUCKET_TYPES,
    extension_of,
    guess_content_type,
    is_allowed,
    normalize_types,
)

names = st.text(st.sampled_from("ab./XZ .é"), max_size=20) | st.text(max_size=20)


@pytest.mark.parametrize(
    ("name", "ext"),
    [
        ("model.PT", ".pt"),
        ("a/b/model.tar.gz", ".gz"),
        ("a.b/model", ""),
        (".bashrc", ""),
        ("dir/.env", ""),
        ("noext", ""),
        ("trailing.", "."),
        ("", ""),
        ("x.SafeTensors", ".safetensors"),
    ],
)
def test_extension_of(name: str, ext: str) -> None:
    assert extension_of(name) == ext


@given(names)
def test_extension_is_a_lowercase_suffix_of_the_last_segment(name: str) -> None:
    ext = extension_of(name)
    last = name.rsplit("/", 1)[-1]
    if ext:
        assert ext.startswith(".") and "/" not in ext
        assert ext == ext.lower()
        assert last.lower().endswith(ext)
        assert len(ext) < len(last)  # a dot-file's leading dot is not an extension
        assert "." not in ext[1:]
    else:
        assert "." not in last[1:]


@given(names, st.lists(st.sampled_from([".pt", ".csv", ".gz", "."]), max_size=3))
def test_is_allowed(name: str, allowed: list[str]) -> None:
    assert is_allowed(name, None)
    assert is_allowed(name, tuple(allowed)) == (extension_of(name) in allowed)


@pytest.mark.parametrize(
    ("bucket", "name", "allowed"),
    [("models", "m.pt", True), ("models", "M.PKL", True), ("models", "m.csv", False),
     ("models", "m", False), ("datasets", "d.parquet", True), ("datasets", "d.pt", False),
     ("checkpoints", "anything.xyz", True), ("artifacts", "noext", True)],
)  # fmt: skip
def test_standard_buckets(bucket: str, name: str, allowed: bool) -> None:
    assert is_allowed(name, STANDARD_BUCKET_TYPES[bucket]) is allowed


def test_type_lists_are_normalized_and_keep_the_originals() -> None:
    for types in (MODEL_TYPES, DATASET_TYPES):
        assert normalize_types(types) == tuple(sorted(types))  # already normal, no dupes
    assert {".pkl", ".h5", ".pt"} <= set(MODEL_TYPES)
    assert {".csv", ".json", ".parquet"} <= set(DATASET_TYPES)


@given(st.lists(st.text(st.sampled_from("pPtT. cC"), max_size=5), max_size=8))
def test_normalize_types(types: list[str]) -> None:
    out = normalize_types(types)
    assert list(out) == sorted(set(out))
    assert all(ext.startswith(".") and ext == ext.lower() and ext == ext.strip() for ext in out)
    assert normalize_types(list(out)) == out
    for item in types:
        if item.strip():
            ext = item.strip().lower()
            assert (ext if ext.startswith(".") else "." + ext) in out


def test_normalize_types_examples() -> None:
    assert normalize_types(["pt", ".PT", " .pt ", "", "  ", "CSV"]) == (".csv", ".pt")


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("a.json", "application/json"),
        ("A.JSON", "application/json"),
        ("d.csv", "text/csv"),
        ("m.safetensors", "application/octet-stream"),
        ("t.parquet", "application/vnd.apache.parquet"),
        ("x.jsonl", "application/jsonl"),
        ("c.yaml", "application/yaml"),
        ("noext", "application/octet-stream"),
        ("x.unknownext", "application/octet-stream"),
        ("i.png", "image/png"),
    ],
)
def test_guess_content_type(name: str, content_type: str) -> None:
    assert guess_content_type(name) == content_type


@given(names)
def test_guess_content_type_is_always_a_media_type(name: str) -> None:
    kind, slash, sub = guess_content_type(name).partition("/")
    assert kind and slash and sub
