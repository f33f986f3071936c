"""Content-addressed, write-once objects and the manifests that list a snapshot's files.

``digest`` names content (BLAKE3), ``manifest`` describes one snapshot (validated on every read),
``packs`` bundles small objects, ``repository`` stores and reads all of them on any ``Storage``,
verifying every byte. Nothing here knows about runs or experiments.
"""

__all__: list[str] = []
