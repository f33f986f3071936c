"""Folders to snapshots and back: the walk, the hashing and the restores.

``capture`` turns a folder into objects and a manifest (incrementally, through ``statcache``,
filtered by ``ignore``); ``restore`` writes a manifest back out, path-safe and verified;
``blobcache`` keeps read-only restored copies for ``--reuse``. This layer works on one
repository and knows nothing of records, remote stores or runs.
"""

__all__: list[str] = []
