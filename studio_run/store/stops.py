"""Stop requests: a small key beside a run's record that says "stop this run".

``studio stop`` (or a web page, or a worker) may run on another machine than the run, so the
request travels through the store, the one thing every machine shares: an empty key
``experiments/<exp>/<run_id>.stop`` beside the record. The runner looks for it every few
seconds (one ``exists`` per look, cheap on every backend); a worker that receives a queued run
looks for it before starting. It is written once and never changed, so two machines asking at
once agree; it lives under the experiment's folder, so ``studio delete`` removes it with the
run, and it is not a ``.json`` key, so nothing reading records mistakes it for one.
"""

from __future__ import annotations

from ..storage.base import Storage
from .records import RecordStore

__all__ = ["clear_stop", "request_stop", "stop_key", "stop_requested"]


def stop_key(experiment: str, run_id: str) -> str:
    """The key of a run's stop request (beside ``RecordStore.record_key``)."""
    return RecordStore.record_key(experiment, run_id)[: -len(".json")] + ".stop"


def request_stop(storage: Storage, experiment: str, run_id: str) -> None:
    """Ask the run to stop (idempotent: asking twice is asking once)."""
    try:
        storage.write_bytes(stop_key(experiment, run_id), b"", exclusive=True)
    except FileExistsError:
        pass


def stop_requested(storage: Storage, experiment: str, run_id: str) -> bool:
    """Whether someone asked the run to stop."""
    return storage.exists(stop_key(experiment, run_id))


def clear_stop(storage: Storage, experiment: str, run_id: str) -> None:
    """Withdraw a stop request (a run submitted again under the same id; tests)."""
    try:
        storage.delete(stop_key(experiment, run_id))
    except FileNotFoundError:
        pass
