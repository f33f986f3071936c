"""The TensorBoard button: TensorBoard (the ``[tb]`` extra) over the ``tb`` artifacts of the runs
picked on the Runs or Compare page, on 127.0.0.1, linked from the page, stopped with the UI.

One TensorBoard at a time: a new pick replaces the one running. Starting and stopping are the
integration's (``integrations.tensorboard``, the same as ``studio tb``); this module only holds
the handle and answers the POST (CSRF-checked like every action).
"""

from __future__ import annotations

import threading
from typing import Optional

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import StudioError
from ..integrations.tensorboard import TensorBoard, start_tensorboard
from ..snapshots.blobcache import BlobCache
from .actions import checked_form, done
from .context import context_of, record_of

__all__ = ["TensorBoards", "tensorboard_action", "tensorboards_of"]

_MAX_RUNS = 20


class TensorBoards:
    """The one TensorBoard this server started, if any (replaced by the next, stopped at exit)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.handle: Optional[TensorBoard] = None
        self.names: list[str] = []

    def replace(self, handle: TensorBoard, names: list[str]) -> None:
        """Keep ``handle``, stopping the one it replaces."""
        with self._lock:
            old, self.handle, self.names = self.handle, handle, names
        if old is not None:
            old.stop()

    def url(self) -> Optional[str]:
        """The running TensorBoard's address, or None."""
        handle = self.handle
        return handle.url if handle is not None and handle.running() else None

    def stop(self) -> None:
        """Stop the running TensorBoard (at server shutdown)."""
        with self._lock:
            handle, self.handle = self.handle, None
        if handle is not None:
            handle.stop()


def _start(request: Request, names: list[str]) -> str:
    context = context_of(request)
    records = []
    for name in names:
        experiment, _slash, run_id = name.partition("/")
        records.append(record_of(context, experiment, run_id))
    try:
        _url, handle = start_tensorboard(context.store, records, cache=BlobCache(context.store.config.blobcache))
    except StudioError as exc:
        raise HTTPException(409, str(exc)) from None
    tensorboards_of(request).replace(handle, [f"{r.experiment} v{r.version}" for r in records])
    return handle.url


def tensorboards_of(request: Request) -> TensorBoards:
    """The server's TensorBoard holder (kept in ``app.state``)."""
    return request.app.state.tensorboards  # type: ignore[no-any-return]


async def tensorboard_action(request: Request) -> Response:
    """POST ``/tensorboard`` with ``run=EXP/RUN_ID`` fields: start TensorBoard, then go to it."""
    context = context_of(request)
    form = await checked_form(request, context.guard)
    names = form.get("run", [])
    if not 1 <= len(names) <= _MAX_RUNS:
        raise HTTPException(400, f"pick 1 to {_MAX_RUNS} runs with a tb artifact")
    url = await run_in_threadpool(_start, request, names)
    return done(request, url)
