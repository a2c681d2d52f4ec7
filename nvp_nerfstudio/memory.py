"""Settings of the process's (glibc) allocator for training and rendering fields.

Core module: imports only the standard library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
from functools import lru_cache

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
KEEP_FREED_BYTES = 1 << 30
GLIBC_MMAP_MAX = 65536  # glibc's default: big blocks may be mmapped
RETURNED_BLOCK_BYTES = 1 << 16


@lru_cache(maxsize=1)
def glibc() -> ctypes.CDLL | None:
    """The C library where it is glibc (whose allocator the functions below tune), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "gnu_get_libc_version") else None


def reuse_freed_memory() -> bool:
    """Serve large allocations from glibc's heap, where a freed block is reused, instead of fresh mmap pages.

    Every training step frees and reallocates table-sized gradients (43 MB a step for ngp-video at
    640x272). Above glibc's mmap threshold (32 MB at most) each is a fresh mapping, faulted in page by
    page, and unmapped again: ngp-video's backward took 27-28 ms a step instead of 19 on this 2-core
    machine. The heap keeps up to KEEP_FREED_BYTES of freed memory for reuse. A no-op (False) where the C
    library is not glibc."""
    libc = glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


def return_freed_memory() -> None:
    """The opposite trade, for processes whose peak must not grow (nvp-long fits one segment after another):
    blocks of RETURNED_BLOCK_BYTES and more are mmapped and go back to the system when freed. glibc would otherwise raise its mmap threshold after each big free, so the next
    segment's tensors would come from a heap that fragments and never shrinks (measured: peak RSS +136 MiB
    from 100 to 800 frames; with reuse_freed_memory's setting, +430 MiB at any length)."""
    libc = glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_MAX, GLIBC_MMAP_MAX)
        libc.mallopt(M_MMAP_THRESHOLD, RETURNED_BLOCK_BYTES)


def release_freed_memory() -> None:
    """Hand the heap's free memory back to the system (between benchmark runs, so each run's peak is its own)."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


def peak_rss_mib() -> float:
    """This process's peak resident memory since it started, or since the last reset_peak_memory()."""
    try:
        with open("/proc/self/status") as status:  # VmHWM, unlike ru_maxrss, can be reset
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024.0
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
