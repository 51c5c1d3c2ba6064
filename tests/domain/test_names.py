"""Bucket and key names: an independent oracle for S3's bucket rules, and the safety
properties a key must keep when a client maps it onto a file system."""

from __future__ import annotations

import ntpath
import os.path
import posixpath
import unicodedata

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from tfstorage.domain.names import (
    MAX_KEY_BYTES,
    filename_from_key,
    key_from_filename,
    validate_bucket_name,
    validate_key,
    validate_prefix,
)
from tfstorage.errors import InvalidBucketName, InvalidObjectName, KeyTooLong

# Reserved affixes S3 added after this module was written; fixed.
_NEWER_PREFIXES = ("amzn-s3-demo-",)
_NEWER_SUFFIXES = (".mrap", "--x-s3", "--table-s3")


def s3_bucket_name_ok(name: str) -> bool:
    """S3's general-purpose bucket rules, written label by label (not as one regex).

    Includes the legacy DNS rule the module keeps on purpose: every dot-separated
    label starts and ends with a letter or digit (so no '..', '.-' or '-.').
    """
    if not 3 <= len(name) <= 63:
        return False
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789.-")
    if any(c not in allowed for c in name):
        return False
    labels = name.split(".")
    for label in labels:
        if not label or not label[0].isalnum() or not label[-1].isalnum():
            return False
    if len(labels) == 4 and all(label.isdigit() and len(label) <= 3 for label in labels):
        return False  # formatted as an IPv4 address
    if name.startswith(("xn--", "sthree-", *_NEWER_PREFIXES)):
        return False
    return not name.endswith(("-s3alias", "--ol-s3", *_NEWER_SUFFIXES))


def _uses_newer_affix(name: str) -> bool:
    return name.startswith(_NEWER_PREFIXES) or name.endswith(_NEWER_SUFFIXES)


def _accepts_bucket(name: str) -> bool:
    try:
        result = validate_bucket_name(name)
    except InvalidBucketName:
        return False
    assert result == name
    return True


bucket_alphabet = st.sampled_from("abz09.-A_ ")
bucket_like = st.one_of(
    st.text(bucket_alphabet, min_size=0, max_size=70),
    st.text(st.sampled_from("az09.-"), min_size=2, max_size=64),
    st.lists(st.integers(0, 999), min_size=4, max_size=4).map(lambda p: ".".join(map(str, p))),
    st.tuples(
        st.sampled_from(["xn--", "sthree-", "sthree-configurator", ""]),
        st.text(st.sampled_from("ab1"), min_size=1, max_size=10),
        st.sampled_from(["-s3alias", "--ol-s3", ""]),
    ).map("".join),
    st.text(max_size=70),
)


@given(bucket_like)
@example("abc")
@example("a.b")
@example("ab")
@example("a" * 63)
@example("a" * 64)
@example("192.168.5.4")
@example("192.168.5.4a")
@example("1.2.3")
@example("a..b")
@example("a.-b")
@example("a-.b")
@example("-ab")
@example("ab-")
@example("Abc")
@example("xn--abc")
@example("sthree-abc")
@example("abc-s3alias")
@example("abc--ol-s3")
@example("abc\n")
def test_bucket_names_match_s3_rules(name: str) -> None:
    assume(not _uses_newer_affix(name))  # pinned separately, below
    assert _accepts_bucket(name) == s3_bucket_name_ok(name)


@pytest.mark.parametrize("name", ["models", "datasets", "checkpoints", "artifacts", "jobs"])
def test_standard_buckets_are_valid(name: str) -> None:
    assert validate_bucket_name(name) == name


@pytest.mark.parametrize("name", ["amzn-s3-demo-bucket", "data.mrap", "data--x-s3", "t--table-s3"])
def test_newer_s3_reserved_affixes_are_refused(name: str) -> None:
    assert not s3_bucket_name_ok(name)
    with pytest.raises(InvalidBucketName):
        validate_bucket_name(name)


# Keys ----------------------------------------------------------------------------------

_NASTY = [
    "a", "b", "/", ".", "..", "\\", "\x00", "\x1f", "\x7f", "\x85", "\x9f", "\xa0", " ",
    "é", "😀", "\ufffd", "\ud800", "\udfff", ":", "C", "~", "\u2028", "\u202e", "%2e",
]  # fmt: skip
key_text = st.one_of(
    st.lists(st.sampled_from(_NASTY), max_size=20).map("".join),
    st.lists(st.sampled_from(["a", ".", "..", "", "...", "a.b", ". ", "é", "\\"]), max_size=6).map(
        "/".join
    ),
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), min_size=1000, max_size=1100),
    st.tuples(st.sampled_from(["a", "é", "😀"]), st.integers(250, 1100)).map(lambda t: t[0] * t[1]),
)


def key_problem(key: str) -> type[InvalidObjectName] | None:
    """The oracle: which error a key deserves, or None when it is safe."""
    if not key:
        return InvalidObjectName
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return InvalidObjectName
    if size > MAX_KEY_BYTES:
        return KeyTooLong
    if any(unicodedata.category(c) == "Cc" for c in key):
        return InvalidObjectName
    if "\ufffd" in key or "\\" in key or key.startswith("/"):
        return InvalidObjectName
    if {".", ".."} & set(key.split("/")):
        return InvalidObjectName
    return None


@given(key_text)
@example("a" * MAX_KEY_BYTES)
@example("a" * (MAX_KEY_BYTES + 1))
@example("é" * 512)
@example("é" * 513)
@example("a/./b")
@example("a/../b")
@example("..")
@example("./a")
@example("a/..")
@example("a/")
@example("a//b")
@example("...")
@example(".a/..b")
def test_validate_key_agrees_with_oracle(key: str) -> None:
    expected = key_problem(key)
    if expected is None:
        assert validate_key(key) is key
    else:
        with pytest.raises(InvalidObjectName) as info:
            validate_key(key)
        assert type(info.value) is expected
        assert info.value.status == 400


@given(key_text)
def test_accepted_keys_cannot_escape_a_directory(key: str) -> None:
    try:
        validate_key(key)
    except InvalidObjectName:
        return
    encoded = key.encode("utf-8")
    assert 0 < len(encoded) <= MAX_KEY_BYTES
    segments = key.split("/")
    assert "." not in segments and ".." not in segments
    assert not key.startswith("/")
    assert "\\" not in key and "\x00" not in key
    assert not any(unicodedata.category(c) == "Cc" for c in key)

    root = "/srv/export/root"
    joined = posixpath.normpath(os.path.join(root, key))
    assert posixpath.commonpath([root, joined]) == root
    assert joined != root  # the key names something inside, never the directory itself


def test_drive_letter_keys_cannot_escape_on_windows() -> None:
    root = "C:\\export\\root"
    key = "D:/evil.bin"
    try:
        validate_key(key)
    except InvalidObjectName:
        return
    joined = ntpath.normpath(ntpath.join(root, key))
    assert ntpath.commonpath([root, joined]) == root


# Prefixes ------------------------------------------------------------------------------


def prefix_ok(prefix: str) -> bool:
    """A prefix is valid when it is empty or some valid key starts with it."""
    if not prefix:
        return True
    return key_problem(prefix) is None or key_problem(prefix + "x") is None


@given(key_text)
@example("a/")
@example("a/.")
@example("a/..")
@example(".")
@example("..")
@example("../")
@example("a/../")
@example("/")
@example("a\\")
def test_validate_prefix_accepts_exactly_the_prefixes_of_valid_keys(prefix: str) -> None:
    if prefix_ok(prefix):
        assert validate_prefix(prefix) is prefix
    else:
        with pytest.raises(InvalidObjectName):
            validate_prefix(prefix)


@pytest.mark.parametrize("prefix", ["a" * 1023 + "/", "a" * 1023 + "."])
def test_longest_prefix_that_is_a_key_is_accepted(prefix: str) -> None:
    assert validate_key(prefix) == prefix
    assert validate_prefix(prefix) == prefix


# Filenames -----------------------------------------------------------------------------


@given(
    st.lists(st.sampled_from([*_NASTY, "x", "y"]), max_size=30).map("".join) | st.text(max_size=30)
)
def test_key_from_filename_is_a_single_valid_segment_or_refused(filename: str) -> None:
    try:
        key = key_from_filename(filename)
    except InvalidObjectName:
        return
    assert validate_key(key) == key
    assert "/" not in key and "\\" not in key
    assert key == key.strip()
    assert filename.replace("\\", "/").rstrip().endswith(key)


segment = st.text(st.sampled_from("abcé😀-_ .x"), min_size=1, max_size=20).filter(
    lambda s: s.strip() == s and s not in (".", "..")
)


@given(
    st.sampled_from(["", "dir/", "/abs/dir/", "C:\\Users\\me\\", "..\\..\\", "../../", "a\\b/"]),
    segment,
)
def test_key_from_filename_keeps_only_the_last_segment(directory: str, name: str) -> None:
    assert key_from_filename(directory + name) == name


@pytest.mark.parametrize("filename", ["", "   ", "dir/", "..", "a/..", "C:\\..", "x/\x00"])
def test_key_from_filename_refuses_names_without_a_usable_last_segment(filename: str) -> None:
    with pytest.raises(InvalidObjectName):
        key_from_filename(filename)


@pytest.mark.parametrize(
    ("key", "filename"),
    [("a/b/model.pt", "model.pt"), ("model.pt", "model.pt"), ("dir/", "download")],
)
def test_filename_from_key(key: str, filename: str) -> None:
    assert filename_from_key(key) == filename
