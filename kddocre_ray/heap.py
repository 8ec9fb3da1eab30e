"""Giving freed memory back to the OS: glibc keeps what a process frees in its heap, and batches of
documents of every length leave that heap fragmented, so a long-lived process that handles them
one after another (a teacher actor, a training worker streaming rows) grew with the corpus until
it trimmed its heap per batch (bench/results/scale_2cpu.md, teacher_inference_2cpu.md)."""
from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


def trim() -> None:
    """glibc's malloc_trim(0) where there is one, else nothing."""
    fn = _malloc_trim()
    if fn is not None:
        fn(0)
