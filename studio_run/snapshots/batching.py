"""Split file work into large items, one task each, and small ones grouped into batches.

A thread-pool task per 20 KiB file costs about as much as reading the file, and small-file work
is mostly Python holding the GIL: more than two threads on it only queue for the lock (5,000
files of 40 KiB: 0.35 s on one or two threads, 0.75 s on eight). So captures and restores run
small files in batches on a small pool, and large files, which spend their time in the kernel
and in BLAKE3 without the GIL, each as a task of their own on a pool beside it.
"""

from __future__ import annotations

from typing import Callable, TypeVar

__all__ = ["split_work"]

T = TypeVar("T")


def split_work(
    items: list[T], size_of: Callable[[T], int], *, small_below: int, per_batch: int
) -> tuple[list[list[T]], list[list[T]]]:
    """``(large, small)``: each large item a batch of its own; small ones ``per_batch`` at a time."""
    large = [[item] for item in items if size_of(item) >= small_below]
    small = [item for item in items if size_of(item) < small_below]
    return large, [small[i:i + per_batch] for i in range(0, len(small), per_batch)]
