"""Two instances writing into one PostgreSQL index at once: the usage counters still
agree with a recomputation (`tfstorage counters check`), and a repair from the CLI
while the writers run leaves them exact."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.server.conftest import ServerFactory, ServerProcess
from tests.server.test_scale_out import cli

pytestmark = [pytest.mark.server, pytest.mark.postgres, pytest.mark.timeout(180)]

KEYS = [f"run/{n}.ckpt" for n in range(4)] + ["data.csv", "weights.safetensors"]
BODIES = [b"", b"a", b"shared", b"x" * 300]  # often the same bytes: dedup on both sides


def _writer(server: ServerProcess, seed: int, steps: int) -> int:
    rng = random.Random(seed)
    done = 0
    with server.client() as http:
        for _ in range(steps):
            bucket, key = rng.choice(["models", "jobs"]), rng.choice(KEYS)
            action = rng.random()
            if action < 0.55:
                body = rng.choice(BODIES) + (b"" if rng.random() < 0.5 else bytes([seed]))
                r = http.put(f"/api/v1/objects/{bucket}/{key}", content=body)
                if r.status_code == 200 and rng.random() < 0.2:  # a permanent version delete
                    http.delete(f"/api/v1/files/{r.json()['file_id']}")
            elif action < 0.8:
                r = http.delete(f"/api/v1/delete/{bucket}/{key}")
            else:
                r = http.post(f"/api/v1/restore/{bucket}/{key}")
            assert r.status_code < 500, r.text
            done += 1
    return done


def test_two_instances_keep_the_counters_exact(
    make_server: ServerFactory, postgres_database: str
) -> None:
    env = {"DATABASE_URL": postgres_database, "LOG_LEVEL": "WARNING"}
    first, second = make_server(env), make_server(env)
    with ThreadPoolExecutor(6) as pool:
        runs = [pool.submit(_writer, s, n, 30) for n, s in enumerate([first, second] * 3)]
        # A repair in the middle of the writes, through the other instance.
        repaired = cli("counters", "repair", "--json", url=second.base_url)
        assert repaired.returncode == 0, repaired.stderr
        assert sum(run.result() for run in runs) == 180
    for server in (first, second):
        checked = cli("counters", "check", url=server.base_url)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.startswith("ok ")
    with first.client() as http:
        stats = http.get("/api/v1/stats").json()
        live = {b: len(http.get(f"/api/v1/list/{b}").json()["objects"]) for b in ("models", "jobs")}
    assert {b: stats["buckets"][b]["objects"] for b in live} == live
