"""Content-addressed, write-once objects and the manifests that list a snapshot's files.

``digest`` names content (BLAKE3), ``manifest`` describes one snapshot (validated on every read),
``packs`` bundles small objects, ``repository`` stores and reads all of them on any ``Storage``,
verifying every byte, and ``local`` adds what only a repository on local disk can do (imported
here so that ``Repository(LocalStorage(...))`` always builds a ``LocalRepository``). Nothing here
knows about runs or experiments.
"""

from . import local as _local  # noqa: F401  (registers LocalRepository for LocalStorage)

__all__: list[str] = []
