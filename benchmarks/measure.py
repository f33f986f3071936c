"""Measure one command from outside: wall time, peak memory, and what it wrote.

Why it is done this way:

- Every contender, studio included, runs as a child process, exactly as a user would run it, and
  is timed from fork to exit with ``time.perf_counter``.
- Peak memory is ``ru_maxrss`` of the command as GNU ``/usr/bin/time`` reports it from ``wait4``:
  the largest resident set among the command and every descendant it waited for (``sh -c``'s
  children, the script ``studio run`` starts), so no sampling can miss a short peak. It is not
  taken from the harness's own ``wait4``: a child forked from the harness starts with the
  harness's resident set as its high-water mark, and Linux keeps that mark across ``exec``.
- Bytes written are the growth of the destination's disk usage (allocated blocks, like ``du``),
  measured before and after; for S3 the growth of the bucket's object sizes.
- A command may report its own number by writing ``{"seconds": …}`` to ``$BENCH_REPORT``: the
  training script of W5 reports its own wall time, which is what that goal compares.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

__all__ = [
    "Cmd",
    "CommandFailed",
    "CpuClock",
    "Sample",
    "disk_usage",
    "drop_caches",
    "machine_description",
    "run_command",
]

_DROP_CACHES = "/proc/sys/vm/drop_caches"
_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None  # GNU time: peak RSS


@dataclass(frozen=True)
class Cmd:
    """A command to run: argv, working folder, and environment variables added to the harness's."""

    argv: list[str]
    cwd: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One timed repetition of one contender."""

    seconds: float  # what the goal compares: the wall time, or what the command reported
    wall: float  # fork to exit, as seen by the harness
    written: int  # growth of the destination's disk usage, bytes
    content: int  # of which content objects (studio's objects/; the whole output for baselines)
    peak_rss: int  # bytes
    cpu: float = 0.0  # user + system CPU seconds of the command and every descendant it waited for

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready form."""
        return dict(self.__dict__)


class CommandFailed(RuntimeError):
    """A timed command exited non-zero or timed out; the message has the tail of its output."""


def run_command(cmd: Cmd, log_path: str, timeout: float = 1800.0) -> tuple[float, int, Optional[float], float]:
    """Run ``cmd`` to completion; return ``(wall seconds, peak RSS bytes, reported seconds, CPU seconds)``.

    CPU seconds are user + system time from ``wait4``: the command's and every descendant's it
    waited for (GNU time's own share is a millisecond or so).

    Output goes to ``log_path`` (appended). The child gets its own session so that a timeout
    ends it and everything it started, by its process group id, and nothing else.
    """
    report, rss = log_path + ".report.json", log_path + ".rss"
    for path in (report, rss):
        if os.path.exists(path):
            os.unlink(path)
    env = dict(os.environ, **cmd.env, BENCH_REPORT=report)
    argv = [_TIME, "-q", "-f", "%M", "-o", rss] + cmd.argv if _TIME else cmd.argv
    with open(log_path, "ab") as log:
        log.write(f"\n$ (cd {cmd.cwd} && {' '.join(cmd.argv)})\n".encode())
        log.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cmd.cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        timer = threading.Timer(timeout, _kill_group, (proc.pid,))
        timer.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4; tell Popen
    if proc.returncode != 0:
        raise CommandFailed(f"{cmd.argv[0]} exited with {proc.returncode}: {_tail(log_path)}")
    reported = None
    if os.path.exists(report):
        with open(report) as f:
            reported = float(json.load(f)["seconds"])
    peak_kib = usage.ru_maxrss
    if _TIME:
        with open(rss) as f:
            peak_kib = int(f.read().split()[-1])
    return wall, peak_kib * 1024, reported, usage.ru_utime + usage.ru_stime


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(path: str, lines: int = 6) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - 4000))
        text = f.read().decode(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:])


class CpuClock:
    """CPU seconds the rest of the machine used since ``start``: other sessions, kernel threads.

    The whole machine's busy time (``/proc/stat``) less this process's and its children's. A
    benchmark shares its cores with whatever else runs; this says how much did, so a reader can
    tell a quiet run from a loaded one. Kernel write-back of the contenders' own files counts as
    "other", so I/O-heavy workloads show a few seconds even on a quiet machine.
    """

    def __init__(self) -> None:
        self.start = self._busy() - self._ours()

    def others(self) -> float:
        """CPU seconds used by other processes since this clock started."""
        return (self._busy() - self._ours()) - self.start

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _ours() -> float:
        import resource

        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def disk_usage(*paths: str) -> int:
    """Bytes allocated on disk below ``paths`` (files and folders, links not followed), like ``du -sB1``."""
    total = 0
    for path in paths:
        if not os.path.lexists(path):
            continue
        total += os.lstat(path).st_blocks * 512
        for dirpath, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                except FileNotFoundError:
                    pass
    return total


def drop_caches() -> bool:
    """Write back dirty pages and empty the page cache; False when not permitted (not root)."""
    os.sync()
    try:
        with open(_DROP_CACHES, "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def can_drop_caches() -> bool:
    """Whether ``drop_caches`` will work here, without dropping anything."""
    return os.access(_DROP_CACHES, os.W_OK)


def machine_description(workdir: str, versions: dict[str, str]) -> dict[str, str]:
    """What a reader needs to judge the numbers: cores, memory, kernel, filesystem, versions."""
    return {
        "cpus": str(os.cpu_count()),
        "cpu_model": _cpu_model(),
        "memory": f"{_mem_total_gib():.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "filesystem": _filesystem_of(workdir),
        "python": platform.python_version(),
        **versions,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    return 0.0


def _filesystem_of(path: str) -> str:
    """Type and device of the mount holding ``path`` (longest matching mount point)."""
    path = os.path.realpath(path)
    best = ("", "unknown", "")
    with open("/proc/mounts") as f:
        for line in f:
            device, mount, fstype = line.split()[:3]
            inside = path == mount or path.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best[0]):
                best = (mount, fstype, device)
    free = shutil.disk_usage(path).free / (1 << 30)
    return f"{best[1]} on {best[2]} (mounted at {best[0]}, {free:.0f} GiB free)"
