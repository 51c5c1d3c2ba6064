"""rclone (Debian's package; `make rclone` installs it) against the S3 endpoint as an
S3 remote of provider `Other`: copy, sync and check, each checked through the REST API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.s3clients.conftest import REGION, RestDoor, sha256
from tests.server.conftest import ServerProcess
from tests.server.helpers import md5

pytestmark = [pytest.mark.server, pytest.mark.timeout(180)]

BUCKET = "rclone-test"
Rclone = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def rclone(server: ServerProcess, client_env: dict[str, str], tmp_path: Path) -> Rclone:
    binary = shutil.which("rclone")
    assert binary, "rclone is not installed: `make rclone` (as root) or apt-get install rclone"
    env = {
        **client_env,
        "RCLONE_CONFIG": str(tmp_path / "rclone.conf"),
        # The remote `tfs:` from the environment, credentials from AWS_SHARED_CREDENTIALS_FILE.
        "RCLONE_CONFIG_TFS_TYPE": "s3",
        "RCLONE_CONFIG_TFS_PROVIDER": "Other",
        "RCLONE_CONFIG_TFS_ENV_AUTH": "true",
        "RCLONE_CONFIG_TFS_ENDPOINT": server.s3_url,
        "RCLONE_CONFIG_TFS_REGION": REGION,
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [binary, *args],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, (
                f"rclone {' '.join(args)}: {result.stderr}\n{server.log_tail()}"
            )
        return result

    return run


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _read_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): sha256(p.read_bytes()) for p in root.rglob("*") if p.is_file()
    }


def test_copy_check_and_sync(rclone: Rclone, rest: RestDoor, tmp_path: Path) -> None:
    rclone("mkdir", f"tfs:{BUCKET}")
    files = {f"epoch-{i}.ckpt": os.urandom(2000 * (i + 1)) for i in range(3)}
    files["big/shard.bin"] = os.urandom(12 * 1024 * 1024)  # multipart in 5 MiB chunks
    source = _tree(tmp_path / "src", files)
    multipart = ["--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M"]
    rclone("copy", *multipart, str(source), f"tfs:{BUCKET}/run")
    assert rest.listing(BUCKET, "run/") == {f"run/{n}": sha256(d) for n, d in files.items()}
    for name, data in files.items():
        assert rest.sha256(BUCKET, f"run/{name}") == sha256(data)

    # check compares sizes and MD5s (the ETags) of both sides.
    rclone("check", str(source), f"tfs:{BUCKET}/run")
    rest.put(BUCKET, "run/epoch-0.ckpt", b"changed over REST")
    differs = rclone("check", str(source), f"tfs:{BUCKET}/run", check=False)
    assert differs.returncode == 1 and "epoch-0.ckpt" in differs.stderr

    # sync down: the remote as REST left it, byte for byte.
    target = tmp_path / "down"
    rclone("sync", f"tfs:{BUCKET}/run", str(target))
    expected = {n: sha256(d) for n, d in files.items()}
    expected["epoch-0.ckpt"] = sha256(b"changed over REST")
    assert _read_tree(target) == expected

    # sync up deletes on the remote what the source no longer has.
    (source / "epoch-2.ckpt").unlink()
    rclone("sync", *multipart, str(source), f"tfs:{BUCKET}/run")
    rclone("check", str(source), f"tfs:{BUCKET}/run")
    assert rest.listing(BUCKET, "run/") == {
        f"run/{n}": sha256(d) for n, d in files.items() if n != "epoch-2.ckpt"
    }


def test_lsjson_md5sum_and_copyto_of_a_rest_upload(
    rclone: Rclone, rest: RestDoor, tmp_path: Path
) -> None:
    rclone("mkdir", f"tfs:{BUCKET}")
    data = os.urandom(3333)
    rest.put(BUCKET, "rest/one.bin", data)
    listed = json.loads(rclone("lsjson", f"tfs:{BUCKET}/rest").stdout)
    assert [(e["Path"], e["Size"]) for e in listed] == [("one.bin", len(data))]
    assert rclone("md5sum", f"tfs:{BUCKET}/rest").stdout.split() == [md5(data), "one.bin"]
    rclone("copyto", f"tfs:{BUCKET}/rest/one.bin", str(tmp_path / "one.bin"))
    assert sha256((tmp_path / "one.bin").read_bytes()) == sha256(data)
