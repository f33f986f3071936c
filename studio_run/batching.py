"""Group many small work items into tasks for a thread pool, large ones alone.

A thread-pool task per 20 KiB file costs about as much as reading the file; grouping small
files keeps the pool's overhead out of captures and restores of many files, while each large
file stays a task of its own so several can be read and hashed at once.
"""

from __future__ import annotations

from typing import Callable, TypeVar

__all__ = ["in_batches"]

T = TypeVar("T")


def in_batches(items: list[T], size_of: Callable[[T], int], *, alone_from: int, per_batch: int) -> list[list[T]]:
    """Items of ``alone_from`` bytes or more one to a batch; the others ``per_batch`` at a time."""
    batches: list[list[T]] = []
    small: list[T] = []
    for item in items:
        if size_of(item) >= alone_from:
            batches.append([item])
            continue
        small.append(item)
        if len(small) == per_batch:
            batches.append(small)
            small = []
    if small:
        batches.append(small)
    return batches
