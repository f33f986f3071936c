"""The process-wide uploader behind ``fs_tracker.upload_file``, ``link``, ``flush`` and ``init``.

One ``Uploader`` per process, created on first use from whatever tells this process where files
go, in this order:

1. ``init(...)`` called by the script: a store URL (or the configured store) and an experiment
   name, and optionally other destinations;
2. the ``studio run`` hand-off (``STUDIO_HANDOFF``): the run's store, experiment and run id;
   the runner publishes the files in the run's record when the script ends;
3. the environment: ``STUDIO_EXPERIMENT`` (and ``STUDIO_STORE``, else the configured store).

Outside ``studio run`` each process that uploads creates a run of its experiment and writes
its record itself. At interpreter exit the uploader waits for pending uploads up to
``upload_wait`` (with a progress bar on a terminal), then reports every file it could not
deliver; outside ``studio run`` it then ends the process with exit code 1 (``os._exit``: an
``atexit`` handler has no other way to change the exit code), under ``studio run`` the runner
reports them and exits 1.

A forked child (a data loader worker) starts with no uploader and makes its own on first use.
"""

from __future__ import annotations

import atexit
import os
import secrets
import sys
import threading
import time
from dataclasses import replace
from typing import Optional, Sequence, Union

from ..errors import UploadError, UsageError
from ..origin import current_origin
from .destination import Destination
from .staging import rank
from .uploader import Uploader

__all__ = ["NoUploadTarget", "current", "flush", "init", "link", "shutdown", "upload_file"]

DestinationSpec = Union[Destination, str]

_lock = threading.RLock()
_state: dict[str, object] = {}


class NoUploadTarget(UsageError):
    """Nothing says where uploads go: not under ``studio run``, no ``init``, no ``STUDIO_EXPERIMENT``."""


def init(
    store: Optional[str] = None,
    experiment: Optional[str] = None,
    *,
    destinations: Optional[Sequence[DestinationSpec]] = None,
    policy: Optional[str] = None,
    queue_size: Union[int, str, None] = None,
    wait: Union[float, str, None] = None,
    workers: int = 4,
) -> Uploader:
    """Set where this process's uploads go, replacing any earlier set-up (which is flushed first).

    ``destinations`` lists ``Destination`` objects and/or ``"store"`` (studio's store, the
    default). Under ``studio run`` with no ``store``/``experiment`` the run's own store and
    experiment are used. ``policy``, ``queue_size`` and ``wait`` override ``upload_policy``,
    ``upload_queue_size`` and ``upload_wait`` from the config.
    """
    with _lock:
        previous = _state.pop("uploader", None)
        if isinstance(previous, Uploader) and _state.get("pid") == os.getpid():
            undelivered = previous.close(_state.get("wait"))  # type: ignore[arg-type]
            if undelivered:
                raise UploadError(
                    f"{len(undelivered)} earlier upload(s) were not delivered: {', '.join(undelivered)}",
                    {n: UploadError(why) for n, why in undelivered.items()},
                )
        uploader = _create(store, experiment, destinations, policy, queue_size, wait, workers)
        return uploader


def current() -> Uploader:
    """This process's uploader, created on first use from the hand-off or the environment."""
    with _lock:
        uploader = _state.get("uploader")
        if isinstance(uploader, Uploader) and _state.get("pid") == os.getpid():
            return uploader
        return _create(None, None, None, None, None, None, 4)


def upload_file(name: str, path: str, *, overwrite: bool = True) -> str:
    """See ``fs_tracker.upload_file``."""
    return current().upload_file(name, path, overwrite=overwrite)


def link(target: str, name: str, *, overwrite: bool = True) -> str:
    """See ``fs_tracker.link``."""
    return current().link(target, name, overwrite=overwrite)


def flush(timeout: Optional[float] = None) -> None:
    """See ``fs_tracker.flush``."""
    with _lock:
        uploader = _state.get("uploader")
    if isinstance(uploader, Uploader) and _state.get("pid") == os.getpid():
        uploader.flush(timeout)


def shutdown(wait: Optional[float] = None, *, report: bool = True) -> dict[str, str]:
    """Wait for pending uploads (up to ``wait``, default ``upload_wait``), close, and return the
    undelivered names with why. Runs at interpreter exit; safe to call more than once."""
    from .. import console

    with _lock:
        uploader = _state.pop("uploader", None)
        mine = _state.get("pid") == os.getpid()
        bound = _state.get("wait") if wait is None else wait
    if not isinstance(uploader, Uploader) or not mine:
        return {}
    done, left = uploader.pending_bytes()
    if left and report:
        console.info(f"waiting up to {bound:.0f} s for uploads ({console.format_size(left)} to send)")
    try:
        with console.progress("uploading files", left or None) as advance:
            undelivered = uploader.close(bound, advance)  # type: ignore[arg-type]
    except RuntimeError:  # no new threads at interpreter shutdown (Python 3.12+): no bar then
        undelivered = uploader.close(bound)  # type: ignore[arg-type]
    if not _state.get("under_run"):
        import shutil

        shutil.rmtree(str(_state.get("proc_dir")), ignore_errors=True)
    if undelivered and report and not _state.get("under_run"):
        for name, why in undelivered.items():
            console.warn(f"file not delivered: {name} ({why})")
    return undelivered


def _at_exit() -> None:
    undelivered = shutdown()
    if undelivered and not _state.get("under_run") and _state.get("exit_on_failure", True):
        from .. import console

        console.info(f"{len(undelivered)} file(s) could not be delivered; exiting with code 1")
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        if "logging" in sys.modules:
            sys.modules["logging"].shutdown()
        os._exit(1)


def _forget_after_fork() -> None:
    global _lock
    _lock = threading.RLock()
    _state.pop("uploader", None)


def _create(
    store: Optional[str],
    experiment: Optional[str],
    destinations: Optional[Sequence[DestinationSpec]],
    policy: Optional[str],
    queue_size: Union[int, str, None],
    wait: Union[float, str, None],
    workers: int,
) -> Uploader:
    from ..config import load_config, parse_duration, parse_size
    from ..handoff import read_handoff

    handoff = read_handoff() if store is None and experiment is None else None
    if handoff is not None:
        settings = dict(handoff.upload)
        config = load_config(settings.get("config") or None, store=settings.get("store") or handoff.store)
        config = replace(
            config,
            store_options=dict(settings.get("store_options", config.store_options)),
            upload_wait=float(settings.get("wait", config.upload_wait)),
            upload_queue_size=int(settings.get("queue_size", config.upload_queue_size)),
            upload_policy=str(settings.get("policy", config.upload_policy)),
            fsync=bool(settings.get("fsync", config.fsync)),
        )
        experiment, run_id = handoff.experiment, handoff.run_id
        proc_dir = os.path.join(handoff.run_dir, "uploads", f"{os.getpid()}-{secrets.token_hex(3)}")
    else:
        experiment = experiment or os.environ.get("STUDIO_EXPERIMENT")
        if not experiment:
            raise NoUploadTarget(
                "uploads need to know where files go: run the script with `studio run`, call "
                "fs_tracker.init(store=URL, experiment=NAME), or set STUDIO_EXPERIMENT (and STUDIO_STORE)"
            )
        from ..refs import check_experiment_name
        from ..store.records import new_run_id

        check_experiment_name(experiment)
        config = load_config(store=store)
        run_id = new_run_id()
        proc_dir = os.path.join(config.home, "uploads", f"{os.getpid()}-{secrets.token_hex(3)}")
    if policy is not None:
        config = replace(config, upload_policy=policy)
    if queue_size is not None:
        config = replace(config, upload_queue_size=parse_size(queue_size, "queue_size"))
    if wait is not None:
        config = replace(config, upload_wait=parse_duration(wait, "wait"))

    os.makedirs(proc_dir, exist_ok=True)
    specs = list(destinations) if destinations is not None else ["store"]
    built: list[Destination] = []
    for spec in specs:
        if isinstance(spec, Destination):
            built.append(spec)
        elif spec == "store":
            built.append(_store_destination(config, experiment, run_id, proc_dir, handoff is not None))
        else:
            raise UsageError(f"unknown destination {spec!r}: pass a Destination object or 'store'")
    uploader = Uploader(
        built,
        os.path.join(proc_dir, "staging"),
        values={"experiment": experiment, "run": run_id, "rank": rank()},
        queue_bytes=config.upload_queue_size,
        policy=config.upload_policy,
        workers=workers,
        status_path=os.path.join(proc_dir, "status.json") if handoff is not None else None,
    )
    _state.update(uploader=uploader, pid=os.getpid(), wait=config.upload_wait, under_run=handoff is not None,
                  proc_dir=proc_dir)
    if not _state.get("registered"):
        atexit.register(_at_exit)
        os.register_at_fork(after_in_child=_forget_after_fork)
        _state["registered"] = True
    return uploader


def _store_destination(config, experiment: str, run_id: str, proc_dir: str, under_run: bool):  # type: ignore[no-untyped-def]
    from ..store.open import open_store
    from .store_destination import StoreDestination

    store = open_store(config)
    if under_run:
        return StoreDestination(store, pointer_path=os.path.join(proc_dir, "files.json"), close_store=True)
    return StoreDestination(store, record=_new_record(experiment, run_id), close_store=True)


def _new_record(experiment: str, run_id: str):  # type: ignore[no-untyped-def]
    from ..store.records import RunRecord

    origin = current_origin()
    script = sys.argv[0] if sys.argv and sys.argv[0] else ""
    return RunRecord(
        experiment=experiment,
        run_id=run_id,
        started_at=time.time(),
        command=["python"] + list(sys.argv),
        script=os.path.basename(script),
        host=origin.host,
        user=origin.user,
        python=origin.python,
    )
