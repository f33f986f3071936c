"""One run of a training script: the request, its inputs, the child process, the captures.

``request`` holds what was asked (JSON-ready, to travel between machines); ``prepare`` checks
it, snapshots the inputs, resolves the reuses and writes the first record; ``execute``
materialises the reuses, runs the script and finishes the record (``run`` is both, here).
``capturer`` snapshots continuous artifacts in the background, ``child`` runs the script with
output tee in its own process group, ``watchdog`` ends that group if studio dies, ``terminal``
gives it the keyboard, ``signals`` passes stop signals to it and guards the final capture,
``stopwatch`` ends it on ``--max-duration`` or a stop request, ``stop`` is ``studio stop`` for
any caller, ``sweep`` runs a ``-hp`` grid here, and ``environment`` gathers facts for the record.
"""

__all__: list[str] = []
