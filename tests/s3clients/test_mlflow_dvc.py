"""ML tools on the S3 endpoint: MLflow logs and downloads artifacts with
MLFLOW_S3_ENDPOINT_URL (a SQLite tracking store), and DVC pushes to and pulls from an S3
remote. What they store is checked by SHA-256 through the REST API. MLflow runs in the test
venv; DVC in .venv-aiobotocore (dvc-s3's aiobotocore pins an older botocore)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.s3clients.conftest import RestDoor, file_sha256, sha256
from tests.s3clients.tools_venv import tools_bin
from tests.server.conftest import ServerProcess
from tests.server.helpers import md5

pytestmark = [pytest.mark.server, pytest.mark.timeout(240)]


def _run(
    args: list[str], env: dict[str, str], cwd: Path, server: ServerProcess
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, (
        f"{' '.join(args[:3])}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}\n"
        f"{server.log_tail()}"
    )
    return result


_MLFLOW_LOG = """
import sys
import mlflow

mlflow.set_tracking_uri("sqlite:///mlflow.db")
experiment = mlflow.create_experiment("s3clients", artifact_location="s3://mlflow-test/exp")
with mlflow.start_run(experiment_id=experiment) as run:
    mlflow.log_param("lr", 0.01)
    mlflow.log_artifact("model.bin", artifact_path="model")
    mlflow.log_artifacts("eval", artifact_path="eval")
print(run.info.run_id, run.info.artifact_uri)
"""

_MLFLOW_DOWNLOAD = """
import sys
import mlflow

mlflow.set_tracking_uri("sqlite:///mlflow.db")
print(mlflow.artifacts.download_artifacts(run_id=sys.argv[1], dst_path="downloaded"))
"""


def test_mlflow_logs_and_downloads_artifacts(
    server: ServerProcess, rest: RestDoor, client_env: dict[str, str], tmp_path: Path
) -> None:
    rest.make_bucket("mlflow-test")
    model = os.urandom(600_000)
    (tmp_path / "model.bin").write_bytes(model)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text('{"acc": 0.91}')
    env = {**client_env, "MLFLOW_S3_ENDPOINT_URL": server.s3_url}
    logged = _run([sys.executable, "-c", _MLFLOW_LOG], env, tmp_path, server)
    run_id, artifact_uri = logged.stdout.split()[-2:]
    assert artifact_uri == f"s3://mlflow-test/exp/{run_id}/artifacts"
    prefix = f"exp/{run_id}/artifacts/"
    assert rest.listing("mlflow-test", prefix) == {
        f"{prefix}model/model.bin": sha256(model),
        f"{prefix}eval/metrics.json": sha256(b'{"acc": 0.91}'),
    }
    assert rest.sha256("mlflow-test", f"{prefix}model/model.bin") == sha256(model)

    # An artifact replaced over REST is what MLflow downloads.
    retrained = os.urandom(123_456)
    rest.put("mlflow-test", f"{prefix}model/model.bin", retrained)
    _run([sys.executable, "-c", _MLFLOW_DOWNLOAD, run_id], env, tmp_path, server)
    down = tmp_path / "downloaded"
    assert file_sha256(down / "model" / "model.bin") == sha256(retrained)
    assert (down / "eval" / "metrics.json").read_bytes() == b'{"acc": 0.91}'


def test_dvc_push_and_pull(
    server: ServerProcess, rest: RestDoor, client_env: dict[str, str], tmp_path: Path
) -> None:
    rest.make_bucket("dvc-test")
    dvc = str(tools_bin() / "dvc")
    project = tmp_path / "project"
    project.mkdir()
    env = client_env

    def run(*args: str) -> str:
        return _run([dvc, *args], env, project, server).stdout

    run("init", "--no-scm")
    run("remote", "add", "-d", "storage", "s3://dvc-test/store")
    run("remote", "modify", "storage", "endpointurl", server.s3_url)
    data = project / "data"
    data.mkdir()
    files = {"train.npy": os.urandom(250_000), "labels.csv": b"id,label\n1,cat\n"}
    for name, body in files.items():
        (data / name).write_bytes(body)
    run("add", "data")
    run("push")

    # DVC stores each file under its MD5 (files/md5/ab/cdef...): every one is there, whole.
    stored = rest.listing("dvc-test", "store/")
    for body in files.values():
        digest = md5(body)
        key = f"store/files/md5/{digest[:2]}/{digest[2:]}"
        assert stored.get(key) == sha256(body), sorted(stored)
        assert rest.sha256("dvc-test", key) == sha256(body)

    # A clean checkout pulls the same bytes back.
    shutil.rmtree(data)
    shutil.rmtree(project / ".dvc" / "cache")
    run("pull")
    for name, body in files.items():
        assert file_sha256(data / name) == sha256(body)
    assert run("status", "--cloud").strip() == "Cache and remote 'storage' are in sync."
