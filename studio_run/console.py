"""What studio prints: one-line messages on stderr, and a progress bar for long transfers.

The script owns stdout; studio speaks on stderr, prefixed ``studio:``, so a user can pipe the
script's output untouched. rich is imported only when a bar is actually shown.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

__all__ = ["format_size", "info", "progress", "warn"]

_DELAY = 0.5  # a bar appears only for work that takes longer than this


def info(message: str) -> None:
    """A status line on stderr."""
    print(f"studio: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A warning line on stderr."""
    print(f"studio: warning: {message}", file=sys.stderr, flush=True)


def format_size(size: float) -> str:
    """Human size with binary units: ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


@contextmanager
def progress(description: str, total: Optional[int] = None) -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(nbytes)`` callback; a rich bar shows on a terminal after half a second."""
    done = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def advance(nbytes: int) -> None:
        with lock:
            done[0] += nbytes

    if not sys.stderr.isatty():
        yield advance
        return

    def show() -> None:
        if stop.wait(_DELAY):
            return
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      transient=True, console=None) as bar:
            task = bar.add_task(description, total=total)
            while not stop.is_set():
                bar.update(task, completed=done[0])
                time.sleep(0.1)

    thread = threading.Thread(target=show, daemon=True)
    thread.start()
    try:
        yield advance
    finally:
        stop.set()
        thread.join()
