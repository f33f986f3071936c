"""TensorBoard over stored runs: ``studio tb EXP[@V] [EXP...]``, and the same for the web UI.

Each run's ``tb`` artifact is materialised through the blob cache (read-only, shared with
``--reuse``, never fetched twice for the same content) and handed to TensorBoard under the name
``exp@version`` with ``--logdir_spec``, so no folder of links is made and nothing is written
next to the cache. TensorBoard runs as a child process on 127.0.0.1 only, in a session of its
own (a Ctrl-C reaches studio, which stops it); ``start_tensorboard`` returns once it answers.

TensorBoard is the ``[tb]`` extra: without it, one line says what to install. It is never
imported here, only run, so this module costs nothing to import.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..errors import MissingDependencyError, NotFoundError, StudioError, UsageError
from ..snapshots.blobcache import BlobCache
from ..store.records import RunRecord
from ..store.store import Store

__all__ = [
    "DEFAULT_PORT",
    "TensorBoard",
    "TensorBoardError",
    "require_tensorboard",
    "run_names",
    "serve_until_stopped",
    "start_tensorboard",
]

DEFAULT_PORT = 6006
TB_TAG = "tb"
_HINT = "pip install 'studio-run[tb]'"
_START_WAIT = 120.0  # seconds TensorBoard may take to answer (it loads slowly on a busy machine)


class TensorBoardError(StudioError):
    """TensorBoard could not start or stopped on its own; the message holds its last words."""


@dataclass
class TensorBoard:
    """A running TensorBoard: its ``url``, the child ``process`` and the folder of its log."""

    url: str
    process: subprocess.Popen
    folder: str

    def running(self) -> bool:
        """Whether the child is still alive."""
        return self.process.poll() is None

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Wait for the child to end (up to ``timeout``); its exit code, or None if still running."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def last_words(self) -> str:
        """The last line TensorBoard printed, for an error message."""
        try:
            with open(os.path.join(self.folder, "tensorboard.log"), errors="replace") as f:
                lines = [line.strip() for line in f if line.strip()]
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def stop(self, grace: float = 10.0) -> None:
        """Stop TensorBoard (SIGTERM, then SIGKILL after ``grace`` seconds) and remove its folder."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)  # its own session: it and its helpers
            except (ProcessLookupError, PermissionError):
                pass
            if self.wait(grace) is None:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def run_names(records: Sequence[RunRecord]) -> list[str]:
    """``exp@version`` for each record: the names the runs get in TensorBoard."""
    return [f"{r.experiment}@{r.version}" for r in records]


def start_tensorboard(
    store: Store,
    records: Sequence[RunRecord],
    *,
    port: Optional[int] = None,
    cache: BlobCache,
    end_with_thread: bool = False,
) -> tuple[str, TensorBoard]:
    """Start TensorBoard over the ``tb`` artifacts of ``records``; returns ``(url, handle)``.

    ``port`` None takes 6006 when free, else any free port; a given port that is taken is a
    ``UsageError``. A run without a ``tb`` artifact is a ``NotFoundError`` naming it. Call
    ``handle.stop()`` to end it. ``end_with_thread`` (Linux) has TensorBoard killed when the
    calling thread ends, even when studio is killed with SIGKILL: for a command's main thread,
    not for a server's worker threads.
    """
    require_tensorboard()
    if not records:
        raise UsageError("name at least one run: studio tb EXP[@VERSION] [EXP...]")
    specs: dict[str, str] = {}
    for name, record in zip(run_names(records), records):
        if name not in specs:
            specs[name] = _materialise(store, record, name, cache)
    port = _port(port)
    folder = tempfile.mkdtemp(prefix="studio-tb-")
    spec = ",".join(f"{name}:{path}" for name, path in specs.items())
    command = [sys.executable, "-m", "tensorboard.main", "--logdir_spec", spec,
               "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "5"]
    with open(os.path.join(folder, "tensorboard.log"), "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True,
                                   preexec_fn=_death_signal() if end_with_thread else None)
    handle = TensorBoard(f"http://127.0.0.1:{port}/", process, folder)
    try:
        _wait_until_ready(handle)
    except BaseException:
        handle.stop()
        raise
    return handle.url, handle


def require_tensorboard() -> None:
    """``MissingDependencyError`` with the pip line when TensorBoard (the ``[tb]`` extra) is not installed."""
    try:
        found = importlib.util.find_spec("tensorboard") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingDependencyError(f"TensorBoard is not installed; run: {_HINT}")


def serve_until_stopped(handle: TensorBoard) -> None:
    """Wait while TensorBoard runs; Ctrl-C, SIGTERM or SIGHUP stop it and return.

    SIGINT is listened to even when the shell started studio in the background (which ignores
    it), and SIGTERM/SIGHUP become the same stop, so TensorBoard (in a session of its own) is
    never left running without studio. ``TensorBoardError`` when it ends by itself.
    """

    def stop_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        code = handle.wait()
    except KeyboardInterrupt:
        return
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        handle.stop()
    last = handle.last_words()
    raise TensorBoardError(f"TensorBoard ended on its own (exit code {code}){': ' + last if last else ''}")


def _materialise(store: Store, record: RunRecord, name: str, cache: BlobCache) -> str:
    """The run's ``tb`` artifact as a read-only folder in the blob cache."""
    art = record.artifacts.get(TB_TAG)
    if art is None or not art.digest:
        raise NotFoundError(f"{name} has no {TB_TAG!r} artifact (it logged nothing to fs_tracker.get_tensorboard_dir())")
    manifest = store.repo.get_manifest(art.restore_digest)
    path, _hit = cache.ensure(store.repo, art.restore_digest, manifest)
    if "," in path:
        raise UsageError(f"the blob cache path {path!r} holds a comma, which TensorBoard cannot take; move blobcache")
    return path


def _death_signal() -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when the starting thread ends (even by
    SIGKILL of studio), or None where there is no ``prctl``. Looked up before the fork: the child
    only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def in_child() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return in_child


def _port(port: Optional[int]) -> int:
    """The port to serve on: the one asked for if free, else 6006 if free, else any free one."""
    if port is not None:
        if not 0 < port < 65536:
            raise UsageError(f"--port must be between 1 and 65535, not {port}")
        if not _free(port):
            raise UsageError(f"port {port} on 127.0.0.1 is already in use; pick another with --port")
        return port
    if _free(DEFAULT_PORT):
        return DEFAULT_PORT
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_until_ready(handle: TensorBoard) -> None:
    """Poll TensorBoard until it answers; ``TensorBoardError`` with its last words if it ends first."""
    deadline = time.monotonic() + _START_WAIT
    while time.monotonic() < deadline:
        if not handle.running():
            raise TensorBoardError(f"TensorBoard stopped at start: {handle.last_words() or 'no output'}")
        try:
            with urllib.request.urlopen(handle.url + "data/logdir", timeout=10) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TensorBoardError(f"TensorBoard did not answer at {handle.url} within {_START_WAIT:.0f} s")
