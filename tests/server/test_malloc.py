"""glibc's allocator keeps a transfer's freed buffers for the next one (malloc.py):
checked in fresh interpreters, since the settings hold for the whole process."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import ctypes, ctypes.util, resource, sys
from tfstorage.malloc import M_MMAP_THRESHOLD, tune_allocator
mode = sys.argv[1]
if mode == "tuned":
    assert tune_allocator()
else:  # what the server set before: the mmap threshold alone
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    assert libc.mallopt(M_MMAP_THRESHOLD, 256 * 1024) == 1

def churn():  # buffers of a network read's size, allocated and freed in turn
    for _ in range(500):
        buffer = b"x" * 200_000
        del buffer

churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_buffers_are_reused_without_faulting_pages_in_again() -> None:
    # The threshold alone: the heap's top went back to the kernel after each buffer,
    # and the next one faulted its pages in again (~16 per 200 KB buffer).
    before = _faults("threshold")
    assert before > 4_000, before
    after = _faults("tuned")
    assert after < 100, after
