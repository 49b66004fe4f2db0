"""Give freed image-sized buffers back to the OS.

glibc serves allocations above its mmap threshold from fresh mappings, but the threshold
adapts upwards after large frees, after which 20-70 MB response bodies and decoded 4K masters
are kept in the heap and the process keeps its peak size. Fixing the threshold at 1 MiB
(like ``MALLOC_MMAP_THRESHOLD_=1048576``) measured 1543-1572 MB → 1232 MB peak RSS for 20
concurrent 4K Vertex images (docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_MMAP_THRESHOLD = -3
_done = False


def return_large_buffers_to_os(threshold: int = 1 << 20) -> bool:
    """Set glibc's mmap threshold once per process; a no-op elsewhere. True if it took effect."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        _done = bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    return _done
