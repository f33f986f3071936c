"""PyTorch Lightning: every checkpoint the Trainer writes becomes part of the run's ``files``.

    from studio_run.integrations.lightning import StudioCheckpointIO, studio_callbacks, studio_logger
    trainer = L.Trainer(plugins=[StudioCheckpointIO()], callbacks=studio_callbacks(), logger=studio_logger())

Why a ``CheckpointIO`` plugin and not only a callback: a callback sees checkpoints through hooks
that miss some of them (``last.ckpt`` is written after the epoch hooks, the final one at
``on_train_end``), while every file the Trainer writes or deletes goes through the strategy's
``CheckpointIO``. So the plugin saves as Lightning does and hands the file to
``fs_tracker.upload_file`` under the framework's own file name (relative to the run's
``modeldir`` when it lies there, else its base name), links ``latest`` to it, and turns
``remove_checkpoint`` (top-k rotation) into a removal of the name. The callback from
``studio_callbacks`` keeps ``best`` (and a ``save_last="link"`` symlink) pointing at the right
uploaded name; its ``ModelCheckpoint`` writes into ``modeldir`` by default.

Outside ``studio run`` (and without ``fs_tracker.init``) the plugin warns once and saves to disk
only, so the same script runs under plain ``python train.py``.

Lightning is imported on first use of a class (module ``__getattr__``): importing this module
costs nothing, and without Lightning the error says what to install.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Optional

import fs_tracker

from ..uploads import api

__all__ = ["StudioCheckpointIO", "StudioLinks", "studio_callbacks", "studio_logger"]

# Built on first access by ``__getattr__`` (annotations only: no attribute until then).
StudioCheckpointIO: type
StudioLinks: type

_HINT = "pip install 'studio-run[lightning]'"
_built: dict[str, Any] = {}


def _lightning() -> Any:
    """``lightning.pytorch`` (or the older ``pytorch_lightning``), with the pip line when neither is there."""
    try:
        import lightning.pytorch as pl

        return pl
    except ImportError:
        pass
    try:
        import pytorch_lightning as pl  # type: ignore[import-not-found,no-redef]

        return pl
    except ImportError:
        raise ImportError(f"the Lightning integration needs PyTorch Lightning; run: {_HINT}") from None


def _modeldir() -> Optional[str]:
    """The run's ``modeldir`` under ``studio run``, else None."""
    try:
        return fs_tracker.get_artifact("modeldir")
    except (fs_tracker.NotUnderStudio, fs_tracker.ArtifactNotFound):
        return None


def _build_checkpoint_io() -> type:
    pl = _lightning()
    base: Any = pl.plugins.TorchCheckpointIO  # lightning.pytorch.plugins and pytorch_lightning.plugins alike

    class StudioCheckpointIO(base):  # type: ignore[misc,valid-type]
        """Lightning's ``TorchCheckpointIO`` that also uploads every checkpoint it writes.

        ``root`` is the folder names are taken relative to (default: the run's ``modeldir``);
        a checkpoint outside it is named by its base name. ``prefix`` goes before every name
        (``"checkpoints/"``). ``latest`` is linked to the newest checkpoint written.
        """

        def __init__(self, root: Optional[str] = None, prefix: str = "", latest: Optional[str] = "latest") -> None:
            super().__init__()
            self.root = root
            self.prefix = prefix
            self.latest = latest
            self.uploaded: set[str] = set()  # names handed to studio and not removed since
            self.links: dict[str, str] = {}  # link name -> the uploaded name it reads as
            self.enabled = True

        def name_of(self, path: Any) -> str:
            """The remote name of a local checkpoint path."""
            path = os.path.abspath(os.fspath(path))
            root = self.root if self.root is not None else _modeldir()
            if root is not None:
                root = os.path.abspath(root)
                if path.startswith(root + os.sep):
                    return self.prefix + os.path.relpath(path, root).replace(os.sep, "/")
            return self.prefix + os.path.basename(path)

        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
            super().save_checkpoint(checkpoint, path, storage_options)
            if not self.enabled or not os.path.isfile(path):  # a folder (sharded) is left to capture
                return
            name = self.name_of(path)
            try:
                fs_tracker.upload_file(name, os.fspath(path))
            except fs_tracker.NotUnderStudio as exc:
                self.enabled = False
                warnings.warn(f"studio: checkpoints stay on disk only ({exc})", stacklevel=2)
                return
            self.uploaded.add(name)
            if self.latest:
                self.link(name, self.latest)

        def remove_checkpoint(self, path: Any) -> None:
            super().remove_checkpoint(path)
            name = self.name_of(path)
            if name in self.uploaded or name in self.links:
                for gone in api.remove(name):  # the links that read as it go too
                    self.uploaded.discard(gone)
                    self.links.pop(gone, None)

        def link(self, target: str, name: str) -> None:
            """Make ``name`` read as the uploaded ``target`` unless it already does."""
            if self.enabled and self.links.get(name) != target and name != target:
                fs_tracker.link(target, name)
                self.links[name] = target
                self.uploaded.discard(name)

    return StudioCheckpointIO


def _build_links() -> type:
    pl = _lightning()

    class StudioLinks(pl.Callback):  # type: ignore[misc,name-defined]
        """Links ``best`` to the best checkpoint's uploaded name, and mirrors ``save_last="link"``.

        ``ModelCheckpoint`` runs after every other callback in a hook, so this one catches up
        at the start of the next stage and once more when ``fit`` ends.
        """

        def __init__(self, best: str = "best") -> None:
            self.best = best

        def _sync(self, trainer: Any) -> None:
            io = _studio_io(trainer)
            callback = trainer.checkpoint_callback
            if io is None or callback is None or not trainer.is_global_zero:
                return
            best = getattr(callback, "best_model_path", "")
            if best and self.best and io.name_of(best) in io.uploaded:
                io.link(io.name_of(best), self.best)
            last = getattr(callback, "last_model_path", "")
            if last and os.path.islink(last):  # save_last="link": a symlink Lightning made itself
                target = os.path.join(os.path.dirname(last), os.readlink(last))
                if io.name_of(target) in io.uploaded:
                    io.link(io.name_of(target), io.name_of(last))

        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            if _studio_io(trainer) is None:
                warnings.warn("studio: StudioLinks needs Trainer(plugins=[StudioCheckpointIO()]) to link "
                              "checkpoints; without it nothing is uploaded", stacklevel=2)

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._sync(trainer)

        def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
            self._sync(trainer)

        def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
            self._sync(trainer)

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            self._sync(trainer)

    return StudioLinks


def _studio_io(trainer: Any) -> Any:
    """The trainer's ``StudioCheckpointIO`` (also inside a wrapper such as ``AsyncCheckpointIO``), or None."""
    cls = _built.get("StudioCheckpointIO")
    io = getattr(trainer.strategy, "checkpoint_io", None)
    for _hop in range(3):
        if cls is not None and isinstance(io, cls):
            return io
        io = getattr(io, "checkpoint_io", None)
    return None


_BUILDERS = {"StudioCheckpointIO": _build_checkpoint_io, "StudioLinks": _build_links}


def __getattr__(name: str) -> Any:
    if name in _BUILDERS:
        if name not in _built:
            _built[name] = _BUILDERS[name]()
        return _built[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def studio_callbacks(**checkpoint_kwargs: Any) -> list[Any]:
    """A ``ModelCheckpoint`` writing into the run's ``modeldir`` and ``StudioLinks``.

    ``checkpoint_kwargs`` go to ``ModelCheckpoint`` (``monitor``, ``save_top_k``, ...);
    ``dirpath`` defaults to ``modeldir`` (Lightning's own default outside ``studio run``) and
    ``save_last`` to True, so ``last.ckpt`` is there to resume from.
    """
    pl = _lightning()
    checkpoint_kwargs.setdefault("dirpath", _modeldir())
    checkpoint_kwargs.setdefault("save_last", True)
    return [pl.callbacks.ModelCheckpoint(**checkpoint_kwargs), __getattr__("StudioLinks")()]


def studio_logger(**kwargs: Any) -> Any:
    """A ``TensorBoardLogger`` writing straight into the run's ``tb`` folder (``studio tb`` shows it).

    Outside ``studio run`` it writes into ``./tb``. ``kwargs`` go to ``TensorBoardLogger``.
    """
    pl = _lightning()
    kwargs.setdefault("save_dir", fs_tracker.get_artifact("tb", default="tb"))
    kwargs.setdefault("name", "")
    kwargs.setdefault("version", "")
    return pl.loggers.TensorBoardLogger(**kwargs)
