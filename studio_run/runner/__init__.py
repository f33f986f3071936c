"""One run of a training script: the request, its inputs, the child process, the captures.

``request`` holds what was asked, ``execute`` carries it out (inputs, child, final capture,
record), ``capturer`` snapshots continuous artifacts in the background, ``child`` runs the
script with output tee and signal forwarding, ``environment`` gathers facts for the record.
"""

__all__: list[str] = []
