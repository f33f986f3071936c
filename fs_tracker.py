"""What a training script imports to find its artifacts: ``import fs_tracker``.

Every call answers from the hand-off file the runner writes (``STUDIO_HANDOFF``), so a script
works unchanged whether it runs locally or on a worker, and importing this module costs nothing:
no click, rich or cloud SDK is imported.

    weights = fs_tracker.get_artifact("weights")   # a local folder path for any tag
"""

from __future__ import annotations

import os
from typing import Optional

__all__ = [
    "ArtifactNotFound",
    "NotUnderStudio",
    "get_artifact",
    "get_artifacts",
    "get_experiment_key",
    "get_model_directory",
    "get_run_id",
    "get_tensorboard_dir",
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


def get_artifact(tag: str) -> str:
    """The local path of artifact ``tag`` (captured, captured-once, reused or default)."""
    artifacts = _handoff().artifacts
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


def get_run_id() -> Optional[str]:
    """This run's id (unique across machines; sorts by start time)."""
    return str(_handoff().run_id)
