"""What keeps a remote store's staged content from ``studio gc`` before a pending record refers to it.

A capture for a remote store writes its objects and manifest into the staging folder first and
only then makes its record pending (``studio_run.store.journal``); files a script hands to
``fs_tracker.upload_file`` are staged the same way and reach a record even later (the runner
publishes them when the script ends). ``studio gc`` prunes staged content no pending record
refers to (``studio_run.store.staging_gc``), so without this it could take what such a writer is
about to make pending, and the run would then be unpublishable. Two mechanisms, both local to
this machine (the staging folder is)::

    $STUDIOML_HOME/staging/<store id>/
        holds/.lock                        flock: shared while writing, exclusive while pruning
        holds/<exp>--<run>.<what>.json     manifests and objects a writer has staged, until pending

- The lock closes the instant of writing: a writer holds it shared from its first staged byte
  until its hold is written; gc holds it exclusive from listing the candidates to its last
  deletion, so gc never sees content that is staged but not yet held.
- A hold names what a writer staged (the manifests of a capture, or the files an upload
  destination has staged so far); gc keeps it as it keeps what a pending record refers to.
  The run's final ``publish`` removes its holds (the journal covers it from then on); an upload
  destination removes its own once the store has its manifest. Holds a killed run left behind
  are dropped by gc once the store holds what they name, or after ``STALE_AFTER``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from typing import Iterable, Iterator

from ..storage.local import LocalStorage

__all__ = ["Hold", "STALE_AFTER", "StagingHolds"]

STALE_AFTER = 7 * 86400.0  # seconds after which a hold nobody removed is taken as left by a killed run
_FOLDER = "holds"


class Hold:
    """One hold as read: its name, what it keeps, and when it was last written."""

    def __init__(self, name: str, manifests: list[str], objects: list[str], mtime: float) -> None:
        self.name, self.manifests, self.objects, self.mtime = name, manifests, objects, mtime


class StagingHolds:
    """The holds and the writers' lock of one staging folder."""

    def __init__(self, staging: LocalStorage) -> None:
        self.staging = staging
        self.folder = staging.path_of(_FOLDER)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Held (shared, by any number of writers) while staging content that no hold names yet."""
        fd = self._open_lock()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def pruning(self, timeout: float) -> Iterator[bool]:
        """Exclusive, for gc: yields False when writers kept it for ``timeout`` seconds."""
        fd = self._open_lock()
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.05)
            yield True
        finally:
            os.close(fd)

    def hold(self, name: str, manifests: Iterable[str] = (), objects: Iterable[str] = ()) -> None:
        """Write (or replace) hold ``name`` (``<exp>--<run>.<what>``), atomically."""
        doc = {"manifests": sorted(set(manifests)), "objects": sorted(set(objects))}
        self.staging.write_bytes(f"{_FOLDER}/{name}.json", json.dumps(doc).encode())

    def release(self, name: str) -> None:
        """Remove hold ``name`` (the journal or the store has what it named)."""
        try:
            self.staging.delete(f"{_FOLDER}/{name}.json")
        except FileNotFoundError:
            pass

    def release_run(self, entry: str) -> None:
        """Remove every hold of the run whose journal name is ``entry`` (its record is pending)."""
        for hold in self.read():
            if hold.name.startswith(entry + "."):
                self.release(hold.name)

    def read(self) -> list[Hold]:
        """Every hold. One that cannot be parsed raises ValueError: gc then prunes nothing."""
        try:
            files = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            return []
        holds = []
        for file in files:
            if not file.endswith(".json"):
                continue
            path = os.path.join(self.folder, file)
            try:
                mtime = os.stat(path).st_mtime
                with open(path, "rb") as f:
                    doc = json.load(f)
                holds.append(Hold(file[: -len(".json")], list(doc["manifests"]), list(doc["objects"]), mtime))
            except FileNotFoundError:
                continue  # released meanwhile
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"hold {file} cannot be read ({exc})") from exc
        return holds

    def _open_lock(self) -> int:
        os.makedirs(self.folder, exist_ok=True)
        return os.open(os.path.join(self.folder, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
