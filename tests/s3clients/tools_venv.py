"""Where the S3 tools built on aiobotocore (s3fs, DVC) are installed: `.venv-aiobotocore`
at the repository's root, made by `make test` from aiobotocore-tools.txt. They are kept out
of the test venv because aiobotocore pins an older botocore than the boto3 tests/s3api use."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = Path(__file__).with_name("aiobotocore-tools.txt")
VENV = ROOT / ".venv-aiobotocore"


def tools_bin() -> Path:
    """The venv's bin directory; a test that needs it fails (never skips) without it."""
    bin_dir = VENV / "bin"
    if not (bin_dir / "python").exists():
        pytest.fail(
            f"{VENV.name}/ (s3fs and DVC, from {REQUIREMENTS.relative_to(ROOT)}) is missing: "
            "`make test` builds it"
        )
    return bin_dir
