"""The operator gives freed heap pages back to the OS (heap.py)."""

from __future__ import annotations

import asyncio
import sys

import psutil
import pytest

from mixpeek_operator import heap


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_blocks_below_a_live_one_go_back_to_the_os() -> None:
    # 64 KB blocks come from the heap (below glibc's mmap threshold); the last one stays alive
    # on top of them, so free() alone cannot shrink the heap and the pages stay with the process.
    blocks = [bytearray(64 * 1024) for _ in range(800)]  # 50 MB, written: resident
    survivor = bytearray(64 * 1024)
    del blocks
    held = _rss_mb()
    assert heap.release_free_heap()
    released = _rss_mb()
    assert held - released > 20, (held, released)
    del survivor


async def test_the_loop_trims_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr(heap, "_MALLOC_TRIM", trims.append)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await heap.release_free_heap_forever(30.0, sleep=sleep)
    assert sleeps == [30.0, 30.0, 30.0]
    assert trims == [0, 0]


async def test_without_malloc_trim_the_loop_ends_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_MALLOC_TRIM", None)
    assert not heap.release_free_heap()
    await asyncio.wait_for(heap.release_free_heap_forever(0.0), timeout=1)
