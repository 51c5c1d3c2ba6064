"""/docs in a real headless Chromium against a real server: the page renders with no
request leaving the server, and its Authorize button takes a token that "Try it out"
then sends (issue 10). Chromium is Debian's package, driven over its DevTools protocol."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.server.conftest import ADMIN_TOKEN, ServerFactory

pytestmark = pytest.mark.server

_CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One browser tab over the DevTools protocol: commands, and the events seen so far."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self.ids)
        self.ws.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=20))
            if message.get("id") == number:
                assert "error" not in message, message
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        html = self.evaluate("document.body ? document.body.innerText.slice(0, 2000) : ''")
        pytest.fail(f"timed out waiting for {expression!r}; page text:\n{html}")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[str]:
    """A headless Chromium; yields its DevTools HTTP address."""
    if _CHROMIUM is None:
        reason = "chromium is not installed (Debian package `chromium`; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    log_path = tmp_path / "chromium.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                _CHROMIUM,
                "--headless",
                "--no-sandbox",  # runs as root in CI
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-extensions",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={tmp_path / 'profile'}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(r"DevTools listening on ws://([\d.]+:\d+)/", log_path.read_text())
            if found:
                yield found.group(1)
                return
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.1)
        pytest.fail(f"chromium did not start:\n{log_path.read_text()}")
    finally:
        # Its own session: the renderer and helper processes go with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def _open_tab(devtools: str) -> Iterator[Page]:
    import httpx

    target = httpx.put(f"http://{devtools}/json/new?about:blank", timeout=10).json()
    with connect(target["webSocketDebuggerUrl"], max_size=None) as ws:
        yield Page(ws)


def test_docs_render_offline_and_authorize_takes_a_token(
    make_server: ServerFactory, browser: str
) -> None:
    server = make_server()
    with _open_tab(browser) as page:
        page.call("Network.enable")
        page.call("Page.enable")
        page.call("Page.navigate", url=f"{server.base_url}/docs")
        # Swagger UI rendered the document: the operations and the Authorize button.
        page.wait_for("document.querySelectorAll('.opblock').length > 40")
        page.wait_for("document.querySelector('.auth-wrapper .btn.authorize') !== null")

        # "Authorize": type the token into the bearer scheme's field, confirm, close.
        page.evaluate("document.querySelector('.auth-wrapper .btn.authorize').click()")
        page.wait_for("document.querySelector('.modal-ux input') !== null")
        page.evaluate("document.querySelector('.modal-ux input').focus()")
        page.call("Input.insertText", text=ADMIN_TOKEN)
        page.evaluate("document.querySelector('.modal-ux .auth-btn-wrapper .authorize').click()")
        page.wait_for("document.querySelector('.modal-ux .auth-btn-wrapper .btn-done') !== null")
        page.evaluate("document.querySelector('.modal-ux .auth-btn-wrapper .btn-done').click()")

        # "Try it out" on GET /api/v1/buckets: 200 with the token (401 without).
        block = "document.querySelector('#operations-buckets-list_buckets_api_v1_buckets_get')"
        page.evaluate(f"{block}.querySelector('.opblock-summary-control').click()")
        page.wait_for(f"{block}.querySelector('.try-out__btn') !== null")
        page.evaluate(f"{block}.querySelector('.try-out__btn').click()")
        page.wait_for(f"{block}.querySelector('.execute') !== null")
        page.evaluate(f"{block}.querySelector('.execute').click()")
        status = page.wait_for(
            f"(({block}.querySelector('.live-responses-table tbody .response-col_status')"
            " || {}).innerText || '').trim()"
        )
        assert status.startswith("200"), status
        curl = page.evaluate(f"{block}.querySelector('.curl-command').innerText")
        assert f"Authorization: Bearer {ADMIN_TOKEN}" in curl, curl

        # Every request the page made went to the server itself: no CDN.
        urls = [
            event["params"]["request"]["url"]
            for event in page.events
            if event.get("method") == "Network.requestWillBeSent"
        ]
        assert any(url.endswith("/docs/assets/swagger-ui-bundle.js") for url in urls), urls
        outside = [
            url for url in urls if not url.startswith((server.base_url, "data:", "blob:", "about:"))
        ]
        assert outside == [], outside
