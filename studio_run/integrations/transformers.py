"""Hugging Face ``Trainer``: each checkpoint folder and the final model become part of the run's ``files``.

    from studio_run.integrations.transformers import StudioCallback
    trainer = transformers.Trainer(..., callbacks=[StudioCallback()])

What is uploaded, file by file (``fs_tracker.upload_file`` takes single files):

- each ``checkpoint-<step>/`` the Trainer saves, as ``checkpoints/<step>/<file>``;
- ``checkpoints/latest/<file>``: links to the newest checkpoint's files (and
  ``checkpoints/best/<file>`` to the best one's when the Trainer tracks a metric), so
  ``trainer.train(resume_from_checkpoint=prev + "/checkpoints/latest")`` resumes from a reused run;
- checkpoints the Trainer deleted (``save_total_limit``) are removed from the files too;
- when training ends, the model (and its tokenizer or processor) as ``final/<file>``.

Only the main process uploads. Outside ``studio run`` (and without ``fs_tracker.init``) the
callback warns once and does nothing, so the same script runs under plain ``python train.py``.
transformers is imported on first use of ``StudioCallback`` (module ``__getattr__``).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import Any, Iterator, Optional

import fs_tracker

from ..uploads import api

__all__ = ["StudioCallback"]

# Built on first access by ``__getattr__`` (an annotation only: no attribute until then).
StudioCallback: type

_HINT = "pip install 'studio-run[transformers]'"
_built: dict[str, Any] = {}


def _files(folder: str) -> Iterator[str]:
    """The files below ``folder``, as sorted relative posix paths."""
    found = []
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path):
                found.append(os.path.relpath(path, folder).replace(os.sep, "/"))
    return iter(sorted(found))


def _build_callback() -> type:
    try:
        from transformers import TrainerCallback
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
    except ImportError:
        raise ImportError(f"the Hugging Face integration needs transformers; run: {_HINT}") from None

    class StudioCallback(TrainerCallback):  # type: ignore[misc,valid-type]
        """Uploads every checkpoint folder the Trainer saves, links ``latest``/``best``, and the final model.

        ``prefix`` names the checkpoints' folder in the run's files (``checkpoints``);
        ``final`` the final model's (``None``: do not upload it).
        """

        def __init__(self, prefix: str = "checkpoints", final: Optional[str] = "final") -> None:
            self.prefix = prefix.strip("/")
            self.final = final.strip("/") if final else None
            self.steps: dict[int, list[str]] = {}  # uploaded step -> its files (relative)
            self.pointers: dict[str, set[str]] = {}  # "latest"/"best" -> the link names made
            self.enabled = True

        def _upload(self, name: str, path: str) -> bool:
            if not self.enabled:
                return False
            try:
                fs_tracker.upload_file(name, path)
            except fs_tracker.NotUnderStudio as exc:
                self.enabled = False
                warnings.warn(f"studio: checkpoints stay on disk only ({exc})", stacklevel=3)
                return False
            return True

        def _point(self, pointer: str, step: int) -> None:
            """Make ``<prefix>/<pointer>/<file>`` read as step ``step``'s files; drop names it no longer has."""
            files = self.steps[step]
            made = {f"{self.prefix}/{pointer}/{rel}" for rel in files}
            for rel in files:
                fs_tracker.link(f"{self.prefix}/{step}/{rel}", f"{self.prefix}/{pointer}/{rel}")
            for stale in sorted(self.pointers.get(pointer, set()) - made):
                api.remove(stale)
            self.pointers[pointer] = made

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero or not self.enabled:
                return
            folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
            if not os.path.isdir(folder):
                return
            files = list(_files(folder))
            for rel in files:
                if not self._upload(f"{self.prefix}/{state.global_step}/{rel}", os.path.join(folder, rel)):
                    return
            self.steps[state.global_step] = files
            self._point("latest", state.global_step)
            best = getattr(state, "best_model_checkpoint", None)
            if best:
                best_step = _step_of(best)
                if best_step in self.steps:
                    self._point("best", best_step)
            self._forget_rotated(args.output_dir)

        def _forget_rotated(self, output_dir: str) -> None:
            """Remove the files of checkpoints the Trainer deleted (``save_total_limit``)."""
            for step in sorted(self.steps):
                if os.path.isdir(os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")):
                    continue
                for rel in self.steps.pop(step):
                    for gone in api.remove(f"{self.prefix}/{step}/{rel}"):
                        for made in self.pointers.values():
                            made.discard(gone)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            model = kwargs.get("model")
            if not state.is_world_process_zero or not self.enabled or not self.final or model is None:
                return
            with tempfile.TemporaryDirectory(prefix="studio-final-") as tmp:
                model.save_pretrained(tmp)
                processor = kwargs.get("processing_class") or kwargs.get("tokenizer")
                if processor is not None and hasattr(processor, "save_pretrained"):
                    processor.save_pretrained(tmp)
                for rel in _files(tmp):  # each file is copied by upload_file before it returns
                    if not self._upload(f"{self.final}/{rel}", os.path.join(tmp, rel)):
                        return

    return StudioCallback


def _step_of(folder: str) -> int:
    """The step of a ``checkpoint-<step>`` folder, -1 when it is named otherwise."""
    tail = os.path.basename(os.path.normpath(folder)).rpartition("-")[2]
    return int(tail) if tail.isdigit() else -1


def __getattr__(name: str) -> Any:
    if name == "StudioCallback":
        if name not in _built:
            _built[name] = _build_callback()
        return _built[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
