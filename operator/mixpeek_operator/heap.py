"""Giving freed heap memory back to the operating system.

CPython hands large blocks (listing pages, JSON bodies, the models of a bulk create) to the C
allocator, and glibc keeps what is freed for reuse instead of returning it. After a burst of
thousands of objects the process's RSS therefore stays at the burst's high-water mark although
Python holds nothing more: in `make bench-soak` Python's allocated blocks are flat from wave to
wave while RSS grows about 6 MB over the first waves, some 13 MB of the process being free heap
that `malloc_trim(0)` returns. A container's memory limit and its dashboards see RSS, so once a
minute the operator asks glibc to return whole free pages (about a millisecond). Where the C
library has no `malloc_trim` (musl, macOS) this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Awaitable, Callable

TRIM_INTERVAL_SECONDS = 60.0


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def release_free_heap() -> bool:
    """Return the allocator's free pages to the OS; False where the C library cannot."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)  # 0: keep no extra padding at the top of the heap
    return True


async def release_free_heap_forever(
    interval: float = TRIM_INTERVAL_SECONDS, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
) -> None:
    if _MALLOC_TRIM is None:
        return
    while True:
        await sleep(interval)
        release_free_heap()
