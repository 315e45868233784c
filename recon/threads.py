"""Running independent pieces of work on threads: OpenCV, numpy and torch release the GIL in their calls, so a
thread per core runs per-frame or per-pair OpenCV work (flow, features, two-view fits) about that many times
faster. Results come back in the items' order, so they are the same as a loop's.

>>> thread_map(lambda x: x * x, range(5), workers=2)
[0, 1, 4, 9, 16]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["cores", "thread_map"]

T = TypeVar("T")
R = TypeVar("R")


def cores(limit: int = 8) -> int:
    """The machine's cores, at most ``limit`` (and at least 1)."""
    return max(1, min(limit, os.cpu_count() or 1))


def thread_map(fn: Callable[[T], R], items: Iterable[T], workers: int, name: str = "scenegrad") -> list[R]:
    """``[fn(x) for x in items]`` on ``workers`` threads (named ``name``; in a loop on the calling thread for
    one worker or fewer than two items). Threads started by a thread inherit its scheduling priority."""
    items = list(items)
    if workers <= 1 or len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        return list(pool.map(fn, items))
