"""How long walk_files takes over a 20,000-file workspace beside a large ignored data folder.

Run ``python benchmarks/walk_files.py [files] [ignored_files]``. The ignored ``data/`` should cost
nothing, since it is pruned without being listed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from studio_run.snapshots.ignore import IgnoreRules, walk_files

GITIGNORE = "__pycache__/\n*.pyc\n*.ckpt\n!best.ckpt\n/data/\nlogs/**/*.tmp\n"


def _make_sources(root: str, files: int) -> None:
    per_dir = 100
    for i in range(files):
        d = os.path.join(root, "src", f"pkg{i // per_dir // 20}", f"mod{i // per_dir}")
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        open(os.path.join(d, f"f{i}.py"), "w").close()


def _make_data(root: str, ignored: int) -> None:
    for i in range(ignored):
        d = os.path.join(root, "data", f"shard{i // 1000}")
        if i % 1000 == 0:
            os.makedirs(d, exist_ok=True)
        open(os.path.join(d, f"x{i}.bin"), "w").close()
    with open(os.path.join(root, ".gitignore"), "w") as f:
        f.write(GITIGNORE)


def _best_of(runs: int, fn) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(runs):
        start = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - start)
    return best, count


def main() -> None:
    files = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    ignored = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    with tempfile.TemporaryDirectory() as root:
        _make_sources(root, files)
        no_rules, n = _best_of(5, lambda: sum(1 for _ in walk_files(root, None)))
        print(f"without rules: {n} files in {no_rules * 1000:.1f} ms")
        _make_data(root, ignored)
        with_rules, n = _best_of(
            5, lambda: sum(1 for _ in walk_files(root, IgnoreRules.for_directory(root)))
        )
        print(f"with rules:    {n} files in {with_rules * 1000:.1f} ms ({ignored} ignored, pruned)")


if __name__ == "__main__":
    main()
