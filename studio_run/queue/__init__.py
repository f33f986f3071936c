"""Queued runs and workers on Celery: ``studio run --queue``, ``studio worker``, ``studio queue``.

Celery (kombu underneath) carries the jobs; the run records in the store are the fence that keeps
one live execution per run. Its dependencies are the ``[queue]`` extra, imported lazily.
"""

__all__: list[str] = []
