"""The terminal goes to the script while it runs, as a shell gives it to a foreground job.

The script runs in its own process group (``watchdog.py`` says why). A process group that is not
the terminal's foreground group is stopped (SIGTTIN) when it reads the terminal, and a Ctrl-C
reaches only the foreground group. So when studio owns the terminal, ``Foreground`` hands it to
the script's group for the script's life (a script can read input and be debugged, and Ctrl-C
reaches it and its children directly, as before), then takes it back for the final capture (a
second Ctrl-C then reaches studio, which says what it does).

Meanwhile studio writes the script's output to the terminal from the background: SIGTTOU is
ignored for that time, so a terminal with ``stty tostop`` does not stop studio.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Optional

__all__ = ["Foreground"]


class Foreground:
    """Gives the controlling terminal to a process group and takes it back (main thread)."""

    def __init__(self) -> None:
        self._fd: Optional[int] = None
        self._ttou: Any = None

    def give(self, pgid: int) -> bool:
        """Make ``pgid`` the terminal's foreground group if studio's group is now; returns
        whether it did (not on a pipe, in the background, or off the main thread)."""
        fd = _own_terminal()
        if fd is None:
            return False
        try:
            self._ttou = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        except ValueError:  # not the main thread
            return False
        try:
            os.tcsetpgrp(fd, pgid)
        except OSError:
            signal.signal(signal.SIGTTOU, self._ttou)
            return False
        self._fd = fd
        try:
            os.killpg(pgid, signal.SIGCONT)  # it may have read the terminal before it was its own
        except ProcessLookupError:
            pass
        return True

    def take_back(self) -> None:
        """Make studio's group the foreground group again (a no-op when ``give`` did nothing)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.tcsetpgrp(fd, os.getpgrp())  # allowed from the background: SIGTTOU is ignored
        except OSError:
            pass  # the terminal is gone (hung up): nothing to take back
        finally:
            signal.signal(signal.SIGTTOU, self._ttou)


def _own_terminal() -> Optional[int]:
    """The fd of the terminal on stdin when studio's group is its foreground group, else None."""
    stdin = sys.stdin
    try:
        if stdin is None or not stdin.isatty():
            return None
        fd = stdin.fileno()
        return fd if os.tcgetpgrp(fd) == os.getpgrp() else None
    except (OSError, ValueError):
        return None
