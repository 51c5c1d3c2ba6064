"""The suite never reads or writes a user's state (issue 10): `make serve` then `make
test` in the same checkout used to fail, because a test picked up `data/admin.token`."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

from tfstorage.client import config_path, resolve_config

REPO = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_inside_the_suite_nothing_of_the_user_is_visible() -> None:
    assert Path.cwd() != REPO and not Path("data").exists()
    assert not any(name.startswith("TFSTORAGE_") for name in os.environ)
    assert Path.home() != Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert resolve_config().token is None
    assert not config_path().exists()


def test_a_checkout_after_make_serve_does_not_leak_into_the_tests(tmp_path: Path) -> None:
    """A user's checkout after `make serve` (data/admin.token, an index), a config file
    with a token in HOME, and TFSTORAGE_*/service variables in the shell: the suite's
    own client-config tests still pass, and nothing of that state is touched."""
    checkout = tmp_path / "checkout"
    shutil.copytree(
        REPO / "tests", checkout / "tests", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "pyproject.toml", checkout)
    (checkout / "data").mkdir()
    (checkout / "data" / "admin.token").write_text("tfs_planted_admin\n")
    (checkout / "data" / "index.db").write_bytes(b"not an index")
    home = tmp_path / "home"
    (home / ".config" / "tfstorage").mkdir(parents=True)
    (home / ".config" / "tfstorage" / "config.toml").write_text(
        'url = "http://127.0.0.1:8083"\ntoken = "tfs_planted_config"\n'
    )
    user_state = {"checkout": _files(checkout / "data"), "home": _files(home)}
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": "",
        "TFSTORAGE_URL": "http://127.0.0.1:8083",
        "TFSTORAGE_TOKEN": "tfs_planted_env",
        "DATA_DIR": "data",
        "MAX_FILE_SIZE": "1KB",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("XDG_CONFIG_HOME")
    if not os.environ.get("PYTHONPATH"):
        env.pop("PYTHONPATH", None)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/client/test_config.py",
        ],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "passed" in run.stdout and "failed" not in run.stdout
    assert {"checkout": _files(checkout / "data"), "home": _files(home)} == user_state
