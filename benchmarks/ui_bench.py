"""The store side of ``studio ui``: the run index with 10,000 runs, and tar.gz downloads of W1.

Two measurements, on data made here (``workloads.py``), printed as a Markdown table and
written to ``--out`` (default ``benchmarks/results/ui.md``):

- **Run index** (``studio_run.store.runindex``) over W8's store (one finished run per experiment,
  ``--runs`` of them, 10,000 by default): the first page with no index file yet (every record
  read once: the very first start on a store), the first page after a restart (index file kept:
  one listing, nothing read), warm pages (newest, deep offset, sorted by duration, filtered by
  experiment and status) with no refresh due, and a page when a refresh falls due (a listing).
  The HTTP part of a page (``studio ui``'s templates) comes on top and is measured by the web
  layer's own benchmark.
- **tar.gz download** of W1's folder (4 x 192 MiB random + 5,000 text files), captured into a
  local store: ``studio get w1/data --tar OUT.tar.gz`` (the command, start-up included, gzip
  level ``GZIP_LEVEL``), the stream alone in this process (what the web page sends), the same at
  gzip level 6, plain ``--tar OUT.tar``; against ``tar czf`` / ``tar cf`` of the folder. Every
  contender writes a file on the same disk (GNU tar skips reading when the archive is
  /dev/null); page cache warm for all (the data was just written and captured). Peak RSS of the
  commands shows that memory stays flat.

Run: ``python benchmarks/ui_bench.py [--quick] [--runs N] [--reps N] [--out FILE]`` (``--quick``:
W1 at an eighth of its size, 1,250 runs). Needs ~2.5 GiB free under ``--workdir`` (default $TMPDIR).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from measure import Cmd, run_command  # noqa: E402
from workloads import FULL, QUICK, make_folder, make_records  # noqa: E402

MiB = 1 << 20


def _median(fn: Callable[[], object], reps: int) -> tuple[float, float, float]:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def bench_index(work: str, runs: int, reps: int) -> list[tuple[str, str, str]]:
    """Rows (what, time, goal) for the run index over ``runs`` runs."""
    from studio_run.config import Config
    from studio_run.store.open import open_store
    from studio_run.store.runindex import RunIndex

    store_root = os.path.join(work, "index-store")
    make_records(store_root, runs)
    store = open_store(Config(home=os.path.join(work, "index-home"), store=store_root, fsync=False))
    rows: list[tuple[str, str, str]] = []

    def first_page(cache: str) -> float:
        start = time.perf_counter()
        index = RunIndex(store, cache)
        page, _total = index.page()
        took = time.perf_counter() - start
        assert len(page) == 50, len(page)
        index.close()  # stops its background refresh after the current batch
        return took

    def full_refresh(cache: str) -> float:
        start = time.perf_counter()
        index = RunIndex(store, cache)
        index.refresh()
        took = time.perf_counter() - start
        assert index.page()[1] == runs
        index.close()
        return took

    empty, builds, restarts, relists = [], [], [], []
    for rep in range(reps):
        empty.append(first_page(os.path.join(work, f"index-empty-{rep}")))
        cache = os.path.join(work, f"index-cache-{rep}")
        builds.append(full_refresh(cache))
        restarts.append(first_page(cache))
        relists.append(full_refresh(cache))
    rows.append(("first page of a store never indexed (newest 100 records read, the rest in the background)",
                 _fmt(empty), "< 1 s"))
    rows.append((f"whole first build, synchronous `refresh()` ({runs:,} records read)", _fmt(builds), "-"))
    rows.append(("first page after a restart (index file kept; refresh in the background, waited <= 0.5 s)",
                 _fmt(restarts), "< 1 s"))
    rows.append(("synchronous `refresh()` with the index kept (one listing, nothing to read)", _fmt(relists), "-"))
    index = RunIndex(store, os.path.join(work, "index-cache-0"), max_age=3600)
    index.page()
    warm = {
        "newest 50": lambda: index.page(),
        f"offset {runs - 100:,}": lambda: index.page(offset=runs - 100),
        "sorted by duration": lambda: index.page(sort="duration"),
        "sorted by experiment, ascending": lambda: index.page(sort="experiment", descending=False),
        "filter experiment ~ '12', status finished": lambda: index.page(experiment="12", status="finished"),
        "filter hyper-parameter lr=0.1": lambda: index.page(hyper={"lr": "0.1"}),
    }
    for name, call in warm.items():
        med, low, high = _median(call, max(reps, 20))
        rows.append((f"warm page: {name}", f"{med * 1000:.1f} ms ({low * 1000:.1f}-{high * 1000:.1f})",
                     "< 0.2 s"))
    due = RunIndex(store, os.path.join(work, "index-cache-0"), max_age=0, wait=0)
    med, low, high = _median(due.page, max(reps, 20))
    rows.append(("page when a refresh falls due (started in the background, `wait=0`)",
                 f"{med * 1000:.1f} ms ({low * 1000:.1f}-{high * 1000:.1f})", "< 0.2 s"))
    due.close()
    store.close()
    return rows


def _fmt(times: list[float]) -> str:
    return f"{statistics.median(times):.3f} s ({min(times):.3f}-{max(times):.3f})"


def bench_tar(work: str, quick: bool, reps: int) -> list[tuple[str, ...]]:
    """Rows (contender, time, MB/s, CPU seconds, size, peak RSS or first-byte time) for archives of W1's folder."""
    from studio_run.config import Config
    from studio_run.runner.capturer import Capturer, Target
    from studio_run.snapshots.statcache import StatCache
    from studio_run.store.archive import GZIP_LEVEL, iter_tar
    from studio_run.store.open import open_store
    from studio_run.store.records import RunRecord, new_run_id

    data = os.path.join(work, "w1")
    total = make_folder(data, QUICK if quick else FULL)
    home = os.path.join(work, "tar-home")
    store_root = os.path.join(work, "tar-store")
    store = open_store(Config(home=home, store=store_root, fsync=False))
    record = RunRecord(experiment="w1", run_id=new_run_id(), status="finished", exit_code=0)
    capturer = Capturer(store, record, StatCache(None))
    capturer.capture([Target("data", data, "capture-once")])
    assert capturer.errors == [], capturer.errors
    record = store.records.read("w1", record.run_id, 1)
    out_dir = os.path.join(work, "out")
    os.makedirs(out_dir, exist_ok=True)
    env = {"STUDIOML_HOME": os.path.join(home, ".studioml"), "STUDIO_STORE": store_root, "PYTHONPATH": ROOT}
    log = os.path.join(work, "tar.log")
    results: dict[str, list[tuple[float, int, int, float]]] = {}

    def command(name: str, argv: list[str], out: str, cwd: str = work) -> None:
        if os.path.exists(out):
            os.unlink(out)
        wall, rss, _reported, cpu = run_command(Cmd(argv, cwd, env), log)
        results.setdefault(name, []).append((wall, os.path.getsize(out), rss, cpu))

    def stream(name: str, level: "int | None", out: str) -> None:
        start, cpu = time.perf_counter(), time.process_time()
        first = 0.0
        with open(out, "wb") as f:
            for chunk in iter_tar(store, record, "data", gzip_level=level):
                if not first:
                    first = time.perf_counter() - start
                f.write(chunk)
        results.setdefault(name, []).append((time.perf_counter() - start, os.path.getsize(out), int(first * 1e6),
                                             time.process_time() - cpu))

    studio = [sys.executable, "-m", "studio_run", "get", "w1/data", "--tar"]
    contenders: list[tuple[str, Callable[[], None]]] = [
        (f"studio get --tar .tar.gz (level {GZIP_LEVEL})",
         lambda: command("studio get --tar .tar.gz", studio + [os.path.join(out_dir, "s.tar.gz")],
                         os.path.join(out_dir, "s.tar.gz"))),
        ("tar czf", lambda: command("tar czf", ["tar", "czf", os.path.join(out_dir, "t.tar.gz"), "-C", data, "."],
                                    os.path.join(out_dir, "t.tar.gz"))),
        (f"iter_tar in-process, level {GZIP_LEVEL}",
         lambda: stream(f"iter_tar level {GZIP_LEVEL}", GZIP_LEVEL, os.path.join(out_dir, "i.tar.gz"))),
        ("iter_tar in-process, level 6", lambda: stream("iter_tar level 6", 6, os.path.join(out_dir, "i6.tar.gz"))),
        ("studio get --tar .tar", lambda: command("studio get --tar .tar", studio + [os.path.join(out_dir, "s.tar")],
                                                  os.path.join(out_dir, "s.tar"))),
        ("tar cf", lambda: command("tar cf", ["tar", "cf", os.path.join(out_dir, "t.tar"), "-C", data, "."],
                                   os.path.join(out_dir, "t.tar"))),
    ]
    for rep in range(reps):
        for i in range(len(contenders)):  # each repetition starts with another contender
            contenders[(i + rep) % len(contenders)][1]()
    rows = []
    for name, samples in results.items():
        wall = statistics.median(s[0] for s in samples)
        size = statistics.median(s[1] for s in samples)
        extra = statistics.median(s[2] for s in samples)
        memory = (f"first bytes after {extra / 1000:.1f} ms" if name.startswith("iter_tar")
                  else f"peak RSS {extra / MiB:.0f} MiB")
        cpu = statistics.median(s[3] for s in samples)
        rows.append((name, f"{wall:.2f} s ({min(s[0] for s in samples):.2f}-{max(s[0] for s in samples):.2f})",
                     f"{total / wall / 1e6:.0f}", f"{cpu:.2f}", f"{size / MiB:.0f} MiB", memory))
    store.close()
    return rows


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="W1 at an eighth, 1,250 runs")
    parser.add_argument("--runs", type=int, default=0, help="runs in the index's store (default 10,000)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "ui.md"))
    parser.add_argument("--only", choices=["index", "tar"], help="run one of the two parts")
    args = parser.parse_args(argv)
    runs = args.runs or (QUICK.experiments if args.quick else FULL.experiments)
    work = tempfile.mkdtemp(prefix="studio-ui-bench-", dir=args.workdir)
    lines = [f"# studio ui: store side ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{os.cpu_count()} cores, {'quick' if args.quick else 'full'} scale, {args.reps} reps)", ""]
    try:
        if args.only in (None, "index"):
            lines += ["## Run index", "", "| what | median (min-max) | goal |", "|---|---|---|"]
            lines += [f"| {a} | {b} | {c} |" for a, b, c in bench_index(work, runs, args.reps)]
            lines.append("")
        if args.only in (None, "tar"):
            lines += ["## Archive of W1's folder", "",
                      "| contender | wall, median (min-max) | MB/s | CPU s | size | memory |", "|---|---|---|---|---|---|"]
            lines += [f"| {' | '.join(row)} |" for row in bench_tar(work, args.quick, args.reps)]
            lines.append("")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
