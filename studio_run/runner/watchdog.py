"""studio owns the script's whole process tree, even when studio itself is killed.

The script runs as the leader of its own process group, so one ``killpg`` reaches every process
it started (unless one deliberately left the group). When the runner ends normally it ends
that group itself (``end_group``). When the runner dies without a chance to (``kill -9`` of it
or of its process group, the OOM killer, a worker's pool child killed), a watchdog does it:

- a tiny process (``main`` below) in its own session, so that a
  signal to the runner's group does not reach it, holding the read end of a pipe whose write
  end only the runner holds (the fd is not inherited by the script or anything else);
- the runner writes the script's process group id into the pipe once the script started, and
  ``done`` once it has ended the group itself;
- on end of file without ``done`` (the kernel closes the write end when the runner dies, however
  it dies), the watchdog sends SIGTERM to the group, waits the grace period, then SIGKILL.

Chosen over ``PR_SET_PDEATHSIG`` on the script: that reaches only the script (not its children),
fires when the *thread* that started it exits (a worker may start runs from threads), needs a
``preexec_fn`` in a threaded process, and exists only on Linux. The pipe works on any POSIX
system and costs one small interpreter per run (about 20 ms to start, 10 MB of memory, no CPU
while waiting). The one window left open is between the script's start and the next write,
two system calls apart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Optional

__all__ = ["Watchdog", "end_group", "group_alive", "main"]

_DONE = b"done\n"
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The watchdog imports this very package: found as usual, else where the runner found it (a
# checkout run as ``python -m studio_run`` from its folder). Appended, so it never shadows anything.
_BOOT = ("import sys; sys.path.append(sys.argv.pop(1)); "
         "from studio_run.runner.watchdog import main; sys.exit(main())")
_POLL = 0.05  # seconds between looks at a group that was asked to end


class Watchdog:
    """The runner's end of a watchdog: ``start`` before the script, ``watch`` once it runs,
    ``release`` after the runner ended the group itself."""

    def __init__(self, write_fd: int, proc: "subprocess.Popen[bytes]") -> None:
        self._fd: Optional[int] = write_fd
        self._proc = proc

    @classmethod
    def start(cls, grace: float) -> "Watchdog":
        """Start the watchdog process (it waits; it touches nothing until told a group)."""
        read_fd, write_fd = os.pipe()  # both non-inheritable: only ``pass_fds`` hands one on
        try:
            proc = subprocess.Popen(
                # -S: no site-packages and no .pth hooks (the watchdog needs only the standard
                # library and this package, appended by _BOOT): it starts in ~20 ms instead of
                # ~60 ms, on the core the script is starting on.
                [sys.executable, "-S", "-c", _BOOT, _PACKAGE_ROOT, str(read_fd), f"{grace:g}"],
                pass_fds=(read_fd,), start_new_session=True, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        return cls(write_fd, proc)

    def watch(self, pgid: int) -> bool:
        """From now on, the death of this process ends process group ``pgid``; False when the
        watchdog is gone (killed by someone): the run goes on, unguarded."""
        if self._fd is None:
            return False
        try:
            os.write(self._fd, f"{pgid}\n".encode())
        except OSError:
            return False
        return True

    def release(self) -> None:
        """The runner has ended the group itself: the watchdog exits without touching it."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.write(fd, _DONE)
        except OSError:
            pass  # the watchdog is gone already: nothing left to tell
        finally:
            os.close(fd)
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_group(pgid: int, grace: float) -> bool:
    """SIGTERM to every process of group ``pgid``, SIGKILL to what is left after ``grace``
    seconds; returns whether anything was left to end."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(_POLL)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def main(argv: Optional[list[str]] = None) -> int:
    """The watchdog process: wait for end of file on the pipe, then end the group it was told."""
    args = sys.argv[1:] if argv is None else argv
    fd, grace = int(args[0]), float(args[1])
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # only the pipe decides, never a terminal going away
    received = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            continue
        if not chunk:
            break
        received += chunk
        if received.endswith(_DONE):
            return 0
    pgids = [int(line) for line in received.split() if line.isdigit()]
    if pgids:
        end_group(pgids[-1], grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
