"""The two buttons that change something: Stop (a running or queued run, the same ``stop_run``
as ``studio stop``) and Delete (a run that has ended: its record and environment; content stays
until ``studio gc``).

Both are POSTs that must carry the page's CSRF token (form field ``csrf`` or header
``X-CSRF-Token``) and, when the browser sends one, an ``Origin`` of this server; the page asks
for a confirmation first (``hx-confirm``). The form body is read here (URL-encoded, small), so
no multipart library is needed.
"""

from __future__ import annotations

from typing import Optional
from urllib.parse import parse_qs, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..errors import StudioError
from ..runner.stop import stop_run
from ..store.records import TERMINAL, effective_status
from .context import Context, context_of, record_of
from .security import Guard

__all__ = ["checked_form", "delete_action", "done", "stop_action"]

_MAX_FORM = 16 * 1024


async def checked_form(request: Request, guard: Guard) -> dict[str, list[str]]:
    """The POST's form fields (each with its values), after the CSRF and Origin checks (403
    when either fails)."""
    body = await request.body()
    if len(body) > _MAX_FORM:
        raise HTTPException(413, "form too large")
    fields = parse_qs(body.decode("utf-8", "replace"))
    offered: Optional[str] = request.headers.get("x-csrf-token") or next(iter(fields.get("csrf", [])), None)
    if not guard.csrf_ok(offered):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
        raise HTTPException(403, "this action must come from the studio ui page itself")
    return fields


def done(request: Request, url: str) -> Response:
    """Where the browser goes next: htmx follows ``HX-Redirect``, a plain form a 303."""
    if request.headers.get("hx-request") == "true":
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def _stop(context: Context, experiment: str, run_id: str) -> str:
    record = record_of(context, experiment, run_id)
    if effective_status(record, context.hostname) not in ("running", "queued"):
        raise HTTPException(409, f"{experiment} version {record.version} is not running")
    try:
        message = stop_run(context.store, record, hostname=context.hostname)
    except StudioError as exc:
        raise HTTPException(409, str(exc)) from None
    context.fresh_index(force=True)
    return message


def _delete(context: Context, experiment: str, run_id: str) -> None:
    record = record_of(context, experiment, run_id)
    status = effective_status(record, context.hostname)
    if status not in TERMINAL and status != "lost":
        raise HTTPException(409, f"{experiment} version {record.version} is {status}: stop it before deleting it")
    try:
        context.store.records.delete_run(experiment, run_id)
    except StudioError as exc:
        raise HTTPException(409, str(exc)) from None
    context.fresh_index(force=True)


async def stop_action(request: Request) -> Response:
    """POST ``/runs/{experiment}/{run_id}/stop``: stop the run, then show its page again."""
    context = context_of(request)
    await checked_form(request, context.guard)
    experiment, run_id = request.path_params["experiment"], request.path_params["run_id"]
    await run_in_threadpool(_stop, context, experiment, run_id)
    return done(request, f"/runs/{experiment}/{run_id}")


async def delete_action(request: Request) -> Response:
    """POST ``/runs/{experiment}/{run_id}/delete``: delete the run's record, then go to the Runs page."""
    context = context_of(request)
    await checked_form(request, context.guard)
    experiment, run_id = request.path_params["experiment"], request.path_params["run_id"]
    await run_in_threadpool(_delete, context, experiment, run_id)
    return done(request, "/")
