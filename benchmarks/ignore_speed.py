"""Our gitignore matcher (``snapshots/ignore.py``) against pathspec's ``GitIgnoreSpec``, same walk.

Issue 8 asked: use pathspec if it passes the same ignore tests and prunes ignored folders at a
comparable speed on a 100k-file workspace. This measures the speed half. Both walkers list a
folder with ``os.scandir``, prune an ignored folder without listing it, and yield the files kept;
only the matching differs. The workspace: ``src/`` with sources, ``__pycache__`` folders and
``.pyc``/``.log`` files to drop file by file, and a ``data/`` folder pruned whole.

Run ``python benchmarks/ignore_speed.py [files]`` (default 100,000 files in all). Needs
``pip install pathspec``. Prints the least CPU time of seven walks of each, then the cases of the ignore
test table (each checked against git itself there) on which pathspec decides otherwise.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Callable, Iterator

from studio_run.snapshots.ignore import IgnoreRules, walk_files

GITIGNORE = (
    "__pycache__/\n*.pyc\n*.log\n!keep.log\n*.ckpt\n!best.ckpt\n/data/\nlogs/**/*.tmp\nbuild/\n"
    "dist/\n*.egg-info/\n.venv/\nnode_modules/\n*.swp\n.DS_Store\n[Bb]in/\n"
)


def make_workspace(root: str, files: int) -> tuple[int, int]:
    """Sources (30 %, some dropped file by file) and an ignored ``data/`` (70 %); returns both counts."""
    sources = files * 3 // 10
    for i in range(sources):
        d = os.path.join(root, "src", f"pkg{i // 2000}", f"mod{i // 100}")
        if i % 100 == 0:
            os.makedirs(os.path.join(d, "__pycache__"), exist_ok=True)
            open(os.path.join(d, "__pycache__", "m.cpython-311.pyc"), "w").close()
        suffix = ".log" if i % 10 == 0 else ".pyc" if i % 10 == 1 else ".py"
        open(os.path.join(d, f"f{i}{suffix}"), "w").close()
    for i in range(files - sources):
        d = os.path.join(root, "data", f"shard{i // 1000}")
        if i % 1000 == 0:
            os.makedirs(d, exist_ok=True)
        open(os.path.join(d, f"x{i}.bin"), "w").close()
    with open(os.path.join(root, ".gitignore"), "w") as f:
        f.write(GITIGNORE)
    return sources, files - sources


def walk_with_pathspec(root: str, spec) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The same pruning walk as ``walk_files``, deciding with ``GitIgnoreSpec.check_file``."""
    stack = [(root, "")]
    while stack:
        path, rel_dir = stack.pop()
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            if entry.name == ".git":
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            rel = rel_dir + entry.name
            if spec.check_file(rel + "/" if is_dir else rel).include:
                continue
            if is_dir:
                subdirs.append((entry.path, rel + "/"))
            else:
                yield rel
        stack.extend(reversed(subdirs))


def pathspec_disagreements() -> list[str]:
    """Cases of ``tests/snapshots/test_ignore.py`` (each checked against git there) pathspec gets wrong."""
    from pathspec import GitIgnoreSpec

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.snapshots.test_ignore import CASES

    wrong = []
    for lines, path, is_dir, expected in CASES:
        parts = path.split("/")
        try:
            spec = GitIgnoreSpec.from_lines(lines.split("\n"))
            got: object = any(  # ignored when the path or a folder above it matches, as in git
                spec.check_file("/".join(parts[:i]) + ("/" if is_dir or i < len(parts) else "")).include
                for i in range(1, len(parts) + 1)
            )
        except Exception as exc:  # noqa: BLE001 - what a user's .gitignore line would do to a run
            got = f"raises {type(exc).__name__}"
        if got != expected:
            wrong.append(f"{lines!r} on {path!r}{'/' if is_dir else ''}: git says {expected}, pathspec {got}")
    return wrong


def best_of(runs: int, fn: Callable[[], int]) -> tuple[float, int]:
    """Least CPU time (user + system) of ``runs`` calls: on a shared machine wall time is mostly noise."""
    best, count = float("inf"), 0
    for _ in range(runs):
        start = time.process_time()
        count = fn()
        best = min(best, time.process_time() - start)
    return best, count


def main() -> None:
    from pathspec import GitIgnoreSpec

    files = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as root:
        sources, ignored = make_workspace(root, files)
        print(f"workspace: {files} files ({sources} in src/, {ignored} in the ignored data/)")
        ours, n_ours = best_of(7, lambda: sum(1 for _ in walk_files(root, IgnoreRules.for_directory(root))))
        lines = open(os.path.join(root, ".gitignore")).read().splitlines()
        theirs, n_theirs = best_of(7, lambda: sum(1 for _ in walk_with_pathspec(root, GitIgnoreSpec.from_lines(lines))))
        print(f"ignore.py (ours):         {n_ours} files kept in {ours * 1000:.0f} ms CPU")
        print(f"pathspec GitIgnoreSpec:   {n_theirs} files kept in {theirs * 1000:.0f} ms CPU ({theirs / ours:.2f} x ours)")
    wrong = pathspec_disagreements()
    print(f"pathspec disagrees with git on {len(wrong)} cases of tests/snapshots/test_ignore.py:")
    for line in wrong:
        print("  " + line)


if __name__ == "__main__":
    main()
