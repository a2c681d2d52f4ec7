"""Settings of the process's (glibc) allocator for training and rendering fields.

Core module: imports only the standard library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
KEEP_FREED_BYTES = 1 << 30


@lru_cache(maxsize=1)
def glibc() -> ctypes.CDLL | None:
    """The C library where it is glibc (whose allocator the functions below tune), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "gnu_get_libc_version") else None


@lru_cache(maxsize=1)
def reuse_freed_memory() -> bool:
    """Serve large allocations from glibc's heap, where a freed block is reused, instead of fresh mmap pages.

    Every training step frees and reallocates table-sized gradients (43 MB a step for ngp-video at
    640x272). Above glibc's mmap threshold (32 MB at most) each is a fresh mapping, faulted in page by
    page, and unmapped again: ngp-video's backward took 27-28 ms a step instead of 19 on this 2-core
    machine. The heap keeps up to KEEP_FREED_BYTES of freed memory for reuse. A no-op (False) where the C
    library is not glibc."""
    libc = glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


def release_freed_memory() -> None:
    """Hand the heap's free memory back to the system (between benchmark runs, so each run's peak is its own)."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)
