"""A browser uploads through a presigned URL from another origin (issue 12): a real
headless Chromium on the REST port's page runs fetch() PUT against the S3 port. The
bucket's CORS rules let the preflight and the PUT through, and the script reads the
exposed ETag; a bucket without rules gets nothing (the browser never sends the PUT)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.s3api.test_endpoint_server import admin_keys
from tests.server import conftest as server_fixtures
from tests.server import test_docs_browser as docs_browser
from tests.server.conftest import ServerFactory
from tests.server.test_docs_browser import Page

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]
make_server = server_fixtures.make_server  # a started server, stopped at teardown
browser = docs_browser.browser  # a headless Chromium (Debian's package, `make browser`)


def _fetch(page: Page, url: str, body: str) -> dict[str, Any]:
    """fetch() PUT from the page; what the script could see of the answer."""
    script = f"""
        fetch({json.dumps(url)}, {{method: "PUT", body: {json.dumps(body)},
                                   headers: {{"Content-Type": "text/plain"}}}})
          .then(r => ({{ok: r.ok, status: r.status, etag: r.headers.get("ETag")}}),
                e => ({{error: String(e)}}))
    """
    result = page.call("Runtime.evaluate", expression=script, awaitPromise=True, returnByValue=True)
    assert "exceptionDetails" not in result, result
    value: dict[str, Any] = result["result"]["value"]
    return value


def test_presigned_put_from_another_origin(make_server: ServerFactory, browser: str) -> None:
    server = make_server({"S3_PORT": "auto"})
    s3 = boto3.client(
        "s3",
        endpoint_url=server.s3_url,
        aws_access_key_id=admin_keys(server)[0],
        aws_secret_access_key=admin_keys(server)[1],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )
    origin = server.base_url  # the REST port: same host, another port, another origin
    assert origin != server.s3_url
    s3.create_bucket(Bucket="uploads")
    s3.put_bucket_cors(
        Bucket="uploads",
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": [origin],
                    "AllowedMethods": ["PUT"],
                    "AllowedHeaders": ["content-type"],
                    "ExposeHeaders": ["ETag"],
                }
            ]
        },
    )
    s3.create_bucket(Bucket="closed")

    def presigned(bucket: str, key: str) -> str:
        url: str = s3.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300
        )
        return url

    with docs_browser._open_tab(browser) as page:
        page.call("Page.enable")
        page.call("Page.navigate", url=f"{origin}/health")
        page.wait_for("document.readyState === 'complete' && location.href.endsWith('/health')")
        assert page.evaluate("location.origin") == origin

        sent = _fetch(page, presigned("uploads", "from-browser.txt"), "hello from chromium")
        assert sent.get("ok") is True, sent
        stored = s3.get_object(Bucket="uploads", Key="from-browser.txt")
        assert stored["Body"].read() == b"hello from chromium"
        assert sent["etag"] == stored["ETag"]  # exposed by the rule, so the script reads it

        blocked = _fetch(page, presigned("closed", "from-browser.txt"), "must not land")
        assert "TypeError" in blocked.get("error", ""), blocked
    with pytest.raises(ClientError):
        s3.head_object(Bucket="closed", Key="from-browser.txt")
