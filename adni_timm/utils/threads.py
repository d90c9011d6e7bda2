"""Threads for I/O-bound maps (PIL decodes without holding the GIL)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence


def thread_map(fn: Callable, items: Sequence, num_workers: int) -> list:
    """``[fn(x) for x in items]``, on ``num_workers`` threads when asked (0: in this thread)."""
    if num_workers <= 0 or len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        return list(pool.map(fn, items, chunksize=64))
