"""A destination that logs each uploaded file as a Weights & Biases artifact (``pip install 'studio-run[wandb]'``).

The mapping, chosen to match what W&B users (and MosaicML Composer's W&B logger) expect: one
W&B artifact per remote name, its latest call logged as a new version, with the file at its
remote name inside the artifact. Artifact names allow letters, digits, ``-``, ``_`` and ``.``,
so ``checkpoints/ep3.pt`` is logged as artifact ``checkpoints-ep3.pt`` (the exact name is kept
in the artifact's metadata as ``studio_name``).

A link becomes a new version of the link name's artifact holding the target's content: the
copy W&B staged for the target when it is still there (always in offline mode), else a
reference to the target's logged entry (online), which W&B resolves without uploading again.

No loops: W&B writes files of its own (its run folder with logs and ``output.log``, its
staging and cache folders). ``owns`` claims all of them, so the uploader never sends them back
to W&B, even when the script hands one to ``fs_tracker.upload_file`` (studio's store still
gets it). And the uploader never routes an upload made from inside this destination back here.

Errors map to studio's: ``AuthenticationError`` -> ``StoreAuthError``, ``CommError`` ->
``StoreUnreachableError`` (retried), ``UsageError`` -> ``UsageError``.
"""

from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

from ..errors import StoreAuthError, StoreUnreachableError, UsageError
from .destination import Destination

__all__ = ["WandbDestination", "artifact_name"]

_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def artifact_name(name: str) -> str:
    """The W&B artifact name for a remote name: ``checkpoints/ep3.pt`` -> ``checkpoints-ep3.pt``."""
    return _BAD.sub("-", name).strip("-.")[:128] or "file"


class WandbDestination(Destination):
    """Logs files into a W&B run: ``run`` if given, else the active ``wandb.run``, else a new one.

    A run this destination started (with ``project``, ``entity`` and ``init_kwargs``) is
    finished by ``close``; a run the script started is left to the script.
    """

    label = "wandb"

    def __init__(
        self,
        run: Any = None,
        *,
        project: Optional[str] = None,
        entity: Optional[str] = None,
        artifact_type: str = "file",
        aliases: Sequence[str] = ("latest",),
        **init_kwargs: Any,
    ) -> None:
        try:
            import wandb
        except ImportError as exc:
            from ..errors import MissingDependencyError

            raise MissingDependencyError(
                "the W&B destination needs wandb; run: pip install 'studio-run[wandb]'"
            ) from exc
        self._wandb = wandb
        self._own_run = False
        if run is None:
            run = wandb.run
        if run is None:
            with _mapped():
                run = wandb.init(project=project, entity=entity, **init_kwargs)
            self._own_run = True
        self.run = run
        self.artifact_type = artifact_type
        self.aliases = list(aliases)
        self._lock = threading.Lock()
        self._logged: dict[str, Any] = {}  # name -> the artifact holding its latest version
        self._unwaited: list[Any] = []
        self._owned = _owned_roots(run)

    # -- Destination --------------------------------------------------------------------------
    def upload_file(self, name: str, path: str) -> None:
        artifact = self._artifact(name, {})
        with _mapped():
            artifact.add_file(path, name=name)  # W&B copies it into its staging folder
        self._log(name, artifact)

    def link(self, target: str, name: str) -> None:
        with self._lock:
            source = self._logged.get(target)
        if source is None:
            raise FileNotFoundError(f"cannot link {name!r}: {target!r} was not logged to W&B")
        entry = source.manifest.entries[target]
        artifact = self._artifact(name, {"studio_link": target})
        with _mapped():
            if entry.local_path and os.path.isfile(entry.local_path):
                artifact.add_file(entry.local_path, name=name)
            else:
                source.wait()
                artifact.add_reference(source.get_entry(target), name=name)
        self._log(name, artifact)

    def flush(self, timeout: Optional[float] = None) -> None:
        """Online: wait until W&B has committed every artifact logged so far. Offline: nothing
        to wait for (the run folder holds them until ``wandb sync``)."""
        with self._lock:
            pending, self._unwaited = self._unwaited, []
        if getattr(self.run, "offline", False):
            return
        with _mapped():
            for artifact in pending:
                artifact.wait(timeout=None if timeout is None else max(1, int(timeout)))

    def close(self) -> None:
        self.flush()
        if self._own_run:
            with _mapped():
                self.run.finish()

    def owns(self, path: str) -> bool:
        real = os.path.realpath(path)
        return any(real == root or real.startswith(root + os.sep) for root in self._owned)

    # -- helpers ------------------------------------------------------------------------------
    def _artifact(self, name: str, extra: dict[str, Any]) -> Any:
        metadata = {"studio_name": name, **extra}
        return self._wandb.Artifact(artifact_name(name), type=self.artifact_type, metadata=metadata)

    def _log(self, name: str, artifact: Any) -> None:
        with self._lock, _mapped():
            self.run.log_artifact(artifact, aliases=self.aliases)
            self._logged[name] = artifact
            self._unwaited.append(artifact)


def _owned_roots(run: Any) -> list[str]:
    """Folders W&B writes into: the run folder (or the whole ``wandb`` folder), staging, cache."""
    roots = []
    settings = getattr(run, "settings", None)
    for candidate in (getattr(settings, "wandb_dir", None), os.path.dirname(getattr(run, "dir", "") or "")):
        if candidate:
            roots.append(candidate)
    try:
        from wandb.sdk.artifacts.staging import get_staging_dir

        roots.append(get_staging_dir())
    except (ImportError, OSError):
        pass
    try:
        from wandb import env

        roots.append(env.get_cache_dir())
    except (ImportError, AttributeError, OSError):
        pass
    return sorted({os.path.realpath(str(r)) for r in roots})


@contextmanager
def _mapped() -> Iterator[None]:
    """W&B's errors as studio's, keeping the original as ``__cause__``."""
    from wandb import errors

    try:
        yield
    except errors.AuthenticationError as exc:
        raise StoreAuthError(f"W&B refused the credentials: {exc}") from exc
    except errors.CommError as exc:
        raise StoreUnreachableError(f"W&B could not be reached: {exc}") from exc
    except errors.UsageError as exc:
        raise UsageError(f"W&B: {exc}") from exc
