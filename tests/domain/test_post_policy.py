from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tfstorage.domain.post_policy import parse_policy
from tfstorage.errors import AccessDenied, InvalidPolicyDocument

pytestmark = pytest.mark.timeout(10)

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def encoded(document: Any) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def policy(*conditions: Any, expiration: str = "2030-01-02T00:00:00Z") -> str:
    return encoded({"expiration": expiration, "conditions": [{"bucket": "b"}, *conditions]})


def test_conditions_hold_with_case_insensitive_names() -> None:
    parsed = parse_policy(
        policy(
            ["starts-with", "$Key", "user/"],
            {"Content-Type": "text/plain"},
            ["eq", "$x-amz-meta-run", "7"],
            ["content-length-range", "1", 10],
        )
    )
    assert parsed.length_range == (1, 10)
    fields = {"key": "user/a", "content-type": "text/plain", "x-amz-meta-run": "7"}
    parsed.check(fields, bucket="b", now=NOW)
    parsed.check({**fields, "x-ignore-me": "1", "x-amz-signature": "s"}, bucket="b", now=NOW)


@pytest.mark.parametrize(
    ("fields", "bucket", "reason"),
    [
        ({"key": "other/a", "content-type": "text/plain"}, "b", "Policy Condition failed"),
        ({"key": "user/a", "content-type": "Text/Plain"}, "b", "Policy Condition failed"),
        ({"key": "user/a"}, "b", "Policy Condition failed"),  # a condition on an absent field
        ({"key": "user/a", "content-type": "text/plain"}, "c", "Policy Condition failed"),
        ({"key": "user/a", "content-type": "text/plain", "acl": "x"}, "b", "Extra input fields"),
    ],
)
def test_refusals_say_why(fields: dict[str, str], bucket: str, reason: str) -> None:
    parsed = parse_policy(policy(["starts-with", "$key", "user/"], {"content-type": "text/plain"}))
    with pytest.raises(AccessDenied) as exc:
        parsed.check(fields, bucket=bucket, now=NOW)
    assert exc.value.message.startswith("Invalid according to Policy: " + reason)


def test_expired_and_bucketless_policies_are_refused() -> None:
    with pytest.raises(AccessDenied, match="Policy expired"):
        parse_policy(policy(expiration="2029-12-31T23:59:59Z")).check({}, bucket="b", now=NOW)
    bucketless = encoded({"expiration": "2030-01-02T00:00:00Z", "conditions": []})
    with pytest.raises(AccessDenied, match="names no bucket"):
        parse_policy(bucketless).check({}, bucket="b", now=NOW)


@pytest.mark.parametrize(
    "text",
    [
        "not base64!",
        base64.b64encode(b"not json").decode(),
        encoded([]),
        encoded({"Expiration": "2030-01-02T00:00:00Z", "conditions": []}),
        encoded({"expiration": "2030-01-02T00:00:00Z"}),
        encoded({"expiration": "tomorrow", "conditions": []}),
        policy({}),
        policy(["content-length-range", 0]),
        policy(["content-length-range", -1, 0]),
        policy(["content-length-range", 5, 1]),
        policy(["starts-with", "key", "x"]),
        policy(["ends-with", "$key", "x"]),
        policy({"key": 1}),
    ],
)
def test_malformed_documents(text: str) -> None:
    with pytest.raises(InvalidPolicyDocument):
        parse_policy(text)
