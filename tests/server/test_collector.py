"""A server process freezes what it holds once its app is built and collects its young
generation less often (collector.py): checked in a fresh interpreter that builds the
app as `tfstorage serve` and each worker do, since freezing the test process itself
would keep every later test's garbage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tfstorage.collector import THRESHOLDS

PROBE = """
import gc, json
from tfstorage.config import load_settings
before = {"frozen": gc.get_freeze_count(), "thresholds": gc.get_threshold()}
from tfstorage.server import create_server_app
create_server_app(load_settings())
after = {"frozen": gc.get_freeze_count(), "thresholds": gc.get_threshold()}
print(json.dumps({"before": before, "after": after}))
"""


def test_building_the_server_app_freezes_the_start_up_objects(tmp_path: Path) -> None:
    env = os.environ | {"DATA_DIR": str(tmp_path / "data"), "S3_PORT": "0"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["before"]["frozen"] == 0
    assert seen["before"]["thresholds"] != list(THRESHOLDS)
    # The modules, routes and caches: well over a hundred thousand objects.
    assert seen["after"]["frozen"] > 100_000, seen
    assert seen["after"]["thresholds"] == list(THRESHOLDS)
