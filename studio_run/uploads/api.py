"""The process-wide uploader behind ``fs_tracker.upload_file``, ``link``, ``flush`` and ``init``
(and ``remove``, used by the framework integrations).

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
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Optional, Sequence, Union

from ..errors import TRANSIENT, UploadError, UsageError
from ..origin import current_origin
from .copies import rank
from .destination import Destination
from .uploader import Uploader

if TYPE_CHECKING:  # types only: importing them at run time would load the store for ``import fs_tracker``
    from ..config import Config

__all__ = ["NoUploadTarget", "current", "flush", "init", "link", "remove", "shutdown", "upload_file"]

DestinationSpec = Union[Destination, str]


@dataclass
class _Current:
    """This process's uploader and what its end needs to know."""

    uploader: Uploader
    pid: int  # the process that made it: a forked child makes its own
    wait: float  # ``upload_wait``: how long exit waits for pending uploads
    under_run: bool  # started by ``studio run`` (the runner reports and publishes)
    proc_dir: str  # this process's folder: its private copies, pointer and status


@dataclass(frozen=True)
class _Target:
    """Where this process's uploads go, from the hand-off, ``init`` or the environment."""

    config: Config
    experiment: str
    run_id: str
    proc_dir: str
    under_run: bool


_CONNECT_WAIT = 3.0  # seconds the first upload waits for a remote store to answer, as `studio run` does
_lock = threading.RLock()
_current: Optional[_Current] = None
_registered = False  # the exit and fork handlers, once per interpreter
_exit_on_failure = True  # at exit outside ``studio run``, end with code 1 if files were not delivered


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
    global _current
    with _lock:
        previous, _current = _mine(), None
        if previous is not None:
            undelivered = previous.uploader.close(previous.wait)
            if undelivered:
                raise UploadError(
                    f"{len(undelivered)} earlier upload(s) were not delivered: {', '.join(undelivered)}",
                    {n: UploadError(why) for n, why in undelivered.items()},
                )
        return _create(store, experiment, destinations, policy, queue_size, wait, workers)


def current() -> Uploader:
    """This process's uploader, created on first use from the hand-off or the environment."""
    with _lock:
        mine = _mine()
        if mine is not None:
            return mine.uploader
        return _create(None, None, None, None, None, None, 4)


def upload_file(name: str, path: str, *, overwrite: bool = True) -> str:
    """See ``fs_tracker.upload_file``."""
    return current().upload_file(name, path, overwrite=overwrite)


def link(target: str, name: str, *, overwrite: bool = True) -> str:
    """See ``fs_tracker.link``."""
    return current().link(target, name, overwrite=overwrite)


def remove(name: str) -> list[str]:
    """Remove an uploaded name, and the links that read as it, from this run's files (an old
    top-k checkpoint the framework deleted); returns the names removed. For integrations: not
    (yet) part of ``fs_tracker``."""
    return current().remove(name)


def flush(timeout: Optional[float] = None) -> None:
    """See ``fs_tracker.flush``."""
    with _lock:
        mine = _mine()
    if mine is not None:
        mine.uploader.flush(timeout)


def shutdown(wait: Optional[float] = None, *, report: bool = True) -> dict[str, str]:
    """Wait for pending uploads (up to ``wait``, default ``upload_wait``), close, and return the
    undelivered names with why. Runs at interpreter exit; safe to call more than once."""
    global _current
    with _lock:
        mine, _current = _mine(), None
    if mine is None:
        return {}
    return _close(mine, mine.wait if wait is None else wait, report)


def _mine() -> Optional[_Current]:
    """The uploader of this process (not one inherited through a fork), if any."""
    return _current if _current is not None and _current.pid == os.getpid() else None


def _close(mine: _Current, bound: float, report: bool) -> dict[str, str]:
    from .. import console

    done, left = mine.uploader.pending_bytes()
    if left and report:
        console.info(f"waiting up to {bound:.0f} s for uploads ({console.format_size(left)} to send)")
    try:
        with console.progress("uploading files", left or None) as advance:
            undelivered = mine.uploader.close(bound, advance)
    except RuntimeError:  # no new threads at interpreter shutdown (Python 3.12+): no bar then
        undelivered = mine.uploader.close(bound)
    if not mine.under_run:
        import shutil

        shutil.rmtree(mine.proc_dir, ignore_errors=True)
    if undelivered and report and not mine.under_run:
        for name, why in undelivered.items():
            console.warn(f"file not delivered: {name} ({why})")
    return undelivered


def _at_exit() -> None:
    with _lock:
        mine = _mine()
    undelivered = shutdown()
    if undelivered and mine is not None and not mine.under_run and _exit_on_failure:
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
    global _lock, _current
    _lock = threading.RLock()
    _current = None


def _create(
    store: Optional[str],
    experiment: Optional[str],
    destinations: Optional[Sequence[DestinationSpec]],
    policy: Optional[str],
    queue_size: Union[int, str, None],
    wait: Union[float, str, None],
    workers: int,
) -> Uploader:
    """Build this process's uploader (called with ``_lock`` held) and register the exit handler."""
    global _current, _registered
    target = _target(store, experiment)
    config = _overridden(target.config, policy, queue_size, wait)
    os.makedirs(target.proc_dir, exist_ok=True)
    specs = list(destinations) if destinations is not None else ["store"]
    uploader = Uploader(
        [_destination(spec, config, target) for spec in specs],
        os.path.join(target.proc_dir, "staging"),
        values={"experiment": target.experiment, "run": target.run_id, "rank": rank()},
        queue_bytes=config.upload_queue_size,
        policy=config.upload_policy,
        workers=workers,
        status_path=os.path.join(target.proc_dir, "status.json") if target.under_run else None,
    )
    _current = _Current(uploader, os.getpid(), config.upload_wait, target.under_run, target.proc_dir)
    if not _registered:
        atexit.register(_at_exit)
        os.register_at_fork(after_in_child=_forget_after_fork)
        _registered = True
    return uploader


def _target(store: Optional[str], experiment: Optional[str]) -> _Target:
    """Where uploads go: the ``studio run`` hand-off unless ``init`` named a store or experiment,
    else ``experiment`` or ``STUDIO_EXPERIMENT`` in a new run of the configured store."""
    from ..config import load_config
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
        proc_dir = os.path.join(handoff.run_dir, "uploads", f"{os.getpid()}-{secrets.token_hex(3)}")
        return _Target(config, handoff.experiment, handoff.run_id, proc_dir, under_run=True)
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
    proc_dir = os.path.join(config.home, "uploads", f"{os.getpid()}-{secrets.token_hex(3)}")
    return _Target(config, experiment, new_run_id(), proc_dir, under_run=False)


def _overridden(
    config: Config, policy: Optional[str], queue_size: Union[int, str, None], wait: Union[float, str, None]
) -> Config:
    """``config`` with what ``init`` was given in place of the configured upload settings."""
    from ..config import parse_duration, parse_size

    if policy is not None:
        config = replace(config, upload_policy=policy)
    if queue_size is not None:
        config = replace(config, upload_queue_size=parse_size(queue_size, "queue_size"))
    if wait is not None:
        config = replace(config, upload_wait=parse_duration(wait, "wait"))
    return config


def _destination(spec: DestinationSpec, config: Config, target: _Target) -> Destination:
    """A ``Destination`` as given, or studio's store for ``"store"``."""
    if isinstance(spec, Destination):
        return spec
    if spec == "store":
        return _store_destination(config, target)
    raise UsageError(f"unknown destination {spec!r}: pass a Destination object or 'store'")


def _store_destination(config: Config, target: _Target) -> Destination:
    from ..store.open import open_store
    from .store_destination import StoreDestination

    # A store that does not answer must not fail the call: its files wait in staging. One that
    # answers is opened now, while the script runs (an SDK cannot start at interpreter exit),
    # and one that refuses (credentials, permission) fails the call, as it always did.
    store = open_store(config, connect=False)
    try:
        store.connect(timeout=_CONNECT_WAIT)
    except TRANSIENT:
        pass
    if target.under_run:
        return StoreDestination(store, pointer_path=os.path.join(target.proc_dir, "files.json"), close_store=True,
                                run=(target.experiment, target.run_id))
    return StoreDestination(store, record=_new_record(target.experiment, target.run_id), close_store=True)


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
