"""W9, scale: how studio, restic, tar and cp grow with the number of files (issue 10).

For each size (10,000, 100,000 and 300,000 small files of 0.5-4 KiB, plus W1's four large ones)
the same tree goes through four phases, each an ordinary workload of the harness (the same
alternating loop, medians, peak RSS and goals as W1-W8):

- ``first``: a first capture into an empty store, page cache dropped (cold) and not (warm);
- ``unchanged``: a re-capture of the unchanged tree, cold and warm;
- ``changed``: a re-capture after one small file got new content (warm);
- ``read``: ``studio get`` against ``restic restore``, ``tar -x`` and ``cp -r``, and ``studio run
  --reuse`` with an empty blob cache and a warm one against a run without ``--reuse`` (warm).

Then ``summary`` fits a line (least squares) through each row's median time and peak memory
against the file count: the slope is the per-file cost, the intercept the fixed one. Growth is
linear when the slope between the two largest sizes is at most 1.25 x the slope between the two
smallest; a plot of both against the file count is drawn by ``plot.py``.
"""

from __future__ import annotations

import os
import random
from typing import Any, Callable, Optional

from backup_tools import ResticBackup, ResticRestore
from baselines import Copy, TarCapture, TarExtract
from contenders import Contender, Ctx, Studio, StudioRun, remove
from measure import Cmd
from suite import Goal, Workload
from workloads import NOOP_SCRIPT, MiB, Scale, write_script

__all__ = ["LINEAR", "PHASES", "StudioGet", "fit", "make_tree", "phases", "run_w9", "summary"]

LINEAR = 1.25  # slope between the two largest sizes over slope between the two smallest, at most
RSS_LIMIT = 200 * MiB
WARM_REUSE_UP_TO = 100_000  # "warm --reuse adds <= 0.3 s at 100,000 files": checked at every size up to it
PHASES = ("first", "unchanged", "changed", "read")
RESTIC = "restic backup --compression off"
# (phase, studio row, baseline row): the rows whose per-file cost the summary compares
SLOPES = [("first", "studio, cold", "restic, cold"), ("first", "studio, warm", "restic, warm"),
          ("unchanged", "studio, cold", "restic, cold"), ("unchanged", "studio, warm", "restic, warm"),
          ("changed", "studio", "restic"), ("read", "studio get", "restic restore")]


def make_tree(root: str, files: int, scale: Scale, seed: int = 9) -> int:
    """``files`` random files of 0.5-4 KiB in folders of 1,000, and ``scale.big_files`` large ones; bytes."""
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    total = 0
    for i in range(scale.big_files if scale.big_size else 0):
        with open(os.path.join(root, f"weights-{i}.bin"), "wb") as f:
            for _ in range(scale.big_size // MiB):
                f.write(os.urandom(MiB))
        total += scale.big_size
    for i in range(files):
        folder = os.path.join(root, f"shard-{i // 1000:03d}")
        if i % 1000 == 0:
            os.makedirs(folder, exist_ok=True)
        size = rng.randint(512, 4096)
        with open(os.path.join(folder, f"item-{i:06d}.bin"), "wb") as f:
            f.write(os.urandom(size))
        total += size
    return total


def _touch_one(data: str, files: int, rep: int) -> None:
    """The ``changed`` phase's change: new content, same size, in one small file (another each repetition)."""
    path = os.path.join(data, "shard-000", f"item-{(rep * 7) % min(files, 1000):06d}.bin")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.write(os.urandom(size))


class StudioGet(Contender):
    """``studio get w9/data DEST``: the captured tree written into an empty folder (not synced)."""

    label = "studio get"
    is_studio = True

    def __init__(self, ctx: Ctx, home: str, cwd: str, data: str) -> None:
        super().__init__(ctx)
        self.home, self.cwd, self.data = home, cwd, data
        self.dest = ctx.path("studio-get", "restored")
        self.outputs = [self.dest]

    def prepare(self) -> None:  # the capture every studio row of the phase reads
        remove(self.home)
        write_script(self.cwd, "noop.py", NOOP_SCRIPT)
        self.ctx.untimed(self.ctx.tools.studio_cmd(
            ["run", "-e", "w9", "--capture-once", f"{self.data}:data", "noop.py"], self.cwd, self.home))

    def before(self) -> None:
        remove(self.dest)
        os.makedirs(os.path.dirname(self.dest), exist_ok=True)

    def command(self) -> Cmd:
        return self.ctx.tools.studio_cmd(["get", "w9/data", self.dest], self.cwd, self.home)

    def warm(self) -> Optional[Cmd]:
        return self.ctx.tools.studio_cmd(["--version"], self.cwd, self.home)

    def cleanup(self) -> None:
        remove(os.path.dirname(self.dest))


def _labelled(c: Contender, label: str, cold: Optional[bool] = None) -> Contender:
    c.label, c.cold = label, cold
    return c


def _capture_rows(ctx: Ctx, data: str, fresh: bool, tar: bool) -> list[Contender]:
    rows = []
    for temp in ("cold", "warm"):
        cold = temp == "cold"
        rows += [_labelled(Studio(ctx, f"studio-{temp}", data, fresh=fresh), f"studio, {temp}", cold),
                 _labelled(ResticBackup(ctx, f"restic-{temp}", data, fresh=fresh), f"restic, {temp}", cold)]
        if tar:
            rows.append(_labelled(TarCapture(ctx, f"tar-{temp}", data, fresh=True, gzip=False), f"tar, {temp}", cold))
    return rows


def _ratio(text: str, subject: str, other: str, limit: float) -> Goal:
    return Goal(text, "ratio", subject, limit, other)


def phases(files: int, data: str) -> list[Workload]:
    """The four workloads of one size, run on the tree at ``data``."""
    n = f"{files:,}"

    def first(ctx: Ctx, scale: Scale, _data: Any) -> list[Contender]:
        return _capture_rows(ctx, data, fresh=True, tar=True)

    def unchanged(ctx: Ctx, scale: Scale, _data: Any) -> list[Contender]:
        return _capture_rows(ctx, data, fresh=False, tar=False)

    def changed(ctx: Ctx, scale: Scale, _data: Any) -> list[Contender]:
        return [_labelled(Studio(ctx, "studio", data, fresh=False), "studio", False),
                _labelled(ResticBackup(ctx, "restic", data, fresh=False), "restic", False)]

    def read(ctx: Ctx, scale: Scale, _data: Any) -> list[Contender]:
        home, cwd = ctx.path("studio-home"), ctx.path("studio-cwd")
        cache = os.path.join(home, "blobcache")
        reuse = ["-e", "w9r", "--reuse", "w9/data:data"]

        def fill_cache() -> None:
            if not os.path.isdir(cache):
                ctx.untimed(warm.command())

        get = StudioGet(ctx, home, cwd, data)  # first: its prepare makes the capture the --reuse rows read
        cold = StudioRun(ctx, "studio --reuse, cold cache", home, cwd, reuse, ["noop.py"], outputs=[cache],
                         on_before=lambda: remove(cache), cold=False)
        warm = StudioRun(ctx, "studio --reuse, warm cache", home, cwd, reuse, ["noop.py"], outputs=[cache],
                         on_before=fill_cache, cold=False)
        plain = StudioRun(ctx, "studio run, no --reuse", home, cwd, ["-e", "w9r"], ["noop.py"], outputs=[], cold=False)
        return [get, cold, warm, plain, _labelled(ResticRestore(ctx, "restic", data), "restic restore"),
                TarExtract(ctx, "tarx", data), Copy(ctx, "cp", data, fresh=True, durable=False)]

    def capture_goals(s: Scale) -> list[Goal]:
        return [_ratio(f"{n} files, {t} <= 0.7 x restic {t}", f"studio, {t}", f"restic, {t}", 0.7)
                for t in ("cold", "warm")]

    def read_goals(s: Scale) -> list[Goal]:
        goals = [_ratio(f"{n} files, get <= 0.7 x restic restore", "studio get", "restic restore", 0.7),
                 _ratio(f"{n} files, get <= 2 x cp -r", "studio get", "cp -r", 2.0),
                 _ratio(f"{n} files, cold --reuse <= 1.5 x cp -r", "studio --reuse, cold cache", "cp -r", 1.5)]
        if files <= WARM_REUSE_UP_TO:
            goals.append(Goal(f"{n} files, warm --reuse adds <= 0.3 s", "delta", "studio --reuse, warm cache", 0.3,
                              "studio run, no --reuse"))
        return goals

    cold_note = ("Rows marked cold: page cache dropped before each timed run, then the contender's own program "
                 "loaded once untimed; warm rows: the tree was just read by the previous contender.")
    found = [
        Workload(f"W9/{files}/first", f"{n} files: first capture", first, capture_goals, "studio, warm",
                 notes=[cold_note, "tar: a new archive of the whole tree (Studio-style), + sync."]),
        Workload(f"W9/{files}/unchanged", f"{n} files: re-capture, nothing changed", unchanged, capture_goals,
                 "studio, warm", notes=[cold_note, "restic bases the backup on its previous snapshot (parent)."]),
        Workload(f"W9/{files}/changed", f"{n} files: re-capture after one small file changed", changed,
                 lambda s: [], "studio", per_rep=lambda ctx, _d, s, rep: _touch_one(data, files, rep),
                 notes=["No goal of its own in issue 10: shown for the curve, compared with restic by the slope."]),
        Workload(f"W9/{files}/read", f"{n} files: studio get and --reuse", read, read_goals, "studio get",
                 notes=["Warm page cache. get, restore, tar -x and cp -r write into an empty folder, not synced; "
                        "--reuse materialises the tree in the blob cache (emptied before each cold row)."]),
    ]
    for w in found:
        w.quick_all_rows = True  # the curves need every row, even at --quick's sizes
    return found


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line through the points: ``(slope, intercept)``."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return slope, my - slope * mx


def _series(results: list[dict[str, Any]], phase: str, label: str, key: str) -> list[tuple[int, float]]:
    points = []
    for w in results:
        parts = w["id"].split("/")
        if len(parts) != 3 or parts[2] != phase:
            continue
        row = next((c for c in w["contenders"] if c["label"] == label and c["summary"]), None)
        if row:
            points.append((int(parts[1]), float(row["summary"][key])))
    return sorted(points)


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Slopes and intercepts of every row's time and memory, and W9's goals across sizes."""
    rows: list[dict[str, Any]] = []
    goals: list[dict[str, Any]] = []
    for w in results:
        phase = w["id"].split("/")[2]
        for c in w["contenders"]:
            if any(r["phase"] == phase and r["label"] == c["label"] for r in rows):
                continue
            time_pts = _series(results, phase, c["label"], "seconds")
            rss_pts = _series(results, phase, c["label"], "peak_rss")
            if not time_pts:
                continue
            entry: dict[str, Any] = {"phase": phase, "label": c["label"], "sizes": [p[0] for p in time_pts],
                                     "seconds": [p[1] for p in time_pts], "peak_rss": [p[1] for p in rss_pts]}
            if len(time_pts) >= 2:
                xs = [float(p[0]) for p in time_pts]
                entry["slope"], entry["intercept"] = fit(xs, entry["seconds"])
                entry["rss_slope"], entry["rss_intercept"] = fit(xs, entry["peak_rss"])
            rows.append(entry)
    by = {(r["phase"], r["label"]): r for r in rows}
    for phase, label in [("first", "studio, warm"), ("unchanged", "studio, warm"), ("changed", "studio"),
                         ("read", "studio get")]:
        goals.append(_linear_goal(phase, label, by.get((phase, label))))
    for phase, mine, theirs in SLOPES:
        goals.append(_slope_goal(phase, mine, theirs, by.get((phase, mine)), by.get((phase, theirs))))
    sizes = sorted({s for r in rows for s in r["sizes"]})
    for size in sizes:
        peaks = [(r["peak_rss"][r["sizes"].index(size)], f"{r['phase']}: {r['label']}") for r in rows
                 if r["label"].startswith("studio") and size in r["sizes"] and r["peak_rss"]]
        if peaks:
            peak, where = max(peaks)
            goals.append({"text": f"{size:,} files, studio's peak RSS <= 200 MiB", "value": peak, "limit": RSS_LIMIT,
                          "met": peak <= RSS_LIMIT, "shown": f"{peak / MiB:.0f} MiB ({where})"})
    return {"rows": rows, "goals": goals, "sizes": sizes}


def _linear_goal(phase: str, label: str, row: Optional[dict[str, Any]]) -> dict[str, Any]:
    text = f"{phase}: {label} grows linearly (last slope <= {LINEAR:g} x first slope)"
    if not row or len(row["sizes"]) < 3:
        return {"text": text, "value": None, "limit": LINEAR, "met": None, "shown": "not measured: needs 3 sizes"}
    xs, ys = row["sizes"], row["seconds"]
    first = (ys[1] - ys[0]) / (xs[1] - xs[0])
    last = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    if first <= 0 or last <= 0:
        return {"text": text, "value": None, "limit": LINEAR, "met": None,
                "shown": f"not meaningful: a slope is not positive ({last * 1e6:.1f} / {first * 1e6:.1f} µs per file; "
                         "the sizes are too close for the noise)"}
    value = last / first
    return {"text": text, "value": value, "limit": LINEAR, "met": value <= LINEAR,
            "shown": f"{value:.2f} x ({last * 1e6:.1f} / {first * 1e6:.1f} µs per file)"}


def _slope_goal(phase: str, mine: str, theirs: str, a: Optional[dict[str, Any]],
                b: Optional[dict[str, Any]]) -> dict[str, Any]:
    text = f"{phase}: per-file cost of {mine} <= of {theirs}"
    if not a or not b or "slope" not in a or "slope" not in b:
        return {"text": text, "value": None, "limit": 1.0, "met": None, "shown": "not measured: needs 2 sizes of both"}
    if a["slope"] <= 0 or b["slope"] <= 0:
        return {"text": text, "value": None, "limit": 1.0, "met": None,
                "shown": f"not meaningful: a slope is not positive ({a['slope'] * 1e6:.1f} / {b['slope'] * 1e6:.1f} "
                         "µs per file; the sizes are too close for the noise)"}
    value = a["slope"] / b["slope"]
    return {"text": text, "value": value, "limit": 1.0, "met": value <= 1.0,
            "shown": f"{value:.2f} x ({a['slope'] * 1e6:.1f} / {b['slope'] * 1e6:.1f} µs per file)"}


def run_w9(sizes: list[int], scale: Scale, workdir: str, run_phase: Callable[[Workload, str], dict[str, Any]],
           log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every phase at every size (smallest first); each size's tree is removed before the next is made."""
    results = []
    for files in sorted(sizes):
        data = os.path.join(workdir, "data", f"w9-{files}")
        log(f"W9: making {files:,} files")
        make_tree(data, files, scale)
        try:
            for w in phases(files, data):
                results.append(run_phase(w, data))
        finally:
            remove(data)
    return results
