"""Workloads W1-W8 (issue 5; restic and borg joined in issue 10): who runs in each, on what data,
and the goals studio must meet. W9, the scale curves, is in ``scale.py``.

Goals compare studio's median with a baseline's median (``ratio``, lower is better), with a
fixed number of seconds (``seconds``), with another contender's median (``delta``: what studio
adds), or bound the content bytes studio stored (``content``).
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from typing import Callable, Optional

from backup_tools import BorgCreate, BorgExtract, ResticBackup, ResticRestore
from baselines import Boto3Upload, Copy, Dvc, DvcPull, Mlflow, MlflowDownload, Python, TarCapture, TarExtract
from contenders import Contender, Ctx, Studio, StudioList, StudioRun, StudioSnapshot, remove
from workloads import NOOP_SCRIPT, TRAIN_SCRIPT, MiB, Scale, calibrate_work, write_script

__all__ = ["Goal", "Workload", "WORKLOADS"]


@dataclass(frozen=True)
class Goal:
    """One goal row: ``subject``'s median compared as ``kind`` says, met when ``<= limit``."""

    text: str
    kind: str  # ratio | seconds | delta | content
    subject: str
    limit: float
    other: str = ""

    def evaluate(self, medians: dict[str, dict[str, float]]) -> tuple[Optional[float], str]:
        """``(value, shown)``; value None when a contender it needs did not run."""
        mine = medians.get(self.subject)
        theirs = medians.get(self.other) if self.other else None
        if mine is None or (self.other and theirs is None):
            return None, "not measured: " + (self.subject if mine is None else self.other) + " did not run"
        if self.kind == "ratio":
            assert theirs is not None
            value = mine["seconds"] / theirs["seconds"]
            return value, f"{value:.2f} x ({mine['seconds']:.2f} s / {theirs['seconds']:.2f} s)"
        if self.kind == "delta":
            assert theirs is not None
            value = mine["seconds"] - theirs["seconds"]
            return value, f"+{value:.3f} s ({mine['seconds']:.3f} s - {theirs['seconds']:.3f} s)"
        if self.kind == "content":
            value = mine["content_max"]
            return value, f"{value / MiB:.1f} MiB (largest of all repetitions)"
        value = mine["seconds"]
        return value, f"{value:.3f} s"


@dataclass
class Workload:
    """A row group of the table: its contenders, the data they share, its goals."""

    id: str
    title: str
    build: Callable[[Ctx, Scale, "Data"], list[Contender]]
    goals: Callable[[Scale], list[Goal]]
    primary: str  # the studio contender the "studio / this" column divides
    cold: bool = False  # drop the page cache before each timed run
    per_rep: Optional[Callable[[Ctx, "Data", Scale, int], None]] = None
    s3: bool = False
    quick_reps: bool = True  # repetitions: scale.reps (or scale.noop_reps when False)
    quick_all_rows: bool = False  # --quick runs every row, not only those the goals compare (W9's curves)
    notes: list[str] = field(default_factory=list)


class Data:
    """Folders the workloads share, generated on first use under ``root/data``."""

    def __init__(self, root: str, scale: Scale) -> None:
        self.root, self.scale = os.path.join(root, "data"), scale
        self._folder: Optional[str] = None
        self._small: Optional[str] = None

    def folder(self) -> str:
        """W1's folder (read-only for every workload)."""
        if self._folder is None:
            from workloads import make_folder

            self._folder = os.path.join(self.root, "w1")
            make_folder(self._folder, self.scale)
        return self._folder

    def folder_copy(self, name: str) -> str:
        """A private copy of W1's folder, for a workload that changes it."""
        import subprocess

        path = os.path.join(self.root, name)
        remove(path)
        subprocess.run(["cp", "-a", self.folder(), path], check=True)
        return path

    def small(self) -> str:
        """W4's many small files."""
        if self._small is None:
            from workloads import make_small_files

            self._small = os.path.join(self.root, "small")
            make_small_files(self._small, self.scale.small_files, self.scale.small_size)
        return self._small


def _captures(ctx: Ctx, data: str, fresh: bool, gzip: bool = True) -> list[Contender]:
    found: list[Contender] = [
        Studio(ctx, "studio", data, fresh=fresh),
        StudioSnapshot(ctx, "snapshot", data, fresh=fresh),
        TarCapture(ctx, "tar", data, fresh=fresh, gzip=False),
    ]
    if gzip:
        found.append(TarCapture(ctx, "targz", data, fresh=fresh, gzip=True))
    found += [ResticBackup(ctx, "restic", data, fresh=fresh),
              ResticBackup(ctx, "resticz", data, fresh=fresh, compression="auto"),
              BorgCreate(ctx, "borg", data, fresh=fresh)]
    return found + [Dvc(ctx, "dvc", data, fresh=fresh), Mlflow(ctx, "mlflow", data, fresh=fresh),
                    Copy(ctx, "cp", data, fresh=fresh)]


def _w1(ctx: Ctx, scale: Scale, data: Data) -> list[Contender]:
    return _captures(ctx, data.folder(), fresh=True)


def _w2(ctx: Ctx, scale: Scale, data: Data) -> list[Contender]:
    return _captures(ctx, data.folder_copy("w2"), fresh=False)


def _w2_change(ctx: Ctx, data: Data, scale: Scale, rep: int) -> None:
    from workloads import mutate

    mutate([os.path.join(data.root, "w2")] + ctx.views, scale.change, rep)


def _w3(ctx: Ctx, scale: Scale, data: Data) -> list[Contender]:
    return _captures(ctx, data.folder(), fresh=False, gzip=False)


def _w4(ctx: Ctx, scale: Scale, data: Data) -> list[Contender]:
    small = data.small()
    return [Studio(ctx, "studio", small, fresh=True, s3=True), Dvc(ctx, "dvc", small, fresh=True, s3=True),
            Mlflow(ctx, "mlflow", small, fresh=True, s3=True), Boto3Upload(ctx, "boto3", small)]


def _w4_reset(ctx: Ctx, data: Data, scale: Scale, rep: int) -> None:
    if ctx.s3:
        ctx.s3.reset()  # every bucket: moto holds objects in memory


def _w5(ctx: Ctx, scale: Scale, data: Data) -> list[Contender]:
    steps = round(scale.train_seconds / scale.ckpt_every)
    work = calibrate_work(scale.ckpt_every * 0.9)  # the rest of the step makes and writes the checkpoint
    script = ["train.py", "ckpt", str(scale.ckpt_size), str(steps), str(work)]
    plain, studio = ctx.path("plain"), ctx.path("studio")
    for cwd in (plain, studio):
        write_script(cwd, "train.py", TRAIN_SCRIPT)
    plain_ckpt, studio_ckpt = os.path.join(plain, "ckpt"), os.path.join(studio, "ckpt")
    options = ["-e", "w5", "--capture", f"{studio_ckpt}:ckpt", "--capture-interval", f"{scale.capture_interval}s"]
    return [
        Python(ctx, "python train.py (no studio)", plain, script, [plain_ckpt], on_before=lambda: remove(plain_ckpt)),
        StudioRun(ctx, "studio run --capture ckpt", ctx.path("studio-home"), studio, options, script, fresh=True,
                  on_before=lambda: remove(studio_ckpt)),
    ]


def _w6(ctx: Ctx, scale: Scale, data: Data) -> list[Contender]:
    folder = data.folder()
    home, cwd = ctx.path("studio-home"), ctx.path("studio-cwd")
    write_script(cwd, "noop.py", NOOP_SCRIPT)
    cache = os.path.join(home, "blobcache")
    reuse = ["-e", "w6", "--reuse", "w1/data:data"]

    def capture_w1() -> None:  # the artifact every studio row reuses, captured once
        remove(home)
        ctx.untimed(ctx.tools.studio_cmd(["run", "-e", "w1", "--capture-once", f"{folder}:data", "noop.py"],
                                         cwd, home))

    def fill_cache() -> None:
        if not os.path.isdir(cache):
            ctx.untimed(warm.command())

    cold = StudioRun(ctx, "studio --reuse, cold cache", home, cwd, reuse, ["noop.py"], outputs=[cache],
                     on_prepare=capture_w1, on_before=lambda: remove(cache))
    warm = StudioRun(ctx, "studio --reuse, warm cache", home, cwd, reuse, ["noop.py"], outputs=[cache],
                     on_before=fill_cache, cold=False)
    plain = StudioRun(ctx, "studio run, no --reuse", home, cwd, ["-e", "w6"], ["noop.py"], outputs=[], cold=False)
    return [cold, warm, plain, Copy(ctx, "cp", folder, fresh=True, durable=False), TarExtract(ctx, "tarx", folder),
            ResticRestore(ctx, "restic", folder), BorgExtract(ctx, "borg", folder),
            DvcPull(ctx, "dvcpull", folder), MlflowDownload(ctx, "mlflowget", folder)]


def _w7(ctx: Ctx, scale: Scale, data: Data) -> list[Contender]:
    cwd = ctx.path("cwd")
    write_script(cwd, "noop.py", NOOP_SCRIPT)
    studio = StudioRun(ctx, "studio run noop.py", ctx.path("studio-home"), cwd, ["-e", "w7"], ["noop.py"],
                       on_prepare=lambda: ctx.untimed(studio.command()))  # a home that has run once
    return [Python(ctx, "python noop.py", cwd, ["noop.py"]), studio]


def _w8(ctx: Ctx, scale: Scale, data: Data) -> list[Contender]:
    return [StudioList(ctx, scale.experiments)]


RESTIC_OFF = "restic backup --compression off"  # the goals' restic: the issue measured it uncompressed


def _ratio(text: str, other: str, limit: float, subject: str = "studio") -> Goal:
    return Goal(text, "ratio", subject, limit, other)


WORKLOADS = [
    Workload("W1", "first capture of a 1 GiB folder", _w1, lambda s: [
        _ratio("<= 0.7 x restic (--compression off)", RESTIC_OFF, 0.7),
        _ratio("<= 1.2 x Studio-style tar", "tar (Studio-style)", 1.2),
        _ratio("<= 0.5 x DVC", "dvc add + push", 0.5),
        _ratio("<= 1.5 x cp -r + sync", "cp -r + sync", 1.5),
    ], "studio", cold=True),
    Workload("W2", "re-capture of W1 after one file changed", _w2, lambda s: [
        _ratio("<= 0.5 x restic (--compression off)", RESTIC_OFF, 0.5),
        _ratio("<= 0.25 x Studio-style tar", "tar (Studio-style)", 0.25),
        Goal(f"content written <= 1.1 x {s.change // MiB} MiB", "content", "studio", 1.1 * s.change),
    ], "studio", cold=True, per_rep=_w2_change, notes=[
        "A periodic capture's CPU cost matters more than its time: the CPU s column is user + system seconds of "
        "the command and everything it waited for."]),
    Workload("W3", "re-capture of W1 unchanged", _w3, lambda s: [
        _ratio("<= 0.5 x restic (--compression off)", RESTIC_OFF, 0.5),
        Goal("<= 0.3 s", "seconds", "studio", 0.3),
        Goal("zero content bytes written", "content", "studio", 0),
    ], "studio"),
    Workload("W4", "many 4 KiB files, first capture to the S3 test server", _w4, lambda s: [
        _ratio("<= 0.5 x DVC push", "dvc add + push (S3)", 0.5, "studio (S3)"),
        _ratio("<= 1.2 x parallel boto3 upload_file", "boto3 upload_file x16 threads", 1.2, "studio (S3)"),
    ], "studio (S3)", per_rep=_w4_reset, s3=True),
    Workload("W5", "training script writing checkpoints, captured every interval", _w5, lambda s: [
        _ratio("script wall time <= 1.03 x without studio", "python train.py (no studio)", 1.03,
               "studio run --capture ckpt"),
    ], "studio run --capture ckpt"),
    Workload("W6", "--reuse of W1 into a fresh cache, then warm", _w6, lambda s: [
        _ratio("cold <= 0.6 x restic restore", "restic restore", 0.6, "studio --reuse, cold cache"),
        _ratio("cold <= 1.5 x cp -r", "cp -r", 1.5, "studio --reuse, cold cache"),
        Goal("warm adds <= 0.1 s to the run", "delta", "studio --reuse, warm cache", 0.1, "studio run, no --reuse"),
    ], "studio --reuse, cold cache", cold=True),
    Workload("W7", "studio run of a script that does nothing", _w7, lambda s: [
        Goal("<= 0.15 s more than python script.py", "delta", "studio run noop.py", 0.15, "python noop.py"),
    ], "studio run noop.py", quick_reps=False),
    Workload("W8", "studio list with many experiments in the store", _w8, lambda s: [
        Goal("<= 0.5 s", "seconds", "studio list", 0.5),
    ], "studio list", quick_reps=False),
]


def summarize(samples: list[dict[str, float]]) -> dict[str, float]:
    """Median, min and max seconds; median wall, written, content and CPU; largest content and peak RSS."""
    secs = [s["seconds"] for s in samples]
    return {
        "seconds": statistics.median(secs), "min": min(secs), "max": max(secs),
        "wall": statistics.median(s["wall"] for s in samples),
        "written": statistics.median(s["written"] for s in samples),
        "content": statistics.median(s["content"] for s in samples),
        "content_max": max(s["content"] for s in samples),
        "peak_rss": max(s["peak_rss"] for s in samples),
        "cpu": statistics.median(s.get("cpu", 0.0) for s in samples),
    }
