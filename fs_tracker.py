"""What a training script imports to find its artifacts: ``import fs_tracker``.

Every call answers from the hand-off file the runner writes (``STUDIO_HANDOFF``), so a script
works unchanged whether it runs locally or on a worker, and importing this module costs nothing:
no click, rich or cloud SDK is imported.

    weights = fs_tracker.get_artifact("weights")   # a local folder path for any tag

Files the script produces at moments only it knows go through the upload API, which copies
the file once and returns at once; studio delivers it in the background::

    fs_tracker.upload_file("checkpoints/ep3.pt", "out/ep3.pt")
    fs_tracker.link("checkpoints/ep3.pt", "checkpoints/latest.pt")
    fs_tracker.flush(timeout=600)   # optional: wait, raise UploadError on failure

The upload machinery lives in ``studio_run.uploads`` and is imported on the first call.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

__all__ = [
    "ArtifactNotFound",
    "NotUnderStudio",
    "flush",
    "get_artifact",
    "get_artifacts",
    "get_experiment_key",
    "get_hyperparameters",
    "get_model_directory",
    "get_run_id",
    "get_tensorboard_dir",
    "init",
    "link",
    "upload_file",
]

_cache: dict[str, object] = {}


class NotUnderStudio(RuntimeError):
    """Raised when the script was not started by ``studio run``."""


class ArtifactNotFound(LookupError):
    """Raised for a tag the run does not have; the message lists the tags it has."""


def _handoff():  # type: ignore[no-untyped-def]
    path = os.environ.get("STUDIO_HANDOFF")
    cached = _cache.get("handoff")
    if cached is not None and _cache.get("path") == path:
        return cached
    from studio_run.handoff import read_handoff

    handoff = read_handoff()
    if handoff is None:
        raise NotUnderStudio(
            "fs_tracker needs the script to run under `studio run` (STUDIO_HANDOFF is not set); "
            "e.g. studio run --capture=out:weights train.py"
        )
    _cache.update(handoff=handoff, path=path)
    return handoff


def get_artifacts() -> dict[str, str]:
    """Every tag of this run mapped to its local path."""
    return dict(_handoff().artifacts)


def get_artifact(tag: str, default: Optional[str] = None) -> str:
    """The local path of artifact ``tag`` (captured, captured-once, reused or default).

    Outside ``studio run`` this returns ``default`` when one is given (so a script also runs
    by hand: ``get_artifact("data", default="./data")``), else raises ``NotUnderStudio``.
    Under ``studio run`` a tag the run does not have raises ``ArtifactNotFound`` either way.
    """
    try:
        artifacts = _handoff().artifacts
    except NotUnderStudio:
        if default is None:
            raise
        return default
    try:
        return artifacts[tag]
    except KeyError:
        known = ", ".join(sorted(artifacts))
        raise ArtifactNotFound(f"this run has no artifact {tag!r}; its tags are: {known}") from None


def get_model_directory() -> str:
    """The ``modeldir`` artifact: a folder for checkpoints, captured continuously."""
    return get_artifact("modeldir")


def get_tensorboard_dir() -> str:
    """The ``tb`` artifact: a folder for TensorBoard logs, captured continuously."""
    return get_artifact("tb")


def get_experiment_key() -> str:
    """The experiment's name."""
    return str(_handoff().experiment)


def get_hyperparameters() -> dict[str, Any]:
    """This run's hyper-parameters (``studio run -hp NAME=RANGE``), e.g. ``{"lr": 0.01}``.

    The same values reach the script as ``--NAME VALUE`` arguments; this is for scripts that
    would rather not parse them. Outside ``studio run``, and for a run without ``-hp``, ``{}``.
    """
    try:
        return dict(_handoff().hyperparameters)
    except NotUnderStudio:
        return {}


def get_run_id() -> Optional[str]:
    """This run's id (unique across machines; sorts by start time)."""
    return str(_handoff().run_id)


def upload_file(remote_name: str, local_path: str, *, overwrite: bool = True) -> str:
    """Hand the file at ``local_path`` to studio as ``remote_name`` and return at once.

    The file is copied once (cloned where the filesystem can) before this returns, so the
    caller may overwrite or delete it right away: the upload carries the content as it was
    now. ``remote_name`` may use ``{experiment}``, ``{run}`` and ``{rank}``; the expanded name
    is returned. Uploading a name again replaces it (the latest call wins); with
    ``overwrite=False`` a name already uploaded or pending raises ``FileExistsError``.
    Failures of earlier uploads raise ``studio_run.errors.UploadError`` here (this call then
    does nothing) or at ``flush``.
    """
    api = _uploads()
    try:
        return str(api.upload_file(remote_name, local_path, overwrite=overwrite))
    except api.NoUploadTarget as exc:
        raise NotUnderStudio(str(exc)) from None


def link(target: str, name: str, *, overwrite: bool = True) -> str:
    """Make ``name`` read as the uploaded file ``target`` (like ``ln -s target name``)."""
    api = _uploads()
    try:
        return str(api.link(target, name, overwrite=overwrite))
    except api.NoUploadTarget as exc:
        raise NotUnderStudio(str(exc)) from None


def flush(timeout: Optional[float] = None) -> None:
    """Wait until every file handed over so far is delivered; raise ``UploadError`` on failures
    and ``TimeoutError`` when ``timeout`` seconds pass first."""
    _uploads().flush(timeout)


def init(
    store: Optional[str] = None,
    experiment: Optional[str] = None,
    *,
    destinations: Optional[Sequence[Any]] = None,
    policy: Optional[str] = None,
    queue_size: Any = None,
    wait: Any = None,
) -> None:
    """Say where uploads go: needed outside ``studio run`` (or set ``STUDIO_EXPERIMENT``).

    ``store`` is a store URL (default: the configured store), ``experiment`` the experiment
    the files are recorded under. ``destinations`` lists ``Destination`` objects and/or
    ``"store"`` (e.g. ``["store", WandbDestination(project="p")]``). ``policy`` (``"block"``
    or ``"latest"``), ``queue_size`` (``"2GiB"``) and ``wait`` (``"10m"``) override the config.
    """
    _uploads().init(store, experiment, destinations=destinations, policy=policy,
                    queue_size=queue_size, wait=wait)


def _uploads():  # type: ignore[no-untyped-def]
    from studio_run.uploads import api

    return api
