"""Studio's background threads (periodic captures, file uploads) give way to the user's script.

The script's wall time is what users feel, so work studio does beside it runs at a lower
priority. Linux applies nice per thread, so each background thread lowers itself when it
starts; where that is not possible (another OS, a container forbidding it) it simply runs.
"""

from __future__ import annotations

import os
import threading

__all__ = ["BACKGROUND_NICE", "yield_to_script"]

BACKGROUND_NICE = 10


def yield_to_script() -> None:
    """Lower the calling thread's priority to ``BACKGROUND_NICE`` (best effort)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except (OSError, AttributeError):
        pass
