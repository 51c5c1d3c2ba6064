"""Keep glibc's heap from holding on to transfer buffers after they are freed.

glibc serves allocations above a threshold (128 KiB) with their own mmap and returns them
to the kernel when freed, but it raises that threshold each time such a block is freed,
up to 32 MiB. After the first few 1 MiB chunks of an upload, every chunk then comes from
the heaps of the threads that touched it, and a freed heap stays mapped: a worker moving
a 1 GiB object through 16 MiB parts was seen peaking ~50 MiB above one that keeps the
threshold fixed. Setting it explicitly (`mallopt`) turns the dynamic raise off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Final

M_MMAP_THRESHOLD: Final = -3  # glibc's malloc.h
MMAP_THRESHOLD: Final = 256 * 1024  # above the 64 KiB network reads, below 1 MiB chunks


def keep_big_buffers_out_of_the_heap() -> bool:
    """Fix glibc's mmap threshold for this process; False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl has no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
