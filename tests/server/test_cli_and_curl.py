"""The `tfstorage token` commands and presigned URLs used by curl, against a real server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.conftest import ServerFactory

pytestmark = pytest.mark.server


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfstorage", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_token_commands_use_the_first_start_admin_token(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server({"ADMIN_TOKEN": ""})  # first start: generates DATA_DIR/admin.token
    assert (server.data_dir / "admin.token").exists()
    env = {
        "TFSTORAGE_URL": server.base_url,
        "DATA_DIR": str(server.data_dir),
        "TFSTORAGE_TOKEN": "",
    }
    made = cli(
        "token",
        "create",
        "--name",
        "reader",
        "--scope",
        "read",
        "--bucket",
        "datasets",
        "--json",
        env=env,
    )
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["scopes"] == ["read"] and created["buckets"] == ["datasets"]

    listed = cli("token", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    tokens = json.loads(listed.stdout)
    assert {t["name"] for t in tokens} == {"admin", "reader"}
    assert created["token"] not in listed.stdout

    reader_env = {**env, "TFSTORAGE_TOKEN": created["token"]}
    denied = cli("token", "list", env=reader_env)
    assert denied.returncode == 1 and "AccessDenied" in denied.stderr

    assert cli("token", "revoke", created["id"], env=env).returncode == 0
    gone = cli("token", "list", env=reader_env)
    assert gone.returncode == 1 and "Unauthenticated" in gone.stderr


@pytest.mark.skipif(shutil.which("curl") is None and not os.environ.get("CI"), reason="needs curl")
def test_presigned_urls_with_curl(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server({})
    src = tmp_path / "weights.safetensors"
    src.write_bytes(os.urandom(200_000))
    with server.client() as client:
        put_url = client.post(
            "/api/v1/presign",
            json={"method": "PUT", "bucket": "models", "key": "shared/w.safetensors"},
        ).json()["url"]
        up = subprocess.run(
            ["curl", "-sS", "-f", "-X", "PUT", "--data-binary", f"@{src}", put_url],
            capture_output=True,
            timeout=60,
        )
        assert up.returncode == 0, up.stderr
        get_url = client.post(
            "/api/v1/presign",
            json={"method": "GET", "bucket": "models", "key": "shared/w.safetensors"},
        ).json()["url"]
    out = tmp_path / "copy"
    down = subprocess.run(
        ["curl", "-sS", "-f", "-o", str(out), get_url], capture_output=True, timeout=60
    )
    assert down.returncode == 0, down.stderr
    assert out.read_bytes() == src.read_bytes()
    tampered = get_url.replace("shared/w", "shared/x")
    bad = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", tampered],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.stdout == "403"
