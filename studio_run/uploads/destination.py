"""The one interface every upload destination implements: five methods and one question.

A destination receives files the training code handed to ``fs_tracker.upload_file`` and names
the training code gave them. The uploader (``studio_run.uploads.uploader``) calls it from its
worker threads and keeps these promises, so that a destination stays small:

- ``path`` is a private, read-only copy (``copies``) that holds the content as it was when the
  script called ``upload_file``. It stays in place until the call returns and is removed
  afterwards: a destination that needs the bytes later must copy or hard-link them.
- Calls for one name never overlap and arrive in the order the script made them, so the last
  call for a name is its latest version. Calls for different names may run at once, on
  different threads: shared state needs a lock.
- ``link(target, name)`` comes after the ``upload_file`` (or ``link``) of ``target``; ``remove(name)``
  comes after every earlier call for ``name``.
- An exception fails that one file. ``StoreUnreachableError``, ``ConnectionError`` and
  ``TimeoutError`` are transient and retried; anything else is final and reaches the script
  at its next ``upload_file``/``flush`` and at exit. Map an SDK's errors to
  ``StoreAuthError``/``StorePermissionError``/``FileNotFoundError``/``StoreUnreachableError``
  (``studio_run.errors``) so that scripts can tell them apart.
- No loops: files for which ``owns(path)`` is true are never sent to this destination, and a
  ``upload_file`` made from inside one of its own calls (say, a destination that uploads its
  log) goes to every destination except this one.

A minimal destination, writing into a folder::

    class FolderDestination(Destination):
        label = "folder"

        def __init__(self, root):
            self.root = root

        def upload_file(self, name, path):
            dest = os.path.join(self.root, name)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(path, dest + ".tmp")
            os.replace(dest + ".tmp", dest)

        def link(self, target, name):
            self.upload_file(name, os.path.join(self.root, target))
"""

from __future__ import annotations

import abc
from typing import Optional

__all__ = ["Destination"]


class Destination(abc.ABC):
    """Where uploaded files go. Subclasses implement ``upload_file``; the rest has defaults."""

    #: Short name used in messages (``upload of ckpt.pt to wandb failed: ...``).
    label: str = "destination"

    @abc.abstractmethod
    def upload_file(self, name: str, path: str) -> None:
        """Deliver the file at ``path`` under ``name``, replacing any earlier version of ``name``."""

    def link(self, target: str, name: str) -> None:
        """Make ``name`` read as the file ``target`` (a symlink, a reference or a copy).

        The default refuses, and the uploader reports the link as undelivered for this
        destination: override it where the destination can point one name at another.
        """
        raise NotImplementedError(f"the {self.label} destination does not support links")

    def remove(self, name: str) -> None:
        """Forget ``name`` (a file or a link), as ``rm`` would; links that read as it get their own call.

        The default keeps it: a destination that keeps every version (W&B) ignores removals,
        which only say that the script no longer needs the name (an old top-k checkpoint).
        """

    def flush(self, timeout: Optional[float] = None) -> None:
        """Make everything delivered so far durable and visible; called when the queue drains."""

    def close(self) -> None:
        """Flush and release resources; called once, at exit or ``fs_tracker.init`` again."""

    def owns(self, path: str) -> bool:
        """Whether ``path`` is a file this destination produces itself (never sent back to it)."""
        return False
