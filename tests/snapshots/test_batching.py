"""Splitting file work: large items alone, small ones in order, in batches."""

from studio_run.snapshots.batching import split_work


def test_large_items_are_alone_and_small_ones_batched_in_order():
    sizes = [5, 100, 1, 2, 300, 3, 4]
    large, small = split_work(sizes, lambda n: n, small_below=100, per_batch=2)
    assert large == [[100], [300]]
    assert small == [[5, 1], [2, 3], [4]]


def test_nothing_to_split():
    assert split_work([], len, small_below=1, per_batch=8) == ([], [])
